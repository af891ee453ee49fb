"""The OpenVINO serving path (mlcore.onnx_serving): the real exporter, the real runtime, the
tiny test model; and the agreement floor on the stored default-lab adapter (slow)."""

import logging
import shutil
import time

import numpy as np
import pytest

from mlcore import onnx_serving
from mlcore.classify import load_classifier
from mlcore.fused import FusedDecoder
from tests.mlcore.conftest import DEFAULT_ADAPTER

pytest.importorskip("openvino")

TEXTS = ["Great product, works well.", "bad", "It was fine I guess, nothing special about it at all.",
         "The strap broke after two days, but the seller replaced it without any fuss."]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exports go to a folder of this module's own (var/ stays untouched)."""
    path = tmp_path_factory.mktemp("exports")
    patch = pytest.MonkeyPatch()
    patch.setattr(onnx_serving, "exports_dir", lambda: path)
    yield path
    patch.undo()


@pytest.fixture(scope="module")
def served(exports):
    """The tiny model loaded for serving with backend="openvino": (classifier, seconds until
    load_classifier returned, whether the runtime was ready by then, torch's predictions)."""
    tick = time.perf_counter()
    classifier = load_classifier("tiny-test", backend="openvino")
    returned_s = time.perf_counter() - tick
    ready_at_return = classifier.runtime.ready.is_set()
    torch_predictions = classifier.predict(TEXTS, batch_size=4)  # served by torch while the export builds
    assert classifier.runtime.ready.wait(300), "the export did not finish in 5 minutes"
    return classifier, returned_s, ready_at_return, torch_predictions


def test_load_returns_before_the_export_and_torch_serves_meanwhile(served):
    classifier, _returned_s, ready_at_return, torch_predictions = served
    assert not ready_at_return  # the export (a child process: seconds) was not waited for
    assert [p.label for p in torch_predictions] and all(p.label in classifier.labels for p in torch_predictions)


def test_the_compiled_decoder_takes_over_with_the_same_answers(served, exports):
    classifier, _, _, torch_predictions = served
    assert classifier.runtime.error is None
    assert isinstance(classifier._fused, onnx_serving.CompiledDecoder)
    assert isinstance(classifier._fused.fallback, FusedDecoder)
    compiled = classifier.predict(TEXTS, batch_size=4)
    one_by_one = [classifier.predict([text], batch_size=1)[0] for text in TEXTS]
    for before, after, alone in zip(torch_predictions, compiled, one_by_one, strict=True):
        for label in classifier.labels:  # bf16 on CPUs that have it: probabilities within ~1%
            assert after.probs[label] == pytest.approx(before.probs[label], abs=0.02)
            assert alone.probs[label] == pytest.approx(after.probs[label], abs=0.01)  # padding changes nothing
    assert not classifier._fused.failed
    manifest = next(exports.glob("*/manifest.json"))
    assert '"base_model": "tiny-test"' in manifest.read_text()


def test_single_reviews_of_different_lengths_reach_the_runtime_in_one_shape_with_the_same_answer(served):
    import torch

    classifier = served[0]
    compiled = classifier._fused
    widths = []
    for text in TEXTS:
        rows, _ = classifier._encode([text], classifier.max_text_tokens)
        widths.append(len(rows[0]))
        classifier.predict([text], batch_size=1)
        assert list(compiled.request.get_input_tensor(0).shape) == [1, onnx_serving.single_row_width(widths[-1])]
    assert len(set(widths)) > 1 and {onnx_serving.single_row_width(w) for w in widths} == {onnx_serving.SINGLE_ROW_WIDTH}
    assert onnx_serving.single_row_width(33) == 48 and onnx_serving.single_row_width(48) == 48

    # Padded on the left and masked, a row computes what it computes alone (the torch decoder, exact maths).
    rows, _ = classifier._encode([TEXTS[0]], classifier.max_text_tokens)
    input_ids = torch.tensor(rows)
    prefix = classifier._prefix_keys_values()
    key_mask = torch.ones(1, len(classifier._prefix_ids) + input_ids.shape[1], dtype=torch.long)
    position_ids = torch.arange(len(classifier._prefix_ids), key_mask.shape[1])[None]
    padded = onnx_serving.pad_left(input_ids, key_mask, position_ids, 32)
    assert padded[0].shape == (1, 32) and padded[1].shape == (1, key_mask.shape[1] + 32 - input_ids.shape[1])
    with torch.inference_mode():
        alone = compiled.fallback.last_hidden(input_ids, key_mask, position_ids, prefix)
        in_padding = compiled.fallback.last_hidden(*padded, prefix)
    torch.testing.assert_close(in_padding, alone, rtol=1e-4, atol=1e-4)


def test_the_served_graph_computes_what_the_fused_decoder_computes():
    import torch

    fused = load_classifier("tiny-test")._fused
    served = onnx_serving._ServedDecoder.__new__(onnx_serving._ServedDecoder)
    served.__dict__.update(fused.__dict__)  # the same fused weights, the export's two steps
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (3, 6), generator=generator)
    key_mask = torch.ones(3, 11, dtype=torch.long)
    key_mask[0, 5:8] = 0  # a left-padded row
    position_ids = (key_mask.cumsum(-1) - 1).clamp(min=0)[:, 5:]
    shape = (1, fused.n_kv_heads, 5, fused.head_dim)
    prefix = [(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)) for _ in fused.layers]
    with torch.inference_mode():
        expected = fused.last_hidden(input_ids, key_mask, position_ids, prefix)
        got = served.last_hidden(input_ids, key_mask, position_ids, prefix)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_export_fuses_attention_and_takes_the_prefix_per_layer(served, exports):
    import openvino as ov

    classifier = served[0]
    model = ov.Core().read_model(str(classifier._fused.model_file))
    layers = len(classifier._fused.fallback.layers)
    assert [port.get_any_name() for port in model.inputs] == onnx_serving.input_names(layers)
    attention = [op for op in model.get_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    assert len(attention) == layers  # rank 4 (not grouped-query's rank 5): the CPU plugin fuses it
    assert all(op.get_input_partial_shape(0).rank.get_length() == 4 for op in attention)


def test_a_second_load_reuses_the_cached_export(served, exports):
    before = sorted(p.name for p in exports.iterdir())
    classifier = load_classifier("tiny-test", backend="openvino")
    assert classifier.runtime.ready.wait(60)
    assert classifier.runtime.error is None and isinstance(classifier._fused, onnx_serving.CompiledDecoder)
    assert sorted(p.name for p in exports.iterdir()) == before  # nothing built again


def test_the_export_key_follows_the_adapter_content(tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(DEFAULT_ADAPTER, adapter)
    key = onnx_serving.export_key("smollm2-135m-instruct", adapter)
    assert onnx_serving.export_key("smollm2-135m-instruct", adapter) == key
    (adapter / "labels.json").write_text('["a", "b"]')  # labels live in the prompt, not in the graph
    assert onnx_serving.export_key("smollm2-135m-instruct", adapter) == key
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # a retrained adapter: other weights
    weights.write_bytes(bytes(data))
    assert onnx_serving.export_key("smollm2-135m-instruct", adapter) != key
    assert onnx_serving.export_key("tiny-test", None) != onnx_serving.export_key("smollm2-135m-instruct", None)


def test_a_failing_export_leaves_torch_serving_and_says_why(exports, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("the export exited with 1: out of memory")

    monkeypatch.setattr(onnx_serving, "ensure_export", broken)
    with caplog.at_level(logging.WARNING, logger="mlcore.onnx_serving"):
        classifier = load_classifier("tiny-test", backend="openvino")
        assert classifier.runtime.ready.wait(30)
    assert "out of memory" in classifier.runtime.error
    assert isinstance(classifier._fused, FusedDecoder)
    assert "serving with torch" in caplog.text and "out of memory" in caplog.text
    assert [p.label for p in classifier.predict(TEXTS[:2])]


def test_a_missing_runtime_is_logged_and_torch_serves(monkeypatch, caplog):
    monkeypatch.setattr(onnx_serving, "available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mlcore.onnx_serving"):
        classifier = load_classifier("tiny-test", backend="openvino")
    assert classifier.runtime is None and isinstance(classifier._fused, FusedDecoder)
    assert "openvino is not installed" in caplog.text


def test_a_runtime_that_fails_mid_service_hands_back_to_torch(served, caplog):
    classifier, _, _, torch_predictions = served
    compiled = classifier._fused
    real_request = compiled.request

    class Broken:
        def infer(self, feed):
            raise RuntimeError("device lost")

    compiled.request = Broken()
    try:
        with caplog.at_level(logging.ERROR, logger="mlcore.onnx_serving"):
            again = classifier.predict(TEXTS, batch_size=4)
        assert compiled.failed and "serving with torch from now on" in caplog.text
        for torch_pred, fallback in zip(torch_predictions, again, strict=True):  # torch's own numbers again
            assert fallback.probs == pytest.approx(torch_pred.probs, abs=1e-5)
    finally:
        compiled.request, compiled.failed = real_request, False


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'onnx'.*torch, openvino"):
        load_classifier("tiny-test", backend="onnx")


# The floor: the served runtime agrees with the float32 torch classifier on >= 99% of the
# bundled test split. Measured here: 100% (bf16, AMX) of 426; float32 with float16 weights 99.8%.
@pytest.mark.slow
def test_the_default_adapter_served_by_openvino_agrees_with_torch(exports, reviews, default_torch_labels):
    texts = [e.text for e in reviews.test]
    torch_labels = default_torch_labels  # the float32 torch classifier's, shared with the GGUF floors
    classifier = load_classifier(None, DEFAULT_ADAPTER, backend="openvino")
    assert classifier.runtime.ready.wait(900), "the export did not finish in 15 minutes"
    assert classifier.runtime.error is None and isinstance(classifier._fused, onnx_serving.CompiledDecoder)
    labels = [p.label for p in classifier.predict(texts)]
    agreement = np.mean([a == b for a, b in zip(labels, torch_labels, strict=True)])
    assert agreement >= 0.99, f"{agreement:.3f} of {len(texts)} test labels agree ({classifier._fused.precision})"
    assert len(set(torch_labels)) > 1
    # One review per call, as the API serves them: padded to a fixed width (SINGLE_ROW_WIDTH).
    alone = [classifier.predict([text], batch_size=1)[0].label for text in texts[:200]]
    agreement = np.mean([a == b for a, b in zip(alone, torch_labels, strict=False)])
    assert agreement >= 0.99, f"one at a time: {agreement:.3f} of 200 test labels agree"


def test_a_malformed_build_niceness_stops_the_build_with_the_setting_named(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TUNELAB_EXPORT_NICE", "-5")
    with pytest.raises(SystemExit):
        onnx_serving.main(["build", "--base", "tiny-test", "--out", str(tmp_path / "out")])
    assert "TUNELAB_EXPORT_NICE must be a whole number from 0 to 19, not '-5'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
