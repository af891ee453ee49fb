"""Rounding the LoRA-changed tensors of an export: GPTQ or the nearest level (the 4-bit lab compares
them), and check_export's figures for one export, on the tiny model's real adapter."""

import numpy as np
import pytest
import torch

from mlcore import gguf_export
from mlcore.gguf_export import ExportError


def tensors(path):
    import gguf

    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def tiny_adapter(tiny_run):
    return tiny_run[0].out_dir


@pytest.fixture(scope="module")
def q4_files(tiny_adapter, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rounding")
    return {rounding: gguf_export.export_merged(tiny_adapter, folder / f"{rounding}.gguf", quant="q4_0", rounding=rounding)
            for rounding in gguf_export.ROUNDINGS}


def test_an_unknown_rounding_names_the_choices_and_writes_nothing(tiny_adapter, tmp_path):
    with pytest.raises(ExportError, match="gptq, nearest"):
        gguf_export.export_merged(tiny_adapter, tmp_path / "x.gguf", quant="q4_0", rounding="stochastic")
    assert not list(tmp_path.iterdir())


def test_only_the_tensors_lora_changed_are_rounded_differently(tiny_adapter, q4_files):
    from mlcore.registry import TINY_SHAPE

    gptq, nearest = tensors(q4_files["gptq"].path), tensors(q4_files["nearest"].path)
    adapted = {name for name in gptq if ".attn_" in name or ".ffn_" in name} - {
        name for name in gptq if name.endswith("norm.weight")}
    assert len(adapted) == 7 * TINY_SHAPE["num_hidden_layers"]  # every projection of the tiny adapter's blocks
    differ = {name for name in gptq if not np.array_equal(np.asarray(gptq[name].data), np.asarray(nearest[name].data))}
    assert differ and differ <= adapted, differ - adapted
    assert len(differ) >= len(adapted) - 2  # GPTQ moved (nearly) every changed matrix
    assert {t.tensor_type.name for n, t in gptq.items() if n in adapted} == {"Q4_0"}
    assert q4_files["gptq"].size == q4_files["nearest"].size  # same blocks, other levels


def test_gptq_keeps_the_changed_layers_outputs_closer_than_nearest_rounding(tiny_adapter, q4_files):
    """The output error on the calibration inputs, E|x·(W - W_rounded)|² = tr(D H Dᵀ), summed over
    the changed layers: what GPTQ minimises, and what nearest rounding ignores."""
    import gguf

    from mlcore.prompt import PromptFormat

    model, tokenizer, _, labels = gguf_export.merged_model(tiny_adapter)
    state = model.state_dict()
    adapted = gguf_export.adapted_weights(tiny_adapter)
    hessians = gguf_export.calibration_hessians(model, tokenizer, labels, adapted, PromptFormat.for_adapter(tiny_adapter, labels))
    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    errors = {}
    for rounding, result in q4_files.items():
        found = tensors(result.path)
        total = 0.0
        for hf_name in adapted:
            if hf_name.endswith(("q_proj.weight", "k_proj.weight")):
                continue  # rows permuted for llama.cpp; the other five are compared as they are
            tensor = found[name_map.get_name(hf_name, try_suffixes=(".weight",))]
            rounded = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(state[hf_name].shape)
            delta = state[hf_name].double() - torch.from_numpy(rounded).double()
            total += float(torch.trace(delta @ hessians[hf_name] @ delta.T))
        errors[rounding] = total
    assert errors["gptq"] < 0.8 * errors["nearest"], errors


def test_check_export_counts_the_labels_an_export_changes(tiny_adapter, small_dataset, tokenizer, tmp_path):
    from mlcore.classify import load_classifier
    from mlcore.gguf_classify import check_export
    from mlcore.metrics import compute_metrics

    examples = small_dataset.test
    reference = [p.label for p in load_classifier(None, tiny_adapter, device="cpu").predict([e.text for e in examples])]
    reference[0] = next(label for label in small_dataset.labels if label != reference[0])  # one sure disagreement
    row = check_export(tiny_adapter, examples, reference, quant="q8_0", rounding="nearest", work_dir=tmp_path,
                       tokenizer=tokenizer)
    assert not list(tmp_path.iterdir())  # the file is gone, the figures stay
    assert (row["quant"], row["rounding"]) == ("q8_0", "nearest") and row["size"] > 0
    assert 0 in {c["i"] for c in row["changed"]}
    labels = list(reference)
    for c in row["changed"]:
        assert labels[c["i"]] != c["predicted"] and 0 < c["confidence"] <= 1
        labels[c["i"]] = c["predicted"]
    assert row["agreement"] == pytest.approx(1 - len(row["changed"]) / len(examples))
    metrics = compute_metrics([e.label for e in examples], labels, small_dataset.labels)
    assert (row["macro_f1"], row["accuracy"]) == (pytest.approx(metrics["macro_f1"]), pytest.approx(metrics["accuracy"]))
