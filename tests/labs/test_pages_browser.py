"""Labs pages in a real browser: the compare picker, the lab page's time facts, the results
page. Every test saves screenshots into var/screenshots/."""

import re

import pytest

from labs.models import Run
from tests.conftest import log_in_browser
from tests.labs.conftest import make_run

pytestmark = pytest.mark.browser


def test_compare_with_one_run_offers_a_picker(live_server, page, transactional_db, client, owner, other_user,
                                              screenshot):
    first = make_run(owner, status=Run.Status.SUCCEEDED, label="r=4")
    second = make_run(owner, status=Run.Status.SUCCEEDED, label="r=16")
    theirs = make_run(other_user, status=Run.Status.SUCCEEDED)
    log_in_browser(page, client, owner, live_server.url)
    response = page.goto(f"{live_server.url}/labs/compare/?ids={first.pk}")  # the README's own example shape
    assert response.status == 200
    assert f"compare with run {first.pk}" in page.locator("#compare-note").inner_text()
    assert page.locator(f"#pick-{first.pk}").is_checked()
    assert page.locator(f"#pick-{theirs.pk}").count() == 0  # only the learner's own runs
    screenshot(page, "labs-compare-picker")
    page.check(f"#pick-{second.pk}")
    page.click("#compare-submit")
    page.wait_for_url(re.compile(r"/labs/compare/\?id="))
    assert page.locator("#compare-picker").count() == 0
    assert "r=16" in page.locator("main").inner_text()
