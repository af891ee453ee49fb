"""The serving path: merged vs unmerged adapter, prefix cache vs full prompt, request batching,
and the per-process LRU cache of loaded classifiers."""

import threading
import time

import pytest

from inference.serving import ClassifierCache, Loaded

REVIEWS = [
    "Great value, works exactly as described.",
    "Stopped working after two days. Avoid.",
    "It is a phone case. It fits the phone.",
    "The colour is lovely but the zipper broke within a week, and support never answered my emails.",
    "ok",
    "Five stars! " * 40,
]


def assert_same_predictions(a, b, tol=1e-4):
    assert [p.label for p in a] == [p.label for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.probs.keys() == pb.probs.keys()
        assert max(abs(pa.probs[k] - pb.probs[k]) for k in pa.probs) < tol
        assert pa.truncated == pb.truncated


def random_lora(base_name, out_dir):
    """A LoRA adapter with random (non-zero) A and B on every attention and MLP projection:
    far from the identity, so merging or not really changes the computation."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from mlcore.registry import load_base

    torch.manual_seed(0)
    model, _ = load_base(base_name, device="cpu")
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # peft's random B is large for a model this small: keep outputs sane
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    peft_model.save_pretrained(out_dir)
    (out_dir / "labels.json").write_text(json.dumps(["positive", "negative", "neutral"]))
    (out_dir / "train_config.json").write_text(json.dumps({"base_model": base_name}))
    return out_dir


@pytest.mark.parametrize("base_name", ["tiny-test", pytest.param("smollm2-135m-instruct", marks=pytest.mark.slow)])
def test_merged_unmerged_and_prefix_cached_paths_predict_the_same(tmp_path, base_name):
    from mlcore.classify import load_classifier

    adapter = random_lora(base_name, tmp_path / "adapter")
    reviews = REVIEWS if base_name == "tiny-test" else REVIEWS[:4]
    served = load_classifier(base_name, adapter, merge=True, use_prefix_cache=True)
    reference = load_classifier(base_name, adapter, merge=False, use_prefix_cache=False)
    merged_no_cache = load_classifier(base_name, adapter, merge=True, use_prefix_cache=False)

    expected = reference.predict(reviews, batch_size=1)
    assert_same_predictions(served.predict(reviews, batch_size=4), expected)
    assert_same_predictions(merged_no_cache.predict(reviews, batch_size=4), expected)
    # The adapter matters: without it the model answers differently.
    base = load_classifier(base_name, None, labels=["positive", "negative", "neutral"])
    without = base.predict(reviews)
    assert any(abs(a.probs[k] - b.probs[k]) > 1e-3 for a, b in zip(without, expected, strict=True) for k in a.probs)


def test_requests_batched_together_predict_what_they_predict_alone(tiny_adapter):
    from mlcore.classify import load_classifier

    loaded = Loaded("k", load_classifier("tiny-test", tiny_adapter, merge=True), 0.0)
    alone = [loaded.predict([text])[0] for text in REVIEWS]
    calls_before = loaded.forward_calls

    results = {}
    with loaded.lock:  # hold the model busy so that every request below queues up
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, loaded.predict([REVIEWS[i]])[0]))
                   for i in range(len(REVIEWS))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(loaded._pending) < len(REVIEWS) and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)

    assert_same_predictions([results[i] for i in range(len(REVIEWS))], alone)
    assert loaded.forward_calls - calls_before == 1  # all six in one pass


def test_a_long_review_is_truncated_and_flagged(tiny_adapter):
    from mlcore.classify import load_classifier

    classifier = load_classifier("tiny-test", tiny_adapter)
    short, long = classifier.predict(["Fine.", "word " * 2000])
    assert not short.truncated and long.truncated


def test_the_cache_loads_each_model_once_and_evicts_the_least_recently_used():
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return f"classifier {name}"
        return load

    cache = ClassifierCache(2)
    assert cache.get("a", loader("a")).classifier == "classifier a"
    cache.get("b", loader("b"))
    cache.get("a", loader("a"))  # a is now the most recently used
    cache.get("c", loader("c"))  # evicts b
    assert cache.keys() == ["a", "c"]
    cache.get("a", loader("a"))
    assert loads == ["a", "b", "c"]
    cache.get("b", loader("b"))
    assert loads == ["a", "b", "c", "b"]


def test_concurrent_first_requests_load_a_model_once():
    loads = []

    def slow_load():
        loads.append(1)
        time.sleep(0.2)
        return "classifier"

    cache = ClassifierCache(2)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m", slow_load))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len({id(entry) for entry in got}) == 1


def test_the_cache_size_comes_from_settings(settings):
    from inference.serving import classifiers

    settings.CLASSIFIER_CACHE_SIZE = 1
    classifiers.get("x", lambda: "x")
    classifiers.get("y", lambda: "y")
    assert classifiers.keys() == ["y"]


def test_importing_the_app_loads_no_model():
    import subprocess
    import sys

    code = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup(); "
            "import inference.api, inference.views, inference.services, inference.baselines, sys; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
