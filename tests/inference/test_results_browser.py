"""The results page in a real browser: one set of numbers, boxes that do not cut or overlap."""

import pytest

from labs.models import Run
from mlcore.metrics import compute_metrics
from tests.conftest import log_in_browser

pytestmark = pytest.mark.browser

LABELS = ["positive", "negative", "neutral"]


def _realistic(run: Run) -> Run:
    """What a finished training run stores: test and zero-shot metrics, predictions, token view."""
    from mlcore.data import load_bundled
    from mlcore.masking import encode, token_view
    from mlcore.registry import load_tokenizer

    gold = (LABELS * 20)[:60]
    predicted = [label if i % 7 else "neutral" for i, label in enumerate(gold)]
    zero = ["neutral" if i % 2 else label for i, label in enumerate(gold)]
    run.metrics = {**run.metrics, "test": compute_metrics(gold, predicted, LABELS),
                   "zero_shot": compute_metrics(gold, zero, LABELS),
                   "best_validation": {"step": 60, "loss": 0.41, "accuracy": 0.87, "macro_f1": 0.869}}
    texts = [f"Review {i}: " + "the cable works but the plug wobbles a little " * (1 + i % 3) for i in range(60)]
    run.predictions = [{"text": text, "label": g, "predicted": p, "correct": g == p,
                        "probs": {label: (0.8 if label == p else 0.1) for label in LABELS}}
                       for text, g, p in zip(texts, gold, predicted, strict=True)]
    tokenizer = load_tokenizer("tiny-test")
    example = load_bundled("reviews").train[0]
    run.token_view = token_view(tokenizer, encode(tokenizer, example, LABELS, max_length=128, mask_prompt=True))
    run.save()
    return run


def test_the_results_page_agrees_with_itself_and_nothing_is_cut(live_server, page, transactional_db, client, make_run,
                                                                 owner, screenshot):
    run = _realistic(make_run(owner))
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")
    test, zero = run.metrics["test"], run.metrics["zero_shot"]

    # Fine-tuned vs prompting repeats the numbers computed above, not dashes and "not run".
    finetuned = page.locator("#baselines-table tr[data-method=finetuned]")
    local = page.locator("#baselines-table tr[data-method=zero-shot-local]")
    assert finetuned.locator("[data-metric=macro_f1]").inner_text() == f"{test['macro_f1']:.3f}"
    assert finetuned.locator("[data-metric=accuracy]").inner_text() == f"{test['accuracy']:.3f}"
    assert local.locator("[data-metric=macro_f1]").inner_text() == f"{zero['macro_f1']:.3f}"
    assert local.locator("[data-metric=accuracy]").inner_text() == f"{zero['accuracy']:.3f}"
    assert "not run" not in finetuned.inner_text() + local.inner_text()

    page.locator("#predictions-details > summary").click()  # collapsed, last on the page (issue 25)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        # The predictions box starts below the comparison that leads the page.
        box = page.locator(".results-predictions").bounding_box()
        above = page.locator("#baselines h3").bounding_box()
        assert box["y"] >= above["y"] + above["height"], (width, box, above)
        # Paginated (100 a page), so the box shows whole rows: no inner scroll cutting one in half.
        assert page.locator(".results-predictions").evaluate("el => el.scrollHeight <= el.clientHeight + 1")
        # Every token of the token view stays on one line ("neu|tral" never splits).
        split = page.locator("#token-view .tok").evaluate_all(
            "toks => toks.filter(t => t.getClientRects().length > 1).map(t => t.textContent)")
        assert split == [], (width, split)
    screenshot(page, "labs-results")
