"""What a first visit trips over on the labs pages (issue 25), checked in a real browser at
desktop and phone widths: boxes are measured, not eyeballed."""

import threading

import pytest
from django.utils import timezone

from labs.models import Run
from tests.conftest import log_in_browser
from tests.labs.conftest import make_run
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


def test_the_live_page_streams_scoring_and_drops_the_eta_when_the_run_ends(tmp_path, page, transactional_db, client,
                                                                           owner):
    from labs.events import event_append
    from tests.servers import daphne_server

    run = make_run(owner, status=Run.Status.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now())
    event_append(run_id=run.pk, type="status", payload={"status": "running", "message": "Started."}, notify=False)
    event_append(run_id=run.pk, type="step", notify=False, payload={
        "step": 1, "total_steps": 40, "loss": 1.2, "elapsed_s": 3.0, "eta_s": 147.0, "eta_low_s": 147.0, "eta_high_s": 523.0,
        "samples_per_s": 2.5})
    with daphne_server(tmp_path) as address:
        base = f"http://{address}"
        log_in_browser(page, client, owner, base)
        page.goto(f"{base}/labs/runs/{run.pk}/")
        page.locator("#run-connection").get_by_text("live").wait_for()
        # A range while it is a guess; waited for: "live" shows when the socket opens, before the replay is drawn.
        page.locator("#run-progress-text").get_by_text("ETA 2:27–8:43").wait_for()

        def worker(events):  # in a thread: Playwright's event loop owns this one
            for kind, payload in events:
                event_append(run_id=run.pk, type=kind, payload=payload)

        def send(*events):
            thread = threading.Thread(target=worker, args=(events,))
            thread.start()
            thread.join()

        send(("scoring", {"phase": "test", "done": 128, "total": 261, "done_all": 128, "total_all": 522,
                          "elapsed_s": 13.0, "eta_s": 40.0}))
        page.locator("#run-progress-text").get_by_text("scoring the test split: 128 / 261 reviews · ETA 0:40").wait_for()
        assert round(page.locator("#run-progress").evaluate("el => el.value")) == 25

        def finish():
            Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, finished_at=timezone.now())
            event_append(run_id=run.pk, type="status", payload={"status": "succeeded", "message": "Finished."})

        thread = threading.Thread(target=finish)
        thread.start()
        thread.join()
        page.locator("#run-status[data-status=succeeded]").wait_for()
        text = page.locator("#run-progress-text").inner_text()
        assert text.startswith("succeeded in ") and "ETA" not in text
        assert page.locator("#run-progress").evaluate("el => el.value") == 100


@pytest.mark.django_db
def test_no_template_comment_leaks_onto_a_page(owner_client, labs):
    page = owner_client.post(LAUNCH, {"learning_rate": "0.5"}).content.decode()
    assert "{#" not in page and "#}" not in page
