"""The playground in a real browser: htmx updates in place, and the same page without JavaScript."""

from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser


def _log_in(page, client, user, base_url):
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "domain": urlparse(base_url).hostname, "path": "/"}])


def test_a_learner_classifies_a_review_and_then_a_batch_in_place(live_server, page, transactional_db, client,
                                                                  make_run, owner):
    run = make_run(owner)
    _log_in(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/playground/?run={run.pk}")
    assert page.locator("#id_target").input_value() == f"run-{run.pk}"

    page.fill("#id_text", "The strap broke after two days.")
    page.click("#classify")
    label = page.locator("#predicted-label")
    label.wait_for()
    assert label.inner_text() in ("positive", "negative", "neutral")
    assert page.locator("#probs tr").count() == 3
    assert "ms" in page.locator("#latency").inner_text()
    assert page.url.endswith(f"/playground/?run={run.pk}")  # updated in place by htmx, no navigation

    page.fill("#id_text", "Great.\nAwful.\nIt is a cable.")
    page.check("#id_per_line")
    page.click("#classify")
    page.locator("#batch-table").wait_for()
    assert page.locator("#batch-table tbody tr").count() == 3
    with page.expect_download() as download:
        page.click("#download-csv")
    content = open(download.value.path(), encoding="utf-8").read()
    assert content.splitlines()[0].startswith("text,label,p_positive")


def test_the_playground_works_without_javascript(live_server, browser, transactional_db, client, make_run, owner):
    run = make_run(owner)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        _log_in(page, client, owner, live_server.url)
        page.goto(f"{live_server.url}/playground/?run={run.pk}")
        page.fill("#id_text", "Works fine.")
        page.click("#classify")
        page.wait_for_url(f"{live_server.url}/playground/")  # a real form post, full page back
        assert page.locator("#predicted-label").inner_text() in ("positive", "negative", "neutral")
    finally:
        context.close()
