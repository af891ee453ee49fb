"""Nothing stranded: Redis down at launch is a 503 that saves nothing; a run whose task was lost
is sent again by the periodic dispatcher; the embedded Redis keeps queued tasks across a crash
(append-only file) and runstack.py restarts it, and stops the stack web -> workers -> Redis."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from labs.models import DatasetUpload, Run
from labs.scheduling import runs_dispatch
from labs.tasks import dispatch_runs
from scripts.redis_server import RedisServer
from tests.labs.conftest import SERVER_ENV, make_run, purge_queues
from tests.labs.test_fair_use import big_upload
from tests.labs.test_launch import LAUNCH, form_data
from tests.labs.test_live_runs import wait_for
from tests.servers import ROOT, celery_worker, free_port, subprocess_env


def test_a_launch_while_redis_is_down_is_a_503_page_that_saves_nothing(owner_client, labs, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = owner_client.post(LAUNCH, {**form_data(), "upload": big_upload(60)})
    assert response.status_code == 503
    page = response.content.decode()
    assert 'id="queue-unavailable"' in page and "could not reach Redis" in page and "<strong>not</strong> launched" in page
    assert not Run.objects.exists() and not DatasetUpload.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_task_was_lost_is_sent_again_and_trained_once(tmp_path, owner, settings):
    purge_queues()
    run = make_run(owner)
    assert runs_dispatch() == [run.pk]
    purge_queues("gpu")  # the task is gone, as after a Redis crash without persistence
    assert dispatch_runs.apply().get() == []  # sent a moment ago: not presumed lost yet
    Run.objects.filter(pk=run.pk).update(dispatched_at=timezone.now() - timedelta(seconds=settings.RUN_DISPATCH_TIMEOUT_S + 1))
    assert dispatch_runs.apply().get() == [run.pk]
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV):
        wait_for(lambda: Run.objects.filter(pk=run.pk, status=Run.Status.SUCCEEDED).exists(), what="the run")
    run.refresh_from_db()
    assert run.attempts == 1
    assert run.events.filter(type="log", payload__message__startswith="No worker picked this run up").count() == 1
    assert [e.payload["status"] for e in run.events.filter(type="status").order_by("seq")] == ["queued", "running", "succeeded"]


def test_the_embedded_redis_keeps_queued_tasks_across_a_kill_9(tmp_path):
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.lpush("gpu", *[f"task-{i}" for i in range(3)])
        time.sleep(1.5)  # appendfsync everysec
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server.start()
        assert sorted(redis.Redis.from_url(server.url).lrange("gpu", 0, -1)) == [b"task-0", b"task-1", b"task-2"]
    finally:
        server.stop()


def read_pids(var) -> dict:
    try:
        return json.loads((var / "runstack.json").read_text())
    except (OSError, ValueError):
        return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet by runstack) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.django_db(transaction=True)
def test_runstack_restarts_a_killed_redis_and_stops_web_then_workers_then_redis(tmp_path):
    var, port = tmp_path / "var", free_port()
    env = subprocess_env(**SERVER_ENV, TUNELAB_VAR_DIR=str(var), TUNELAB_PORT=str(port),
                         TUNELAB_REDIS_PORT=str(free_port()), TUNELAB_SHUTDOWN_GRACE="30")
    env.pop("REDIS_URL")  # the stack's own embedded Redis
    log = open(tmp_path / "runstack.log", "wb")
    stack = subprocess.Popen([sys.executable, "scripts/runstack.py"], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pids = wait_for(lambda: (lambda p: p if {"web", "gpu1", "default", "beat", "redis"} <= set(p) else None)(
            read_pids(var)), timeout=60, what="runstack.json")
        url = f"redis://127.0.0.1:{env['TUNELAB_REDIS_PORT']}/0"
        redis.Redis.from_url(url).set("survives", "yes")
        time.sleep(1.5)
        os.kill(pids["redis"], signal.SIGKILL)
        restarted = wait_for(lambda: read_pids(var).get("redis", pids["redis"]) != pids["redis"] and read_pids(var),
                             timeout=30, what="a new redis")
        assert wait_for(lambda: _ping(url), timeout=20, what="redis to answer") and \
            redis.Redis.from_url(url).get("survives") == b"yes"
        assert all(alive(restarted[name]) for name in ("web", "gpu1", "default", "beat"))

        stack.send_signal(signal.SIGTERM)
        gone: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while len(gone) < len(restarted) and time.monotonic() < deadline:
            for name, pid in restarted.items():
                if name not in gone and not alive(pid):
                    gone[name] = time.monotonic()
            time.sleep(0.02)
        assert stack.wait(timeout=30) == 0
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
        log.close()
    text = (tmp_path / "runstack.log").read_text(errors="replace")
    assert "redis exited; restarting it" in text
    assert gone["web"] <= min(gone["gpu1"], gone["default"]) and max(gone["gpu1"], gone["default"]) <= gone["redis"], gone


def _ping(url) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        return False
