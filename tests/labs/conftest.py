"""Fixtures for the labs tests: the catalog, tiny-model configs, runs in any state, and the
real stack (Celery gpu worker + Daphne) for the live tests.

Training in tests uses mlcore's tiny random model with the real tokenizer: a run of 16
examples takes a few seconds. Torch gets one thread: on a shared 2-core machine, two threads
spin against each other and make every step ~40x slower.
"""

import io
import os
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.test import override_settings

from labs.events import event_append
from labs.models import Lab, Run
from labs.services import build_config

TINY = dict(base_model="tiny-test", dataset="reviews", epochs=1, batch_size=8, train_limit=16,
            learning_rate=0.01, eval_every=0, max_length=128)
# Environment of every server process the labs tests start.
SERVER_ENV = dict(OMP_NUM_THREADS="1", TUNELAB_ALLOW_TEST_MODEL="1", TUNELAB_HEARTBEAT_INTERVAL="0.5")


@pytest.fixture(scope="session", autouse=True)
def artifacts_dir(tmp_path_factory):
    """Run artifacts go to a temporary folder, in this process and in the servers it starts."""
    path = tmp_path_factory.mktemp("artifacts")
    previous = os.environ.get("TUNELAB_ARTIFACTS_DIR")
    os.environ["TUNELAB_ARTIFACTS_DIR"] = str(path)
    with override_settings(ARTIFACTS_DIR=path, LABS_ALLOW_TEST_MODEL=True):
        yield path
    if previous is None:
        os.environ.pop("TUNELAB_ARTIFACTS_DIR", None)
    else:
        os.environ["TUNELAB_ARTIFACTS_DIR"] = previous


@pytest.fixture(autouse=True)
def _empty_gpu_queue():
    """Tasks enqueued by one test (on commit) must not reach a worker started by a later one."""
    yield
    purge_queues()


def purge_queues(*queues):
    from config.celery import app

    # The session's Redis by its URL (tests/plugins/redis_plugin.py), not the app's broker
    # setting: a test that points CELERY_BROKER_URL at a dead port still holds it while this
    # fixture tears down, and kombu would retry that port for ~12 s.
    with app.connection_for_write(url=os.environ["REDIS_URL"]) as conn:
        for queue in queues or ("gpu", "default", "export"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # a queue nobody declared yet
                pass


@pytest.fixture
def labs(db):
    call_command("load_labs", stdout=io.StringIO())
    return Lab.objects.all()


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_run(owner, *, status=Run.Status.QUEUED, lab=None, **overrides) -> Run:
    """A run row in any state, without enqueueing it."""
    fields = {key: overrides.pop(key) for key in list(overrides) if key in {f.name for f in Run._meta.fields}}
    run = Run.objects.create(owner=owner, lab=lab, config=build_config({**TINY, **overrides}), status=status, **fields)
    event_append(run_id=run.pk, type="status", payload={"status": "queued", "message": "Queued."}, notify=False)
    return run


@contextmanager
def logged_in_http(client, user, address):
    """An httpx client on a live server with `user`'s session and a CSRF token."""
    import httpx

    client.force_login(user)
    with httpx.Client(base_url=f"http://{address}", cookies={"sessionid": client.cookies["sessionid"].value},
                      headers={"Referer": f"http://{address}/"}, timeout=30) as http:
        http.get("/labs/")
        yield http


def session_cookie(client, user) -> str:
    client.force_login(user)
    return client.cookies["sessionid"].value
