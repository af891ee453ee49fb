"""The run page after the last step (issue 25 item 4): scoring the test split is its own streamed
progress, the ETA is a range while it is a guess, and a finished run shows no ETA."""

from datetime import timedelta

import pytest
from django.utils import timezone

from labs.events import event_append
from labs.models import Run
from labs.training import ProgressReport
from labs.worker import run_execute
from mlcore.config import TrainConfig
from tests.labs.conftest import make_run


class FakeRecorder:
    """Collects what ProgressReport records (the real RunRecorder writes rows; its own tests cover that)."""

    def __init__(self):
        self.events, self.logs, self.reported = [], [], []

    def event(self, type, payload, *, force=True):
        self.events.append((type, payload))

    def log(self, message):
        self.logs.append(message)

    def report(self, event):
        self.reported.append(event)


def step(n, total=40, eta=100.0):
    return {"type": "step", "step": n, "total_steps": total, "eta_s": eta, "samples_per_s": 8.0, "loss": 1.0}


def test_the_eta_is_a_range_until_a_validation_pass_has_been_timed_then_one_value():
    recorder = FakeRecorder()
    progress = ProgressReport(recorder, TrainConfig(batch_size=8, grad_accum=1))
    progress.report(step(1))  # 39 steps left at 1 s a step: 39 s training, 61 s priced for scoring (a guess)
    first = recorder.reported[-1]
    assert first["eta_low_s"] == 100.0 and first["eta_high_s"] == pytest.approx(39 + 3 * 61)
    progress.report({"type": "eval", "step": 2, "loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4})
    progress.report(step(3))
    assert (recorder.reported[-1]["eta_low_s"], recorder.reported[-1]["eta_high_s"]) == (75.0, 125.0)
    progress.report(step(20))
    assert "eta_low_s" not in recorder.reported[-1] and recorder.reported[-1]["eta_s"] == 100.0


def test_scoring_is_recorded_as_its_own_progress_with_an_eta(monkeypatch):
    recorder = FakeRecorder()
    progress = ProgressReport(recorder, TrainConfig(zero_shot=True))
    progress.SCORING_EVERY_S = 0  # record every batch here
    for phase in ("test", "zero_shot"):
        for done in (100, 200, 261):
            assert progress.report({"type": "scoring", "phase": phase, "done": done, "total": 261}) is None
    assert recorder.reported == []  # scoring events do not reach the step/eval recorder
    assert recorder.logs == ["Scoring the test split (261 reviews), then the base model on it for the zero-shot baseline."]
    kinds = {kind for kind, _ in recorder.events}
    assert kinds == {"scoring"}
    payloads = [p for _, p in recorder.events]
    assert [p["done_all"] for p in payloads] == [100, 200, 261, 361, 461, 522]
    assert all(p["total_all"] == 522 for p in payloads) and payloads[-1]["eta_s"] == 0
    assert payloads[0]["eta_s"] >= 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("one_torch_thread")
def test_a_real_run_streams_the_scoring_of_both_passes(owner):
    run = make_run(owner, dataset="reviews")
    run_execute(run_id=run.pk, task_id="t-1")
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    scoring = [e.payload for e in run.events.filter(type="scoring").order_by("seq")]
    assert [p["phase"] for p in scoring if p["done"] == p["total"]] == ["test", "zero_shot"]
    assert scoring[-1]["done_all"] == scoring[-1]["total_all"] == 2 * run.metrics["test"]["n"]
    last_step = run.events.filter(type="step").order_by("-seq").first()
    assert all(e.seq > last_step.seq for e in run.events.filter(type="scoring"))


def test_a_finished_run_page_shows_no_eta(owner, owner_client):
    now = timezone.now()
    run = make_run(owner, status=Run.Status.SUCCEEDED, started_at=now - timedelta(seconds=143), finished_at=now)
    event_append(run_id=run.pk, type="step", notify=False,
                 payload={"step": 40, "total_steps": 40, "loss": 0.3, "elapsed_s": 80.0, "eta_s": 42.0, "samples_per_s": 8.0})
    text = owner_client.get(f"/labs/runs/{run.pk}/").content.decode().split('id="run-progress-text">', 1)[1].split("</p>")[0]
    assert "ETA" not in text and "succeeded in 2 min 23 s" in text and "40 of 40 steps" in text


def test_a_run_being_scored_shows_the_scoring_progress(owner, owner_client):
    run = make_run(owner, status=Run.Status.RUNNING, started_at=timezone.now())
    event_append(run_id=run.pk, type="step", notify=False,
                 payload={"step": 40, "total_steps": 40, "loss": 0.3, "elapsed_s": 80.0, "eta_s": 42.0, "samples_per_s": 8.0})
    event_append(run_id=run.pk, type="scoring", notify=False, payload={
        "phase": "zero_shot", "done": 64, "total": 261, "done_all": 325, "total_all": 522, "elapsed_s": 30.0, "eta_s": 18.2})
    page = owner_client.get(f"/labs/runs/{run.pk}/").content.decode()
    assert 'id="run-progress" value="62"' in page
    assert "zero-shot baseline): 64 / 261 reviews · ETA 18 s" in page
