"""What a first visit trips over on the labs pages (issue 25), checked in a real browser at
desktop and phone widths: boxes are measured, not eyeballed."""

import pytest

from labs.models import Run
from tests.conftest import log_in_browser
from tests.labs.test_launch import LAUNCH

pytestmark = pytest.mark.browser

SCREENS = {1280: 800, 390: 844}  # a laptop's and a phone's first screen (width: height)


def first_screen(page, width: int) -> int:
    page.set_viewport_size({"width": width, "height": SCREENS[width]})
    return SCREENS[width]


@pytest.mark.parametrize("width", SCREENS)
def test_a_refused_launch_shows_its_error_in_the_first_screen(live_server, page, transactional_db, client, owner,
                                                              labs, width, screenshot):
    height = first_screen(page, width)
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}{LAUNCH}")
    page.fill("#id_learning_rate", "0.5")
    page.click("#launch-submit")
    page.wait_for_load_state()
    summary = page.locator("#form-errors")
    assert "Learning rate must be a number in (0, 0.1]." in summary.inner_text()
    box = summary.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box  # seen without scrolling
    assert page.evaluate("document.activeElement.id") == "form-errors"
    assert not Run.objects.exists()
    page.click("#form-errors a")  # the summary leads to the field
    assert page.evaluate("document.activeElement.id") == "id_learning_rate"
    if width == 1280:
        screenshot(page, "polish-launch-error")


def test_launch_says_it_is_working_and_cannot_be_clicked_twice(live_server, page, transactional_db, client, owner, labs):
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}{LAUNCH}")
    # Stop the navigation after the page's own submit handler ran (as a slow first launch would hold it) to
    # read the button as the learner sees it while waiting.
    page.evaluate("document.getElementById('launch-form').addEventListener('submit', e => e.preventDefault())")
    assert page.locator("#launch-busy").is_hidden()
    page.click("#launch-submit")
    assert page.locator("#launch-submit").is_disabled()
    assert page.locator("#launch-submit").inner_text() == "Launching…"
    assert page.locator("#launch-busy").is_visible()
