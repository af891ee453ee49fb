"""The 4-bit, label-noise and real-text labs in a real browser, on real tiny-model runs: the lab pages with
their questions, the 4-bit table on the results page, the label-noise group's table and chart.
Screenshots at 1280 and 390 px go to var/screenshots/ (a page wider than the screen fails)."""

import io

import pytest
from django.core.management import call_command

from labs.models import Lab
from labs.services import group_launch
from labs.worker import run_execute
from tests.conftest import log_in_browser
from tests.labs.conftest import TINY, make_run
from tests.labs.test_four_bit_lab import assert_the_run_measured_each_export

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.parametrize("slug, question", [("four-bit-cost", "nearest-rounding-erases-lora-update"),
                                            ("label-noise", "label-noise-and-confidence"),
                                            ("real-text", "classifier-misreads-real-reviews")])
def test_the_lab_page_teaches_and_links_its_questions(live_server, page, transactional_db, client, owner, labs,
                                                      screenshot, slug, question):
    from quiz.models import Question

    call_command("load_bank", stdout=io.StringIO())
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/{slug}/")
    assert "What to expect" in page.locator("main").inner_text()
    link = page.locator("#lab-questions a", has_text=Question.objects.get(slug=question).title)
    assert link.count() == 1
    screenshot(page, f"labs-{slug}")
    link.click()
    page.wait_for_url(f"**/q/{question}/")
    assert page.locator(f'a[href="/labs/{slug}/"]').count() >= 1  # and back


def test_the_four_bit_table_shows_each_export_and_fits_a_phone(live_server, page, transactional_db, client, owner, labs,
                                                               screenshot):
    run = make_run(owner, lab=Lab.objects.get(slug="four-bit-cost"))  # the tiny model: the lab's steps, in seconds
    run_execute(run_id=run.pk, task_id="t-4bit")
    run.refresh_from_db()
    log_in_browser(page, client, owner, live_server.url)
    assert_the_run_measured_each_export(run, client)  # the run's figures and the page's HTML
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")
    table = page.locator("#quantization-table")
    assert table.is_visible() and table.locator("tbody tr").count() == 1 + len(run.metrics["quantization"]["rows"])
    assert page.locator("#calibration").is_visible()
    screenshot(page, "labs-four-bit-results")


def test_the_label_noise_group_compares_f1_and_calibration_in_a_table_and_a_chart(live_server, page, transactional_db,
                                                                                  client, owner, labs, screenshot):
    lab = Lab.objects.get(slug="label-noise")
    group = group_launch(user=owner, lab=lab, config={**lab.preset, **TINY})
    for run in group.runs.order_by("pk"):
        run_execute(run_id=run.pk)
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/groups/{group.pk}/")
    assert page.locator("#sweep-table tbody tr").count() == 4
    legend = page.locator("[data-chart=sweep] .u-legend").inner_text()
    assert "ECE" in legend and "mean confidence" in legend and "macro-F1" in legend
    screenshot(page, "labs-label-noise-group")
    noisiest = group.runs.order_by("pk").last()
    page.goto(f"{live_server.url}/labs/runs/{noisiest.pk}/results/")
    assert "training labels were replaced" in page.locator("#label-noise").inner_text()
    page.locator("#reliability summary").click()
    assert page.locator("#reliability-table tbody tr").count() >= 1
    screenshot(page, "labs-label-noise-results")
