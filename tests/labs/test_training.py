"""The worker's service, in this process, on the tiny model: a few-shot run, a fine-tune, a run
that continues another's adapter, and what their results pages and downloads show."""

import io
import zipfile

import pytest

from labs.models import Run
from labs.presenters import PREDICTIONS_PER_PAGE
from labs.worker import run_execute
from mlcore.data import load_bundled
from tests.labs.conftest import make_run

TEST_REVIEWS = len(load_bundled("reviews").test)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("one_torch_thread")]


def test_a_fewshot_run_scores_the_prompted_base_model_without_training(owner, owner_client):
    run = make_run(owner, mode=Run.Mode.FEWSHOT, shots=6, train_limit=6)
    run_execute(run_id=run.pk, task_id="t-1", host="here")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert (run.worker_host, run.celery_task_id) == ("here", "t-1") and run.started_at and run.finished_at
    train = run.metrics["train"]
    assert train["shots"] == 6 and train["steps"] == 0 and train["extra_prompt_tokens"] > 6 * 5
    assert run.metrics["test"]["n"] == run.metrics["zero_shot"]["n"] == len(run.predictions) == TEST_REVIEWS
    assert not (run.artifact_dir / "adapter_config.json").exists()
    # No adapter: nothing to download.
    assert owner_client.get(f"/labs/runs/{run.pk}/download/").status_code == 404
    types = [e.type for e in run.events.order_by("seq")]
    assert types[:2] == ["status", "status"] and types[-1] == "status" and "step" not in types


def test_a_fine_tune_succeeds_and_a_waiting_continuation_starts_from_its_adapter(owner, owner_client):
    parent = make_run(owner, dataset="reviews", eval_every=1)  # validated each step: the best pass is kept
    child = make_run(owner, dataset="reviews-mixed", continue_from=parent)

    run_execute(run_id=parent.pk, task_id="t-parent")
    parent.refresh_from_db()
    assert parent.status == Run.Status.SUCCEEDED, parent.error
    test = parent.metrics["test"]
    assert test["labels"] == ["positive", "negative", "neutral"] and 0 <= test["accuracy"] <= 1
    assert parent.metrics["zero_shot"]["n"] == test["n"] == TEST_REVIEWS
    steps = [e.payload for e in parent.events.filter(type="step").order_by("seq")]
    assert [s["step"] for s in steps] == [1, 2] and steps[-1]["total_steps"] == 2
    assert any(row["supervised"] for row in parent.token_view) and not all(row["supervised"] for row in parent.token_view)
    seqs = list(parent.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))

    child.refresh_from_db()
    assert child.celery_task_id  # the parent's success sent it to the queue
    run_execute(run_id=child.pk)
    child.refresh_from_db()
    assert child.status == Run.Status.SUCCEEDED, child.error
    assert child.metrics["test"]["labels"] == ["positive", "negative", "neutral", "mixed"]

    # The results page, the errors filter and the download.
    page = owner_client.get(f"/labs/runs/{parent.pk}/results/").content.decode()
    assert f"{test['accuracy']:.3f}" in page and 'id="confusion-matrix"' in page and 'id="token-view"' in page
    assert f'href="/playground/?run={parent.pk}"' in page
    best = parent.metrics["best_validation"]
    assert best["step"] in (1, 2)
    assert f"step {best['step']} of 2" in page and f"validation macro-F1 {best['macro_f1']:.3f}" in page
    wrong = sum(1 for p in parent.predictions if not p["correct"])
    errors_page = owner_client.get(f"/labs/runs/{parent.pk}/results/?errors=1").content.decode()
    shown = min(wrong, PREDICTIONS_PER_PAGE)  # the first page of the wrong ones
    assert errors_page.count('<tr class="wrong">') == shown and '<tr class="ok">' not in errors_page
    response = owner_client.get(f"/labs/runs/{parent.pk}/download/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert {f"run-{parent.pk}/{name}" for name in ("adapter_model.safetensors", "adapter_config.json",
                                                     "train_config.json", "labels.json")} <= set(names)


def test_a_run_that_cannot_start_fails_with_a_readable_reason(owner):
    parent = make_run(owner, status=Run.Status.FAILED)
    child = make_run(owner, continue_from=parent)
    run_execute(run_id=child.pk)
    child.refresh_from_db()
    assert child.status == Run.Status.FAILED
    assert child.error == f"run {parent.pk} has no trained adapter to continue from (it is failed)."
