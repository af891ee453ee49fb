"""The results page's "does it generalise?" panel in a real browser: the run's answers on the
probe sentences (in no split) beside its test figures, the over-confident mistakes first."""

import pytest

from labs.models import Run
from labs.presenters import PROBE_MISTAKES_SHOWN
from mlcore.data import load_probe
from mlcore.metrics import compute_metrics, polar_metrics
from tests.conftest import log_in_browser

pytestmark = pytest.mark.browser

LABELS = ["positive", "negative", "neutral"]


def _with_probe(run: Run) -> Run:
    """A run that reads its synthetic test split well and plain sentences badly: it calls a
    third of the probe's polar sentences neutral, ever more confidently."""
    gold = (LABELS * 20)[:60]
    probe = load_probe(LABELS)
    answered = ["neutral" if e.label != "neutral" and i % 3 == 0 else e.label for i, e in enumerate(probe)]
    rows = [{"text": e.text, "label": e.label, "predicted": p, "correct": p == e.label,
             "probs": {label: (0.5 + i / 200 if label == p else (0.5 - i / 200) / 2) for label in LABELS}}
            for i, (e, p) in enumerate(zip(probe, answered, strict=True))]
    rows.sort(key=lambda r: (r["correct"], -r["probs"][r["predicted"]]))
    y_true, y_pred = [r["label"] for r in rows], [r["predicted"] for r in rows]
    run.metrics = {**run.metrics, "test": compute_metrics(gold, gold, LABELS),
                   "probe": {"metrics": compute_metrics(y_true, y_pred, LABELS),
                             "polar": polar_metrics(y_true, y_pred, [r["probs"] for r in rows]), "predictions": rows}}
    run.save()
    return run


def test_the_panel_puts_plain_sentences_beside_the_test_split(live_server, page, transactional_db, client, make_run,
                                                              owner, screenshot):
    run = _with_probe(make_run(owner))
    probe = run.metrics["probe"]
    wrong = [r for r in probe["predictions"] if not r["correct"]]
    polar = [r for r in probe["predictions"] if r["label"] != "neutral"]
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")

    panel = page.locator("#generalisation")
    right = len(probe["predictions"]) - len(wrong)
    assert panel.locator("[data-metric=probe_accuracy]").inner_text() == f"{right} of {len(probe['predictions'])}"
    assert page.locator("#probe-polar-neutral").inner_text() == f"{len(wrong)} of the {len(polar)}"
    assert page.locator("#probe-flattered").is_visible()  # 1.00 on the test split, far less here
    neutral_row = page.locator("#probe-per-label tr", has_text="positive").first.inner_text()
    assert "neutral" in neutral_row  # what it answered for positive sentences
    shown = page.locator("#probe-mistakes li").all_inner_texts()
    assert len(shown) == min(len(wrong), PROBE_MISTAKES_SHOWN)
    assert wrong[0]["text"] in shown[0]  # the most confident mistake leads

    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        box, table = panel.bounding_box(), page.locator("#results-metrics").bounding_box()
        assert box["y"] >= table["y"] + table["height"] and box["x"] + box["width"] <= width, (width, box, table)
    screenshot(page, "labs-results-generalisation")


def test_a_run_without_probe_figures_shows_no_panel(live_server, page, transactional_db, client, make_run, owner):
    run = make_run(owner)
    run.metrics = {**run.metrics, "test": compute_metrics(LABELS, LABELS, LABELS)}
    run.save()
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")
    assert page.locator("#results-metrics").is_visible()
    assert page.locator("#generalisation").count() == 0
