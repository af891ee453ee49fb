"""Serving with TUNELAB_INFERENCE_BACKEND=openvino: /api/classify and /v1 answer at once from
torch, the export builds off the request path, and the same loaded model then answers through
OpenVINO (tests/mlcore/test_onnx_serving.py covers the export itself, its cache and fallbacks)."""

import json

import pytest

from mlcore import onnx_serving

pytest.importorskip("openvino")


def post(client, path, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def openvino_serving(settings, tmp_path, monkeypatch):
    settings.INFERENCE_BACKEND = "openvino"
    monkeypatch.setattr(onnx_serving, "exports_dir", lambda: tmp_path / "exports")
    return tmp_path / "exports"


def test_the_first_request_does_not_wait_for_the_export_and_later_ones_use_it(client, run, bearer, openvino_serving):
    from inference.serving import classifiers

    first = post(client, "/api/classify", {"run": run.pk, "texts": ["Love it.", "Broke at once."]}, **bearer)
    assert first.status_code == 200, first.content
    (key,) = classifiers.keys()
    classifier = classifiers.get(key, lambda: pytest.fail("reloaded")).classifier
    assert classifier.runtime is not None and not classifier.runtime.ready.is_set()  # answered by torch
    assert classifier.runtime.ready.wait(300) and classifier.runtime.error is None
    assert isinstance(classifier._fused, onnx_serving.CompiledDecoder)

    again = post(client, "/api/classify", {"run": run.pk, "texts": ["Love it.", "Broke at once."]}, **bearer)
    assert again.status_code == 200, again.content
    for before, after in zip(first.json()["predictions"], again.json()["predictions"], strict=True):
        for label, p in before["probs"].items():
            assert after["probs"][label] == pytest.approx(p, abs=0.02)
    chat = post(client, "/v1/chat/completions", {"model": f"run-{run.pk}", "messages": [{"role": "user", "content": "Meh."}]},
                **bearer)
    assert chat.status_code == 200, chat.content
    assert classifiers.loads == 1 and not classifier._fused.failed
    assert len(list(openvino_serving.glob("*/manifest.json"))) == 1


def test_the_settings_offer_the_backends_load_classifier_knows(settings):
    from mlcore.classify import BACKENDS

    assert set(settings.INFERENCE_BACKENDS) == set(BACKENDS)
