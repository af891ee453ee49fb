"""The results page leads with the lab's answer (issue 25): this run against the prompting
baselines first, then curves, confusion matrix and per-class table, the predictions last and
closed. Measured from element boxes at desktop and phone widths."""

import pytest

from tests.conftest import log_in_browser
from tests.inference.test_results_browser import _realistic

pytestmark = pytest.mark.browser


def top(page, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["y"]


def test_the_results_page_leads_with_the_comparison_and_ends_with_the_predictions(
        live_server, page, transactional_db, client, make_run, owner, screenshot):
    from labs.events import event_append

    run = _realistic(make_run(owner))
    for step in range(1, 6):  # a loss curve to draw
        event_append(run_id=run.pk, type="step", notify=False, payload={"step": step, "total_steps": 5, "loss": 2 / step})
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")
    assert page.locator("#predictions-details").get_attribute("open") is None
    assert not page.locator("#predictions-table").is_visible()
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        order = [top(page, s) for s in ("#results-metrics", "#baselines-table", "#results-chart", "#confusion-matrix",
                                        "#per-class", "#predictions-details")]
        assert order == sorted(order), (width, order)
        assert top(page, "#baselines-table") < 3 * height, (width, order)  # not 10,000 px down
        hint = page.locator("#per-class-hint")
        assert hint.is_visible() == (width == 390)  # the zero-shot column scrolls into view on a phone
    # The standalone page does not link to itself; the stray space before the full stop is gone.
    assert page.locator("main a", has_text="Results page").count() == 0
    assert "base model." in page.locator("#run-baselines small").inner_text()
    screenshot(page, "polish-results")
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/?errors=1")  # asked for: shown open
    assert page.locator("#predictions-table").is_visible()
