"""A worker killed mid-run (as by the OOM killer): its run stops sending heartbeats and the
reaper marks it failed with a reason the learner can read."""

import os
import signal
import time
import uuid

import pytest

from labs.models import Run
from labs.tasks import reap_runs, train_run
from tests.labs.conftest import SERVER_ENV, make_run, purge_queues
from tests.servers import celery_worker

pytestmark = pytest.mark.django_db(transaction=True)
QUEUE = "gpu-doomed"  # this test's own worker: no other worker may pick the run up


def test_killing_the_worker_process_mid_run_gets_the_run_failed_by_the_reaper(tmp_path, owner, settings):
    settings.RUN_HEARTBEAT_TIMEOUT_S = 3  # the worker beats every 0.5 s (SERVER_ENV)
    run = make_run(owner, epochs=100, eval_every=100_000)
    with celery_worker(tmp_path, queues=QUEUE, **SERVER_ENV) as (process, _name):
        task_id = str(uuid.uuid4())
        Run.objects.filter(pk=run.pk).update(celery_task_id=task_id)
        train_run.apply_async(args=[run.pk], queue=QUEUE, task_id=task_id)
        deadline = time.monotonic() + 120
        while not run.events.filter(type="step").exists():
            assert time.monotonic() < deadline, process.log_path.read_text()[-3000:]
            time.sleep(0.2)

        os.killpg(process.pid, signal.SIGKILL)  # the whole worker: parent and child, no goodbye
        process.wait()
        assert reap_runs.apply().get() == []  # the last heartbeat is still recent
        time.sleep(settings.RUN_HEARTBEAT_TIMEOUT_S + 1)
        assert reap_runs.apply().get() == [run.pk]
    purge_queues(QUEUE)

    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and run.finished_at
    assert "stopped sending heartbeats at" in run.error and "the worker process was probably killed" in run.error
    assert run.worker_host in run.error
    last = run.events.order_by("-seq").first()
    assert (last.type, last.payload["status"], last.payload["error"]) == ("status", "failed", run.error)
