"""The base model registry: visible choices, cached dequantization, clear failures."""

import json
import threading

import pytest

from mlcore import registry
from mlcore.paths import models_dir

REAL_CACHE = models_dir() / "smollm2-135m-instruct"  # the repo's var/, before any test moves it


def test_the_default_model_is_listed_first_and_the_tiny_model_is_hidden():
    names = [spec.name for spec in registry.user_models()]
    assert names[0] == "smollm2-135m-instruct"
    assert "qwen2.5-0.5b-instruct" in names
    assert "tiny-test" not in names


def test_pick_device_falls_back_to_cpu_float32_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert registry.pick_device() == ("cpu", torch.float32)


def test_the_dequantized_cache_is_a_plain_checkpoint(tokenizer):
    cache = models_dir() / "smollm2-135m-instruct"
    config = json.loads((cache / "config.json").read_text())
    assert "quantization_config" not in config  # trainers refuse a model marked "quantized with GGUF"
    assert (cache / "model.safetensors").exists() and (cache / "tokenizer.json").exists()


def test_a_missing_hub_model_fails_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_QWEN_PATH", str(tmp_path / "no-such-model"))
    with pytest.raises(registry.ModelNotAvailable, match="never downloads"):
        registry.load_base("qwen2.5-0.5b-instruct")


def test_an_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="unknown base model"):
        registry.load_base("gpt-5")


def test_concurrent_first_loads_build_the_cache_once(monkeypatch, tmp_path, tokenizer):
    # A fresh var dir that borrows the real SmolLM2 cache (the tiny model copies its tokenizer).
    monkeypatch.setenv("TUNELAB_VAR_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m-instruct").symlink_to(REAL_CACHE)
    results, errors = [], []

    def load():
        try:
            results.append(registry.model_path("tiny-test"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m-instruct", "tiny-test"]


def test_the_tiny_model_is_the_same_every_time_it_is_built(tmp_path, monkeypatch):
    import torch

    first, _ = registry.load_base("tiny-test", device="cpu")
    monkeypatch.setenv("TUNELAB_VAR_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m-instruct").symlink_to(REAL_CACHE)
    rebuilt, _ = registry.load_base("tiny-test", device="cpu")
    for (name, a), (_, b) in zip(first.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

