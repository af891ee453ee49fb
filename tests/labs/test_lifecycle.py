"""Run lifecycle without a worker process: the task's idempotency, cancel, the reaper, and
runs that continue another run. (The live tests drive the same code through real processes.)"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from labs import training, worker
from labs.models import Run, RunEvent
from labs.tasks import reap_runs, train_run
from labs.worker import Heartbeat, runs_reap
from tests.labs.conftest import make_run


def events(run):
    return list(run.events.order_by("seq").values_list("seq", "type"))


def run_task(run_id: int) -> None:
    """The training task, in this process. Celery's eager apply() stores an exception in its
    result instead of raising it: throw=True re-raises, so a task that crashes fails the test
    rather than passing for one that "did nothing"."""
    result = train_run.apply(args=[run_id], throw=True)
    assert result.successful() and result.get() is None


def state(run_id: int) -> tuple[dict, list[dict]]:
    """Every column of the run's row and every event it has: what a task that does nothing leaves as it was."""
    row = Run.objects.filter(pk=run_id).values().get()
    return row, list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values("seq", "type", "payload", "created_at"))


@pytest.mark.parametrize("status", [Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED])
def test_the_task_never_touches_a_finished_run(owner, status):
    run = make_run(owner, status=status, metrics={"test": {"accuracy": 1.0}})
    before = state(run.pk)
    run_task(run.pk)
    assert state(run.pk) == before
    assert before[0]["status"] == status and before[0]["metrics"] == {"test": {"accuracy": 1.0}}


def test_a_redelivered_task_leaves_a_run_with_a_fresh_heartbeat_to_its_worker(owner):
    run = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=timezone.now(), worker_host="gpu-1")
    before = state(run.pk)
    run_task(run.pk)
    assert state(run.pk) == before
    assert before[0]["status"] == Run.Status.RUNNING and before[0]["worker_host"] == "gpu-1" and len(before[1]) == 1


def test_a_redelivered_task_fails_a_run_whose_worker_died_once_its_attempts_are_used_up(owner, settings):
    stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S + 5)
    run = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=stale, worker_host="gpu-1",
                   attempts=settings.RUN_MAX_ATTEMPTS)
    run_task(run.pk)
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and "stopped sending heartbeats" in run.error
    assert f"started {settings.RUN_MAX_ATTEMPTS} time(s)" in run.error
    assert run.started_at is None  # it was never started again


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "paused"])
def test_an_attempt_presumed_dead_cannot_finish_the_run_its_successor_now_holds(owner, monkeypatch, outcome):
    """A worker cut off from the database long enough is reaped and its run resumed elsewhere;
    when it comes back, its late outcome must not overwrite the run the later attempt is training."""
    run = make_run(owner)

    def execute_then_lose_the_run(claimed, recorder, *, resume):
        # Meanwhile the reaper requeued the run and another worker took it over (attempt 2).
        Run.objects.filter(pk=claimed.pk).update(attempts=2, worker_host="gpu-2", heartbeat_at=timezone.now())
        assert recorder.should_stop()  # the stale attempt stops at its next step
        if outcome == "failed":
            raise RuntimeError("late failure")
        if outcome == "paused":
            Run.objects.filter(pk=claimed.pk).update(pause_requested=True)
            return training.Outcome(cancelled=True)
        return training.Outcome(cancelled=False, metrics={"test": {"accuracy": 0.1}}, summary="late")

    monkeypatch.setattr(worker.training, "execute", execute_then_lose_the_run)
    run_task(run.pk)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.worker_host, run.metrics) == (Run.Status.RUNNING, 2, "gpu-2", None)
    assert [e["payload"]["status"] for e in state(run.pk)[1] if e["type"] == "status"] == ["queued", "running"]


@pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
def test_a_superseded_attempts_heartbeat_does_not_keep_its_successors_run_alive(owner):
    then = timezone.now() - timedelta(minutes=5)
    run = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=then, attempts=2)
    beats = []
    for attempt in (1, 2):
        with Heartbeat(run.pk, 0.05, attempt):
            time.sleep(0.5)
        run.refresh_from_db()
        beats.append(run.heartbeat_at > then)
    assert beats == [False, True]


def test_the_task_of_a_deleted_run_does_nothing(owner, caplog):
    run = make_run(owner)
    run_id, others = run.pk, state(make_run(owner).pk)
    run.delete()
    with caplog.at_level("INFO"):
        run_task(run_id)
    assert f"run {run_id} no longer exists" in caplog.text
    assert not Run.objects.filter(pk=run_id).exists() and not RunEvent.objects.filter(run_id=run_id).exists()
    assert state(others[0]["id"]) == others  # nor any other run


def test_the_reaper_requeues_a_lost_run_to_resume_and_fails_it_once_its_attempts_are_used_up(owner, settings):
    now = timezone.now()
    settings.RUN_HEARTBEAT_TIMEOUT_S = 60
    settings.GPU_WORKER_SLOTS = 1
    lost = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=now - timedelta(seconds=61), worker_host="gpu-7",
                    attempts=1, dispatched_at=now)
    spent = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=now - timedelta(seconds=61), worker_host="gpu-8",
                     attempts=settings.RUN_MAX_ATTEMPTS)
    alive = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=now - timedelta(seconds=30))
    queued = make_run(owner)

    assert sorted(reap_runs.apply().get()) == [lost.pk, spent.pk]

    lost.refresh_from_db()
    assert lost.status == Run.Status.QUEUED and lost.finished_at is None and lost.dispatched_at is None
    last = lost.events.order_by("-seq").first()
    assert (last.type, last.payload["status"], last.seq) == ("status", "queued", 2)
    assert "continues from its last checkpoint" in last.payload["message"]

    spent.refresh_from_db()
    assert spent.status == Run.Status.FAILED and spent.finished_at
    beat = (now - timedelta(seconds=61)).strftime("%Y-%m-%d %H:%M:%S")
    assert spent.error.startswith(f"The worker gpu-8 stopped sending heartbeats at {beat} UTC, ")
    assert "the worker process was probably killed" in spent.error
    assert Run.objects.get(pk=alive.pk).status == Run.Status.RUNNING
    assert Run.objects.get(pk=queued.pk).status == Run.Status.QUEUED
    assert runs_reap() == []  # a second pass finds nothing


def test_cancelling_a_queued_run_finishes_it_and_the_task_then_exits(owner_client, owner):
    run = make_run(owner, celery_task_id="abc")
    response = owner_client.post(f"/labs/runs/{run.pk}/cancel/")
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.finished_at and run.cancel_requested
    assert events(run)[-1] == (2, "status")
    before = state(run.pk)
    run_task(run.pk)
    assert state(run.pk) == before
    assert before[0]["started_at"] is None and before[0]["attempts"] == 0


def test_cancelling_a_running_run_asks_its_worker_to_stop(owner_client, owner):
    run = make_run(owner, status=Run.Status.RUNNING, heartbeat_at=timezone.now())
    response = owner_client.post(f"/labs/runs/{run.pk}/cancel/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"stopping after the current step" in response.content
    assert b'id="cancel-form"' not in response.content
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.cancel_requested
    assert run.events.order_by("-seq").first().payload["message"].startswith("Cancel requested by owner")


def test_cancelling_a_finished_run_changes_nothing(owner_client, owner):
    run = make_run(owner, status=Run.Status.SUCCEEDED)
    response = owner_client.post(f"/labs/runs/{run.pk}/cancel/", follow=True)
    assert b"already finished" in response.content
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


def test_a_run_waiting_on_a_cancelled_parent_fails_with_the_reason(owner_client, owner):
    parent = make_run(owner)
    child = make_run(owner, continue_from=parent)
    owner_client.post(f"/labs/runs/{parent.pk}/cancel/")
    child.refresh_from_db()
    assert child.status == Run.Status.FAILED and f"(run {parent.pk}) did not succeed" in child.error


def test_the_event_numbers_are_consecutive_whoever_writes(owner):
    from labs.events import event_append

    run = make_run(owner)
    for i in range(5):
        event_append(run_id=run.pk, type="log", payload={"message": str(i)}, notify=False)
    assert [seq for seq, _ in events(run)] == [1, 2, 3, 4, 5, 6]
    assert Run.objects.get(pk=run.pk).last_seq == 6
    assert [e["seq"] for e in run.events_after(4)] == [5, 6]
