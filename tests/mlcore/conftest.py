"""Shared fixtures for the ML core tests: the real SmolLM2 tokenizer, the tiny model, one small
trained adapter. Session-scoped: loading is the slow part.

The first run dequantizes the bundled GGUF into var/models/ (~20 s); later runs reuse it.
"""

import json
import os
from pathlib import Path

import pytest
from filelock import FileLock  # comes with huggingface_hub

from mlcore.data import Dataset, load_bundled

# A default-lab adapter kept for the agreement floors (tests/fixtures/default-adapter/README.md).
DEFAULT_ADAPTER = Path(__file__).resolve().parent.parent / "fixtures" / "default-adapter"


@pytest.fixture(scope="session")
def tokenizer():
    from mlcore.registry import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def reviews():
    return load_bundled("reviews")


@pytest.fixture(scope="session")
def reviews_mixed():
    return load_bundled("reviews-mixed")


@pytest.fixture(scope="session")
def small_dataset(reviews):
    """A few real reviews per split: enough to train the tiny model for a few steps."""
    return Dataset("small", reviews.labels, reviews.train[:32], reviews.validation[:12], reviews.test[:24])


@pytest.fixture(scope="session")
def smollm2():
    from mlcore.registry import load_base

    return load_base("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def default_torch_labels(tmp_path_factory, reviews):
    """The float32 torch classifier's labels for DEFAULT_ADAPTER on the bundled test split: what the
    GGUF and OpenVINO exports must agree with. ~30 CPU-s to compute, so under pytest-xdist the
    first worker to need them writes them into the session's temporary folder (a new one every
    session: nothing stale is read) and the others read them there."""

    def compute():
        from mlcore.classify import load_classifier

        classifier = load_classifier(None, DEFAULT_ADAPTER, device="cpu")
        return [p.label for p in classifier.predict([e.text for e in reviews.test])]

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return compute()
    path = tmp_path_factory.getbasetemp().parent / "default-adapter-torch-labels.json"
    with FileLock(f"{path}.lock"):
        if not path.exists():
            path.write_text(json.dumps(compute()))
        return json.loads(path.read_text())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_dataset):
    """An adapter trained on the tiny model for a few steps (fast, non-trivial LoRA weights)."""
    from mlcore.train import train

    out = tmp_path_factory.mktemp("tiny-run")
    config = tiny_config(max_steps=4)
    events = []
    result = train(config, small_dataset, out, report=events.append)
    return result, events


def tiny_config(**overrides):
    from mlcore.config import TrainConfig

    settings = dict(base_model="tiny-test", dataset="small", learning_rate=1e-2, batch_size=4, epochs=1, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)
