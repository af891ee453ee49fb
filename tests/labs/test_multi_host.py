"""Workers on other hosts: a host shares only the database and Redis with the others.

Three "hosts" as separate processes, each with its own TUNELAB_VAR_DIR (nothing on disk in
common): GPU worker B starts a run and is killed mid-run after a checkpoint; its folder is
deleted as if the machine were gone; GPU worker C resumes the run from B's checkpoint (read from
the artifact store) and finishes it; then the web host, which never saw a file of the run, serves
it on the API and the playground and builds its GGUF download with its own export worker. One
database (the suite's: SQLite's shared file, or PostgreSQL under `make test-postgres`), one Redis.
"""

import io
import os
import shutil
import signal
import time
import zipfile

import pytest
from django.conf import settings as django_settings

from inference.models import ApiToken
from labs import storage
from labs.models import ArtifactChunk, ArtifactSet, Run
from labs.tasks import reap_runs
from tests.labs.conftest import SERVER_ENV, logged_in_http, make_run, purge_queues
from tests.labs.test_live_runs import wait_for
from tests.labs.test_reaper import STEPS, assert_resumed_once, sent_and_stepping, steps_recorded
from tests.servers import celery_worker, daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


def host_env(var) -> dict:
    """What a host of its own is given: its var dir, and the database and Redis every host shares
    (tests.servers.subprocess_env sets DATABASE_URL; REDIS_URL is the suite's). The secret key is
    the same on every web node (it signs the sessions); the workers need none but get it too."""
    return {**SERVER_ENV, "TUNELAB_VAR_DIR": str(var), "TUNELAB_ARTIFACTS_DIR": str(var / "runs"),
            "DJANGO_SECRET_KEY": django_settings.SECRET_KEY}


@pytest.fixture
def run(owner, settings):
    """30 steps, a checkpoint every 5; the reaper gives up on a worker after 3 s (it beats every 0.5 s)."""
    settings.RUN_CHECKPOINT_EVERY = 5
    settings.RUN_HEARTBEAT_TIMEOUT_S = 3
    purge_queues()
    yield make_run(owner, epochs=STEPS // 2, eval_every=100_000)
    purge_queues()


def test_a_run_started_on_one_worker_host_resumes_on_another_and_the_web_host_serves_and_exports_it(
        tmp_path, run, client, owner):
    hosts = {name: tmp_path / f"host-{name}" for name in ("b", "c", "web")}

    # Host B trains until a checkpoint is stored and a few steps more, then dies without a word.
    with celery_worker(tmp_path, queues="gpu", **host_env(hosts["b"])) as (process, _name):
        sent_and_stepping(run, process, past=0)
        wait_for(lambda: storage.current_set(run.pk, storage.CHECKPOINT), what="a stored checkpoint")
        assert (hosts["b"] / "runs" / f"run-{run.pk}" / "checkpoint" / "trainer_state.pt").is_file()
        wait_for(lambda: steps_recorded(run) >= 7 or process.poll() is not None, what="step 7")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    shutil.rmtree(hosts["b"])  # the machine is gone, and its disk with it
    # The newest checkpoint B stored (a busy machine may have let B store a later one before the kill).
    stored = storage.current_set(run.pk, storage.CHECKPOINT)
    assert stored is not None and stored.backend == "database" and stored.attempt == 1 and "trainer_state.pt" in stored.manifest
    assert ArtifactChunk.objects.filter(artifact_set=stored).exists()

    # Host C: the reaper puts the run back in the queue once B's heartbeat is overdue; C resumes it.
    time.sleep(django_settings.RUN_HEARTBEAT_TIMEOUT_S + 1)
    assert reap_runs.apply().get() == [run.pk]
    with celery_worker(tmp_path, queues="gpu", **host_env(hosts["c"])):
        wait_for(lambda: Run.objects.filter(pk=run.pk).exclude(status__in=Run.ACTIVE).exists(), timeout=180,
                 what="the run to finish on host C")
    assert_resumed_once(run, max_lost=5)
    run.refresh_from_db()
    assert run.worker_host.startswith("test-") and "Resuming from the checkpoint at step" in " ".join(
        e.payload.get("message", "") for e in run.events.filter(type="log"))
    adapter = storage.current_set(run.pk, storage.ADAPTER)
    assert adapter is not None and adapter.attempt == 2
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.json", "prompt.json"} <= set(adapter.manifest)
    assert not ArtifactSet.objects.filter(run=run, kind=storage.CHECKPOINT).exists()  # finished: nothing to resume
    shutil.rmtree(hosts["c"])  # C is gone too: the web host must find everything in the store

    # The web host: Daphne and its export worker on one var dir that no worker ever wrote.
    web = host_env(hosts["web"])
    _, raw = ApiToken.issue(user=owner, name="multi-host")
    with daphne_server(tmp_path, **web) as address, celery_worker(tmp_path, queues="export", **web), \
            logged_in_http(client, owner, address) as http:
        # (The first request builds the tiny model in this host's var/models and loads it: slow on busy cores.)
        answer = http.post("/api/classify", json={"run": run.pk, "texts": ["Broke in a day."]},
                           headers={"Authorization": f"Bearer {raw}"}, timeout=240)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["label"] in ("positive", "negative", "neutral")
        page = http.post("/playground/", data={"target": f"run-{run.pk}", "text": "Arrived broken.",
                                               "csrfmiddlewaretoken": http.cookies["csrftoken"]})
        assert page.status_code == 200 and 'id="prediction"' in page.text, page.text[-2000:]
        cache = hosts["web"] / "runs" / "cache" / f"run-{run.pk}"
        assert len(list(cache.glob("adapter-*/adapter_model.safetensors"))) == 1  # fetched into this host's cache, once

        # The cache can be deleted at any time: the next request fetches the adapter again.
        shutil.rmtree(hosts["web"] / "runs" / "cache")
        again = http.post("/api/classify", json={"run": run.pk, "texts": ["Works well."]},
                          headers={"Authorization": f"Bearer {raw}"})
        assert again.status_code == 200, again.text
        assert len(list(cache.glob("adapter-*/adapter_model.safetensors"))) == 1

        built = http.post(f"/labs/runs/{run.pk}/gguf/", data={"quant": "q8_0", "csrfmiddlewaretoken": http.cookies["csrftoken"]})
        assert built.status_code in (200, 302), built.text[-2000:]
        wait_for(lambda: 'data-state="ready"' in http.get(f"/labs/runs/{run.pk}/gguf/").text, timeout=240,
                 what="the GGUF bundle")
        bundle = http.get(f"/labs/runs/{run.pk}/gguf/q8_0.zip")
        assert bundle.status_code == 200
        assert any(name.endswith(".gguf") for name in zipfile.ZipFile(io.BytesIO(bundle.content)).namelist())
