"""GGUF export: llama.cpp's names, shapes, types and metadata; the adapter alone; the Ollama
template; atomic writes; and (slow) the default model exported, read back by transformers' GGUF
loader, agreeing with the torch classifier on the bundled test split."""

import json
import shutil

import numpy as np
import pytest

from mlcore import gguf_export
from mlcore.gguf_export import ExportError
from tests.mlcore.conftest import DEFAULT_ADAPTER

LLAMA_BLOCK_TENSORS = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]


def read(path):
    import gguf

    reader = gguf.GGUFReader(path)
    return reader, {t.name: t for t in reader.tensors}


def field(reader, key):
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def tiny_adapter(tiny_run):
    return tiny_run[0].out_dir


@pytest.fixture(scope="module")
def tiny_q8(tiny_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "tiny-q8_0.gguf"
    return gguf_export.export_merged(tiny_adapter, out, quant="q8_0")


# --- bad input ----------------------------------------------------------------------------------


def test_an_unknown_quant_lists_the_choices(tiny_adapter, tmp_path):
    with pytest.raises(ExportError) as caught:
        gguf_export.export_merged(tiny_adapter, tmp_path / "x.gguf", quant="q3_x")
    assert "q3_x" in str(caught.value) and "f16, q8_0" not in str(caught.value)  # default first
    for quant in ("q8_0", "f16", "q4_0"):
        assert quant in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(gguf_export.k_quant_tool() is not None, reason="llama-quantize is installed here")
def test_a_k_quant_without_llama_quantize_says_what_is_missing():
    with pytest.raises(ExportError, match="llama-quantize"):
        gguf_export.check_quant("q4_k_m")
    assert "q4_k_m" not in gguf_export.available_quants()


@pytest.mark.parametrize("missing", gguf_export.ADAPTER_FILES)
def test_an_adapter_directory_missing_a_file_names_it(tiny_adapter, tmp_path, missing):
    broken = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, broken)
    (broken / missing).unlink()
    with pytest.raises(ExportError, match=missing):
        gguf_export.export_merged(broken, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous export")

    def broken_metadata(writer):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        gguf_export._write_atomic(out, broken_metadata, {"x": (np.zeros(4, np.float32), "F32")})
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


# --- the merged model's file -------------------------------------------------------------------


def test_the_file_uses_llama_cpp_names_shapes_and_types(tiny_q8):
    from mlcore.registry import TINY_SHAPE

    reader, tensors = read(tiny_q8.path)
    layers, hidden, ffn = TINY_SHAPE["num_hidden_layers"], TINY_SHAPE["hidden_size"], TINY_SHAPE["intermediate_size"]
    kv = TINY_SHAPE["num_key_value_heads"] * TINY_SHAPE["head_dim"]
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(layers) for name in LLAMA_BLOCK_TENSORS
    }
    assert set(tensors) == expected  # tied embeddings: no output.weight
    # ggml lists shapes fastest dimension first: [in, out]
    assert list(tensors["blk.0.attn_q.weight"].shape) == [hidden, TINY_SHAPE["num_attention_heads"] * TINY_SHAPE["head_dim"]]
    assert list(tensors["blk.1.attn_k.weight"].shape) == [hidden, kv]
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [ffn, hidden]
    assert list(tensors["token_embd.weight"].shape) == [hidden, 49152]
    for name, tensor in tensors.items():
        assert tensor.tensor_type.name == ("F32" if name.endswith("norm.weight") else "Q8_0"), name


def test_the_file_carries_llama_hyperparameters_tokenizer_and_labels(tiny_q8, tokenizer):
    from mlcore.registry import TINY_SHAPE

    reader, _ = read(tiny_q8.path)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.type") == "model"
    assert field(reader, "general.file_type") == 7  # LlamaFileType.MOSTLY_Q8_0
    assert field(reader, "llama.block_count") == TINY_SHAPE["num_hidden_layers"]
    assert field(reader, "llama.embedding_length") == TINY_SHAPE["hidden_size"]
    assert field(reader, "llama.feed_forward_length") == TINY_SHAPE["intermediate_size"]
    assert field(reader, "llama.attention.head_count") == TINY_SHAPE["num_attention_heads"]
    assert field(reader, "llama.attention.head_count_kv") == TINY_SHAPE["num_key_value_heads"]
    assert field(reader, "llama.rope.freq_base") == pytest.approx(100000.0)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field(reader, "llama.context_length") == 8192
    assert field(reader, "llama.vocab_size") == 49152
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 49152 and tokens[tokenizer.convert_tokens_to_ids("positive")] == "positive"
    assert len(field(reader, "tokenizer.ggml.merges")) > 40000
    assert len(field(reader, "tokenizer.ggml.token_type")) == 49152
    assert field(reader, "tokenizer.ggml.bos_token_id") == 1
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert field(reader, "tokenizer.ggml.padding_token_id") == tokenizer.pad_token_id
    assert "<|im_start|>" in field(reader, "tokenizer.chat_template")
    assert field(reader, gguf_export.LABELS_KEY) == ["positive", "negative", "neutral"]


def test_q_and_k_rows_are_permuted_and_transformers_gguf_loader_undoes_it(tiny_adapter, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from mlcore.registry import TINY_SHAPE

    state = gguf_export.merged_model(tiny_adapter)[0].state_dict()
    out = gguf_export.export_merged(tiny_adapter, tmp_path / "tiny-f16.gguf", quant="f16")
    _, tensors = read(out.path)
    k = np.asarray(tensors["blk.0.attn_k.weight"].data, dtype=np.float32)
    original = state["model.layers.0.self_attn.k_proj.weight"].numpy()
    assert not np.allclose(k, original, atol=1e-2)  # llama.cpp's row order differs...
    np.testing.assert_allclose(k, gguf_export._permute(original, TINY_SHAPE["num_key_value_heads"]), atol=2e-3)
    # ...and transformers' GGUF loader reads every tensor back to the merged weights.
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.path.name, dtype=torch.float32).state_dict()
    for name, tensor in state.items():
        if name != "lm_head.weight":
            torch.testing.assert_close(loaded[name], tensor, atol=2e-3, rtol=1e-3, msg=name)


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "f16"])
def test_the_tensor_data_size_is_what_the_bits_per_weight_predict(tiny_adapter, tmp_path, quant):
    out = gguf_export.export_merged(tiny_adapter, tmp_path / f"{quant}.gguf", quant=quant)
    reader, tensors = read(out.path)
    # The tiny model's tensors are smaller than its tokenizer: compare the tensor data section
    # here (the slow test checks a whole default-model file).
    assert out.size - reader.data_offset == pytest.approx(predicted_bytes(tensors, quant), rel=0.01)


BITS = {"F32": 32.0, "F16": 16.0, "Q8_0": 8.5, "Q4_0": 4.5, "Q4_1": 5.0}


def predicted_bytes(tensors, quant, kept=None) -> float:
    """Elements x nominal bits per weight: 1-D F32; 2-D at the quant's bits (token_embd at 8.5 for
    q4_0); `kept` (name -> type): tensors copied from the packaged base, at their own type."""
    kept = kept or {}
    nominal = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[quant]
    total = 0.0
    for name, tensor in tensors.items():
        kind = kept.get(name) or ("F32" if len(tensor.shape) == 1 else nominal)
        if quant == "q4_0" and name == "token_embd.weight" and kind == "Q4_0":
            kind = "Q8_0"
        total += int(np.prod(tensor.shape)) * BITS[kind] / 8
    return total


HF_TO_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def adapted_gguf_names(adapter_dir, block_count) -> set[str]:
    """From the adapter's own peft config: the llama.cpp names of the weights LoRA changed."""
    peft_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    blocks = peft_config["layers_to_transform"] or range(block_count)
    return {f"blk.{i}.{HF_TO_GGUF[m]}.weight" for i in blocks for m in peft_config["target_modules"]}


def test_the_adapter_alone_has_llama_cpp_lora_names_shapes_and_alpha(tiny_adapter, tmp_path):
    from safetensors.numpy import load_file

    from mlcore.registry import TINY_SHAPE

    peft_config = json.loads((tiny_adapter / "adapter_config.json").read_text())
    out = gguf_export.export_adapter(tiny_adapter, tmp_path / "adapter.gguf")
    reader, tensors = read(out.path)
    assert field(reader, "general.type") == "adapter"
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "adapter.type") == "lora"
    assert field(reader, "adapter.lora.alpha") == pytest.approx(peft_config["lora_alpha"])
    layers, r, hidden = TINY_SHAPE["num_hidden_layers"], peft_config["r"], TINY_SHAPE["hidden_size"]
    modules = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(tensors) == {f"blk.{i}.{m}.weight.{ab}" for i in range(layers) for m in modules for ab in ("lora_a", "lora_b")}
    assert not any(name.startswith(("output", "token_embd")) for name in tensors)
    # llama.cpp checks: a.ne[0] == W.ne[0] (in), b.ne[1] == W.ne[1] (out), a.ne[1] == b.ne[0] == r
    assert list(tensors["blk.0.ffn_down.weight.lora_a"].shape) == [TINY_SHAPE["intermediate_size"], r]
    assert list(tensors["blk.0.ffn_down.weight.lora_b"].shape) == [r, hidden]
    weights = load_file(tiny_adapter / "adapter_model.safetensors")
    a_key = next(k for k in weights if "layers.1.mlp.up_proj.lora_A" in k)
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.ffn_up.weight.lora_a"].data), weights[a_key])
    b_key = next(k for k in weights if "layers.1.self_attn.q_proj.lora_B" in k)
    q_b = np.asarray(tensors["blk.1.attn_q.weight.lora_b"].data)
    np.testing.assert_array_equal(q_b, gguf_export._permute(weights[b_key], TINY_SHAPE["num_attention_heads"]))


# --- Ollama ---------------------------------------------------------------------------------------


def render_go_template(template: str, system: str, prompt: str) -> str:
    """Ollama fills {{ .System }} and {{ .Prompt }}; nothing else may be left to fill."""
    text = template.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt)
    assert "{{" not in text
    return text


def parse_modelfile(text: str) -> dict:
    import re

    found = {key: value for key, value in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', text, re.S | re.M)}
    found["FROM"] = re.search(r"^FROM (.+)$", text, re.M).group(1)
    found["PARAMETER"] = re.findall(r"^PARAMETER (\w+) (.+)$", text, re.M)
    return found


def test_the_modelfile_template_renders_the_training_prompt_tokens(tokenizer, reviews):
    from mlcore.prompt import render_prompt

    labels = reviews.labels
    parsed = parse_modelfile(gguf_export.modelfile("run-1-q8_0.gguf", tokenizer, labels))
    assert parsed["FROM"] == "./run-1-q8_0.gguf"
    for example in reviews.test[:20]:
        ours = render_prompt(tokenizer, example.text, labels)
        theirs = render_go_template(parsed["TEMPLATE"], parsed["SYSTEM"], example.text.strip())
        assert tokenizer(theirs, add_special_tokens=False)["input_ids"] == tokenizer(ours, add_special_tokens=False)["input_ids"]
    params = dict(parsed["PARAMETER"])
    assert params["temperature"] == "0"
    assert params["stop"] == '"<|im_end|>"'
    assert int(params["num_predict"]) == 2  # one label token, then the end of turn


def test_the_bundle_holds_the_gguf_modelfile_and_readme(tiny_q8, tokenizer, tmp_path):
    import zipfile

    bundle = gguf_export.write_bundle(tmp_path / "b.zip", tiny_q8.path, tokenizer=tokenizer,
                                      labels=["positive", "negative", "neutral"], model_name="tunelab-run-1")
    with zipfile.ZipFile(bundle) as zf:
        assert sorted(zf.namelist()) == sorted(["tiny-q8_0.gguf", "Modelfile", "README.md"])
        assert zf.getinfo("tiny-q8_0.gguf").file_size == tiny_q8.size
        readme = zf.read("README.md").decode()
    for command in ("llama-cli -m tiny-q8_0.gguf", "llama-server -m tiny-q8_0.gguf", "ollama create tunelab-run-1 -f Modelfile"):
        assert command in readme


# --- the real default model (slow) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def default_adapter():
    """A default-lab adapter (tests/fixtures/default-adapter, README there): agreement depends on
    how decided the classifier is, so it is measured on the kind learners export; a 4-step
    adapter leaves many test reviews on a near-tie that any rounding flips (q8_0 97.4%, q4_0
    80.6% with nearest rounding)."""
    return DEFAULT_ADAPTER


def test_the_stored_default_adapter_was_trained_with_todays_default_configuration():
    from mlcore.config import NEUTRAL_DEFAULTS, TrainConfig

    stored = json.loads((DEFAULT_ADAPTER / "train_config.json").read_text())
    today = TrainConfig().to_dict()
    # A field added since the adapter was made may be missing from its file only when today's
    # default is the value that trains exactly as before the field existed (0 label noise).
    added = set(today) - set(stored)
    assert all(name in NEUTRAL_DEFAULTS and today[name] == NEUTRAL_DEFAULTS[name] for name in added), added
    assert stored == {k: v for k, v in today.items() if k not in added}, \
        "remake tests/fixtures/default-adapter (its README says how)"


@pytest.fixture(scope="module")
def packaged_tensors():
    from mlcore.registry import DEFAULT_BASE_MODEL, get_spec, packaged_gguf

    return read(packaged_gguf(get_spec(DEFAULT_BASE_MODEL)))[1]


# Issue 13's floors: 99% agreement at q8_0 and 95% at q4_0. The base model ships as Q4_1 and our
# torch model is those weights dequantized, so q8_0/q4_0 files copy every tensor the adapter left
# alone byte for byte from the packaged GGUF and round only the blocks LoRA changed, by GPTQ
# (mlcore/gguf_quant.py). Measured on default-lab adapters (README "How faithful"): q8_0 99.6-100%,
# q4_0 98.1%; nearest rounding gave 95.4% at q4_0.
@pytest.mark.slow
@pytest.mark.parametrize("quant, floor", [("q8_0", 0.99), ("q4_0", 0.95)])
def test_the_default_model_export_agrees_with_the_torch_classifier(default_adapter, default_torch_labels, reviews,
                                                                      tokenizer, packaged_tensors, tmp_path, quant, floor):
    from mlcore.gguf_classify import load_gguf_classifier

    out = gguf_export.export_merged(default_adapter, tmp_path / f"model-{quant}.gguf", quant=quant)
    # q4_0 also rebuilds the tokenizer from the file (the check that it is the training one).
    classifier = load_gguf_classifier(out.path, backend="transformers", tokenizer=None if quant == "q4_0" else tokenizer)
    labels = [p.label for p in classifier.predict([e.text for e in reviews.test])]
    reader, tensors = read(out.path)
    adapted = adapted_gguf_names(default_adapter, field(reader, "llama.block_count"))
    assert 0 < len(adapted) < len(tensors)  # LoRA in the top blocks only (the default config)
    kept = {n: packaged_tensors[n].tensor_type.name for n in tensors if n not in adapted}
    for name in kept:  # bit-exact with the weights torch dequantized (q/k already in llama.cpp's order)
        assert tensors[name].tensor_type == packaged_tensors[name].tensor_type, name
        np.testing.assert_array_equal(np.asarray(tensors[name].data), np.asarray(packaged_tensors[name].data), err_msg=name)
    assert {tensors[n].tensor_type.name for n in adapted} == {gguf_export.QUANTS[quant][0]}
    assert field(reader, gguf_export.KEPT_KEY) == len(kept)
    assert out.size == pytest.approx(predicted_bytes(tensors, quant, kept), rel=0.05)  # the tokenizer adds ~1.3%
    agreement = np.mean([a == b for a, b in zip(labels, default_torch_labels, strict=True)])
    assert agreement >= floor, f"{quant}: {agreement:.3f} of {len(labels)} test labels agree"
    assert len(set(default_torch_labels)) > 1  # a real classifier, not one label for everything


def test_the_exported_file_carries_the_adapters_prompt_and_is_classified_with_it(tiny_adapter, tiny_q8, tokenizer):
    from mlcore.gguf_classify import gguf_metadata
    from mlcore.prompt import PromptFormat

    labels, _, prompt = gguf_metadata(tiny_q8.path)
    trained = PromptFormat.for_adapter(tiny_adapter, labels)
    assert (prompt.version, prompt.system) == (trained.version, trained.system)
    assert gguf_export.modelfile("m.gguf", tokenizer, labels, prompt).count(f'SYSTEM """{prompt.system}"""') == 1
