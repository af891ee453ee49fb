"""Diagnostics is reachable from the admin, and a ping job shows how long each hop took."""

import re

import pytest

from ops.models import PingJob
from ops.services import ping_record_step
from tests.conftest import log_in_browser
from tests.servers import daphne_server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_admin_links_to_diagnostics_and_a_ping_shows_its_timing(tmp_path, page, client, staff_user, screenshot):
    job = PingJob.objects.create(created_by=staff_user, steps=2)
    for step in (1, 2):  # what a worker writes; the page replays it from the database over its websocket
        ping_record_step(job=job, step=step, host="worker-1")
    with daphne_server(tmp_path) as address:
        base = f"http://{address}"
        log_in_browser(page, client, staff_user, base)
        page.goto(f"{base}/admin/")
        page.click("#admin-diagnostics")
        page.wait_for_url(f"{base}/ops/diagnostics/")
        screenshot(page, "ops-diagnostics")
        page.goto(f"{base}/ops/ping/{job.pk}/")
        items = page.locator("#ping-events li")
        items.nth(1).wait_for()
        assert re.search(r"step 2 / 2 on worker-1 · \d+ ms after queueing, \d+ ms to reach this browser",
                         items.nth(1).inner_text())
        assert re.search(r"First step \d+ ms after queueing", page.locator("#ping-summary").inner_text())
        screenshot(page, "ops-ping")
