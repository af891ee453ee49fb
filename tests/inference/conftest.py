"""Fixtures for the inference tests: a tiny adapter trained once per session, runs that serve
it, API tokens, and the environment of live servers.

The adapter is mlcore's tiny random model (2 layers, real SmolLM2 tokenizer) fine-tuned for a
few steps: the real code path (LoRA, merge, prefix cache, label scoring) in milliseconds.
Torch gets one thread: on a shared 2-core machine two threads spin against each other.
"""

import os
import shutil

import pytest
from django.test import override_settings

from labs.models import Run
from labs.services import build_config
from mlcore.metrics import compute_metrics
from tests.fakes.openai_server import fake_openai  # noqa: F401 - the fixture, for the baseline tests

TINY = dict(base_model="tiny-test", dataset="reviews", epochs=1, batch_size=8, train_limit=16,
            learning_rate=0.02, eval_every=0, max_length=128)
SERVER_ENV = dict(OMP_NUM_THREADS="1", TUNELAB_ALLOW_TEST_MODEL="1", TUNELAB_INFERENCE_THREADS="1")


@pytest.fixture(scope="session", autouse=True)
def inference_env(tmp_path_factory):
    """Artifacts in a temporary folder and the test model allowed, here and in the servers the
    tests start; one torch thread."""
    import torch

    path = tmp_path_factory.mktemp("artifacts")
    saved = {name: os.environ.get(name) for name in ("TUNELAB_ARTIFACTS_DIR",)}
    os.environ["TUNELAB_ARTIFACTS_DIR"] = str(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with override_settings(ARTIFACTS_DIR=path, LABS_ALLOW_TEST_MODEL=True):
        yield path
    torch.set_num_threads(threads)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_classifier_cache():
    """Each test starts with an empty serving cache (a run id can be reused across tests)."""
    from inference.serving import classifiers

    classifiers.clear()
    yield
    classifiers.clear()


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory):
    """A LoRA adapter for the tiny model, trained for a few steps (adapter + labels + config)."""
    from mlcore.config import TrainConfig
    from mlcore.data import load_bundled
    from mlcore.train import train

    out = tmp_path_factory.mktemp("tiny-adapter")
    config = TrainConfig(**{**TINY, "max_steps": 4, "device": "cpu"})
    train(config, load_bundled("reviews"), out)
    return out


@pytest.fixture
def make_run(db, tiny_adapter):
    """A run row in any state; a succeeded fine-tune gets the tiny adapter as its artifact."""

    def make(owner, *, status=Run.Status.SUCCEEDED, mode=Run.Mode.FINETUNE, with_adapter=True, **fields) -> Run:
        metrics = None
        if status == Run.Status.SUCCEEDED:
            labels = ["positive", "negative", "neutral"]
            metrics = {"test": compute_metrics(labels, ["positive", "neutral", "neutral"], labels), "validation": [], "train": {}}
        run = Run.objects.create(owner=owner, config=build_config(TINY), status=status, mode=mode, metrics=metrics, **fields)
        if with_adapter and status == Run.Status.SUCCEEDED and mode == Run.Mode.FINETUNE:
            shutil.rmtree(run.artifact_dir, ignore_errors=True)
            shutil.copytree(tiny_adapter, run.artifact_dir, ignore=shutil.ignore_patterns("checkpoint*"))
        return run

    return make


@pytest.fixture
def run(make_run, owner):
    return make_run(owner)


@pytest.fixture
def token(owner):
    """(ApiToken row, raw token) for the owner."""
    from inference.models import ApiToken

    return ApiToken.issue(user=owner, name="test")


@pytest.fixture
def bearer(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token[1]}"}
