"""A worker lost mid-run (killed as by the OOM killer, or shut down) costs the run at most
checkpoint_every steps: it resumes from its last checkpoint on the next worker, and the live
stream shows every step once."""

import asyncio
import os
import signal
import subprocess
import time

import pytest

from labs.models import Run
from labs.scheduling import runs_dispatch
from labs.tasks import reap_runs
from tests.labs.conftest import SERVER_ENV, make_run, purge_queues, session_cookie
from tests.labs.test_live_runs import read_stream, wait_for
from tests.servers import celery_worker, daphne_server

pytestmark = pytest.mark.django_db(transaction=True)
STEPS = 30  # 15 epochs of 2 steps


@pytest.fixture
def resumable(owner, settings):
    settings.RUN_CHECKPOINT_EVERY = 5
    settings.RUN_HEARTBEAT_TIMEOUT_S = 3  # the worker beats every 0.5 s (SERVER_ENV)
    purge_queues()
    yield make_run(owner, epochs=STEPS // 2, eval_every=100_000)
    purge_queues()


def steps_recorded(run) -> int:
    return max([e.payload["step"] for e in run.events.filter(type="step")], default=0)


def sent_and_stepping(run, process, past: int) -> int:
    assert runs_dispatch() == [run.pk]
    return wait_for(lambda: (steps_recorded(run) > past or process.poll() is not None) and steps_recorded(run),
                    what=f"step {past + 1}")


def assert_resumed_once(run, *, max_lost: int, on_schedule: bool = True) -> None:
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.attempts == 2, run.error
    steps = [e.payload["step"] for e in run.events.filter(type="step").order_by("seq")]
    assert steps == list(range(1, STEPS + 1))  # every step once, none twice, whatever was redone
    resumed = run.events.get(type="log", payload__message__startswith="Resuming from the checkpoint at step")
    checkpoint = int(resumed.payload["message"].rstrip(".").split()[-1])
    before = run.events.filter(type="step", seq__lt=resumed.seq).count()
    assert 0 <= before - checkpoint <= max_lost and checkpoint > 0
    assert checkpoint % 5 == 0 or not on_schedule
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_killing_the_whole_worker_mid_run_resumes_the_run_from_its_checkpoint_on_the_next(
        tmp_path, resumable, client, owner):
    run = resumable
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV) as (process, _name):
        sent_and_stepping(run, process, past=7)
        os.killpg(process.pid, signal.SIGKILL)  # parent and child, no goodbye
        process.wait()
    assert reap_runs.apply().get() == []  # the last heartbeat is still recent
    time.sleep(4)
    assert reap_runs.apply().get() == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.dispatched_at  # back in the queue, sent at once
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV) as (process, _name), \
            daphne_server(tmp_path, **SERVER_ENV) as address:
        wait_for(lambda: Run.objects.filter(pk=run.pk).exclude(status__in=Run.ACTIVE).exists(), what="the end")
        events, end = asyncio.run(read_stream(address, session_cookie(client, owner), run.pk))
    assert_resumed_once(run, max_lost=5)
    assert [e["seq"] for e in events] == list(range(1, end["seq"] + 1))  # the live page: each event once
    statuses = [e["status"] for e in events if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]


def test_a_killed_training_process_is_redelivered_and_resumed_without_waiting_for_the_reaper(
        tmp_path, resumable, client, owner):
    run = resumable
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV) as (process, _name):
        sent_and_stepping(run, process, past=7)
        child = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert child, "the worker has no pool process"
        for pid in child:
            os.kill(int(pid), signal.SIGKILL)  # the pool process only: the parent requeues the task
        wait_for(lambda: Run.objects.filter(pk=run.pk, status=Run.Status.SUCCEEDED).exists()
                 or process.poll() is not None, timeout=120, what="the resumed run to succeed")
    assert_resumed_once(run, max_lost=5)
    assert "previous worker process died" in run.events.filter(type="status").order_by("seq")[2].payload["message"]


def test_a_worker_shutting_down_pauses_its_run_at_a_checkpoint_and_the_next_worker_resumes_it(
        tmp_path, resumable, client, owner):
    run = resumable
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV) as (process, _name):
        sent_and_stepping(run, process, past=7)
        process.send_signal(signal.SIGTERM)  # warm shutdown, as runstack.py and systemd stop it
        process.wait(timeout=60)
        assert "asked 1 run(s)" in process.log_path.read_text()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED, run.events.order_by("-seq").first().payload
    paused = run.events.filter(type="status").order_by("-seq").first()
    assert paused.payload["message"].startswith("Paused: the worker is shutting down")
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV):
        runs_dispatch()  # (already sent by the paused worker: nothing to do)
        wait_for(lambda: Run.objects.filter(pk=run.pk).exclude(status__in=Run.ACTIVE).exists(), what="the end")
    # Paused right after a step, with a checkpoint of that very step: nothing is lost.
    assert_resumed_once(run, max_lost=0, on_schedule=False)
