"""Everything writing at once: a gpu worker training, a default worker running the dispatcher and
the reaper in a loop, and the web server taking launches, cancels and websocket replays from two
learners. Every run ends in a final status with consecutive events, and no process ever logs
"database is locked" (SQLite) or a deadlock (PostgreSQL: `make test-postgres` runs this too)."""

import asyncio
import threading

import pytest

from labs.models import Run
from labs.tasks import dispatch_runs, reap_runs
from tests.labs.conftest import SERVER_ENV, logged_in_http, purge_queues
from tests.labs.test_live_runs import launch, read_stream, wait_for
from tests.servers import celery_worker, daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_gpu_and_default_workers_and_the_web_write_at_once_without_locking_errors(tmp_path, client, owner,
                                                                                    other_user, labs, settings):
    settings.MAX_ACTIVE_RUNS_PER_USER = 5
    purge_queues()
    env = dict(SERVER_ENV, TUNELAB_MAX_ACTIVE_RUNS="5")
    stop = threading.Event()

    def beat():  # what Celery beat does, much faster: both periodic tasks through the default worker
        while not stop.wait(0.3):
            dispatch_runs.delay()
            reap_runs.delay()

    with celery_worker(tmp_path, queues="gpu", **env) as (gpu, _), \
            celery_worker(tmp_path, queues="default", concurrency=2, **env) as (default, _), \
            daphne_server(tmp_path, **env) as address:
        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        try:
            runs = []
            for user in (owner, other_user):
                with logged_in_http(client, user, address) as http:
                    runs += [launch(http), launch(http, epochs=3)]
                    cancelled = launch(http)
                    token = {"csrfmiddlewaretoken": http.cookies["csrftoken"]}
                    assert http.post(f"/labs/runs/{cancelled}/cancel/", data=token).status_code == 302
            wait_for(lambda: not Run.objects.filter(status__in=Run.ACTIVE).exists(), timeout=400, what="every run")
            with logged_in_http(client, owner, address) as http:
                events, end = asyncio.run(read_stream(address, http.cookies["sessionid"], runs[0]))
        finally:
            stop.set()
            ticker.join()
        logs = [gpu.log_path, default.log_path, *tmp_path.glob("daphne-*.log")]

    assert [e["seq"] for e in events] == list(range(1, end["seq"] + 1))
    for run in Run.objects.all():
        seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, run.last_seq + 1)), run
    assert set(Run.objects.filter(pk__in=runs).values_list("status", flat=True)) == {Run.Status.SUCCEEDED}
    assert Run.objects.filter(status=Run.Status.CANCELLED).count() == 2
    for path in logs:
        text = path.read_text(errors="replace")
        assert "database is locked" not in text and "deadlock detected" not in text, path
