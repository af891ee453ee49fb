"""The classifier's decoder compiled by OpenVINO: same prompt, same answers.

What runs where. `mlcore.classify.Classifier` keeps everything that defines the classifier: the
adapter's prompt split around the review, the system-prompt prefix's key/value cache (computed
once by torch, in float32), length-grouped left-padded batches, and the label rows of lm_head
applied in float32 at the last position. Only `FusedDecoder.last_hidden`, the decoder over the
review's tokens, is exported: the exported graph IS that function (traced from mlcore.fused by
OpenVINO's own PyTorch converter: q/k/v and gate/up fused, the last layer at the last position
only), with the prefix's keys/values as inputs, two per layer. `CompiledDecoder` has the same
`last_hidden` and takes its place.

The graph is written for the runtime (`_ServedDecoder`: two of FusedDecoder's steps in another
form, same maths). At ~35 tokens a review the matmuls are small, and per-operation overhead
decided the speed: the first export (ONNX, EXPORT_FORMAT 1) compiled to ~3,500 operations, the
attention unfused (grouped-query SDPA became rank-5 matmuls and a softmax), the stacked prefix
gathered per layer, expand() a broadcast and two conversions per tensor. Now the query heads
are grouped per key/value head (rank-4 attention, which the CPU plugin fuses into one operation
per layer), the prefix reaches every row by adding one shared zero tensor, and each layer has
its own prefix inputs, set once per request rather than fed per call: ~1,600 operations, and
the gate/up/down matmuls fuse into one MLP operation per layer (bench/README, issue 24).

Which runtime, measured side by side on the default lab's adapter (bench/README.md, "ONNX
Runtime and OpenVINO"): ONNX Runtime's int8 (`quantize_dynamic`: one uint8 scale per activation
tensor) is the fastest and changes 6-10% of labels: decoder activations have a few channels ~100x
the rest, which take the whole 8-bit range (per-channel weight scales, SmoothQuant and a float32
down_proj still left 2-3% changed); its block-wise int8 (MatMulNBits) agrees but is no faster
than float32. OpenVINO computes the same graph in bfloat16 on CPUs with bfloat16 units (AMX,
AVX512-BF16): every value keeps its own exponent, so no outlier spends another's range; it agreed
on 99.8-100% of test reviews and is the fastest path that agrees. Elsewhere it computes in float32.

Where it is built. Exporting takes ~1 CPU-minute and a second copy of the model, so it never
runs on a request: `attach()` returns at once, the classifier keeps serving with torch, and a
background thread builds the export (in a child process at low priority: a crash or the memory
of the export stays out of the web process), then swaps the compiled decoder in. Exports are
cached under var/exports/openvino/<key>/, the key hashing the export format, the runtime's
version, the adapter's weights and the base model, so a changed adapter gets a new export and an
unchanged one is built once per host; a file lock keeps two web processes from building the same
one. Anything that goes wrong (runtime not installed, export or compilation failing, a call
failing later) is logged and leaves, or puts back, the torch path.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .fused import FusedDecoder
from .gguf_export import merged_model
from .paths import var_dir
from .registry import load_base, model_path

logger = logging.getLogger(__name__)

# Bump when the exported graph or its conversion changes: older exports are then rebuilt.
EXPORT_FORMAT = 2  # 2: OpenVINO's PyTorch converter, fused attention, per-layer prefix inputs
MODEL_FILE = "decoder.xml"  # OpenVINO IR; decoder.bin beside it holds the weights as float16
MANIFEST = "manifest.json"
# The served graph's inputs: these three, then prefix_keys_<layer> and prefix_values_<layer>
# ([1, kv_heads, P, head_dim]) for each layer in turn.
STEP_INPUTS = ("input_ids", "key_mask", "position_ids")
# The ONNX export's inputs (export_fp32, the bench's ONNX Runtime rows): the prefix stacked.
INPUTS = (*STEP_INPUTS, "prefix_keys", "prefix_values")
# OpenVINO prepares every operation of the graph again (~9 ms on 2 cores, a third of a call)
# whenever an input's shape differs from the previous call's. So a single review, the API's usual
# request, is padded on the left (masked, as in a batch) to one of a few widths: 90% of the test
# split's reviews fit in 32 tokens with the template's end, most calls keep the last shape, and
# a padded token costs ~0.2 ms (bench/README.md, "Shapes"). Batches are already length-grouped
# and long enough that padding would cost more than it saves.
SINGLE_ROW_WIDTH = 32  # narrower rows are padded to this
SINGLE_ROW_STEP = 16  # wider ones to a multiple of this
KEEP_EXPORTS = 8  # exports kept per host (the least recently used go first); ~270 MB each for SmolLM2
BUILD_TIMEOUT_S = 1800


def available() -> bool:
    """Whether this environment can build and run exports (openvino converts and runs them)."""
    return importlib.util.find_spec("openvino") is not None


def precision() -> str:
    """bf16 where the CPU has bfloat16 units (OpenVINO's own default there), else f32."""
    import openvino as ov  # OpenVINO is optional: only the openvino serving backend

    return "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


# --- export ----------------------------------------------------------------------------------


class _ServedDecoder(FusedDecoder):
    """FusedDecoder.last_hidden with two steps in the form OpenVINO's CPU plugin runs fastest;
    the same maths (tests/mlcore/test_onnx_serving.py compares them in torch)."""

    def _batch_prefix(self, prefix_kv, batch: int) -> list:
        # expand() converts to a broadcast of ones, a multiply and two precision conversions per
        # tensor (60 of each for SmolLM2); adding one zero tensor [batch, 1, 1, 1] is one add
        # per tensor, which also takes the float32 input into the compute precision.
        zeros = prefix_kv[0][0].new_zeros(batch, 1, 1, 1)
        return [(k + zeros, v + zeros) for k, v in prefix_kv]

    def _attend(self, q, k, v, mask):
        # Grouped-query attention converts to rank-5 tensors, which the CPU plugin does not fuse
        # (two matmuls and a softmax per layer). The query heads that share a key/value head are
        # consecutive, so [B, heads, T, D] regrouped as [B, kv_heads, groups * T, D] (rows
        # g * T + t) is ordinary rank-4 attention over k and v, the mask repeated per group.
        batch, groups = q.shape[0], self.n_heads // self.n_kv_heads
        grouped = q.reshape(batch, self.n_kv_heads, -1, self.head_dim)
        out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask.repeat(1, 1, groups, 1), scale=self.scale)
        return out.reshape(batch, self.n_heads, -1, self.head_dim)


class _Served(torch.nn.Module):
    """_ServedDecoder.last_hidden as a module for ov.convert_model: the prefix's keys and
    values are two inputs per layer (keys_0, values_0, keys_1, ...)."""

    def __init__(self, fused):
        super().__init__()
        self.fused = fused
        self.embed, self.rotary, self.norm = fused.embed, fused.rotary, fused.norm

    def forward(self, input_ids, key_mask, position_ids, *prefix):
        pairs = [(prefix[2 * i], prefix[2 * i + 1]) for i in range(len(self.fused.layers))]
        return self.fused.last_hidden(input_ids, key_mask, position_ids, pairs)


def input_names(layers: int) -> list[str]:
    return [*STEP_INPUTS, *(f"prefix_{kind}_{i}" for i in range(layers) for kind in ("keys", "values"))]


def export_openvino(causal_lm, out_xml: Path) -> Path:
    """The model's decoder (_ServedDecoder.last_hidden) as OpenVINO IR at `out_xml`, converted
    by OpenVINO's PyTorch frontend, weights stored as float16 (half the disk; OpenVINO computes
    in bf16 or f32 either way)."""
    import openvino as ov  # OpenVINO is optional: only the openvino serving backend

    causal_lm.requires_grad_(False)  # traced weights become constants, which must not need grad
    fused = _ServedDecoder(causal_lm)
    fused.linear = F.linear  # oneDNN's op has no OpenVINO form; F.linear is the same arithmetic
    layers, shape = len(fused.layers), (1, fused.n_kv_heads, 7, fused.head_dim)
    batch, width = 2, 5
    example = (
        torch.full((batch, width), 1, dtype=torch.long),
        torch.ones(batch, shape[2] + width, dtype=torch.long),
        torch.arange(shape[2], shape[2] + width).expand(batch, -1).contiguous(),
        *(torch.zeros(shape) for _ in range(2 * layers)),
    )
    # Batch, review length and prefix length are free; layers, heads and widths are the model's.
    free = ov.PartialShape([-1, -1])
    prefix = ov.PartialShape([1, shape[1], -1, shape[3]])
    inputs = [(free, ov.Type.i64)] * len(STEP_INPUTS) + [(prefix, ov.Type.f32)] * (2 * layers)
    with torch.no_grad():
        model = ov.convert_model(_Served(fused).eval(), example_input=example, input=inputs)
    for port, name in zip(model.inputs, input_names(layers), strict=True):
        port.get_tensor().set_names({name})
    model.outputs[0].get_tensor().set_names({"last_hidden"})
    ov.save_model(model, str(out_xml), compress_to_fp16=True)
    return out_xml


class _Exported(torch.nn.Module):
    """FusedDecoder.last_hidden as a module for torch.onnx.export: the per-layer prefix
    (keys, values) become two stacked inputs, [layers, 1, kv_heads, P, head_dim] each."""

    def __init__(self, fused):
        super().__init__()
        self.fused = fused
        # Registered so the exporter names the weights (rather than lifting anonymous constants).
        self.embed, self.rotary, self.norm = fused.embed, fused.rotary, fused.norm

    def forward(self, input_ids, key_mask, position_ids, prefix_keys, prefix_values):
        prefix = [(prefix_keys[i], prefix_values[i]) for i in range(len(self.fused.layers))]
        return self.fused.last_hidden(input_ids, key_mask, position_ids, prefix)


def export_fp32(causal_lm, path: Path) -> Path:
    """The model's FusedDecoder.last_hidden as a float32 ONNX graph at `path` (the bench's ONNX
    Runtime rows; serving uses export_openvino)."""
    fused = FusedDecoder(causal_lm)
    fused.linear = F.linear  # oneDNN's op has no ONNX form; F.linear is the same arithmetic
    config = causal_lm.config
    n_kv = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    batch, width, prefix_len = 2, 5, 7
    example = (
        torch.full((batch, width), 1, dtype=torch.long),
        torch.ones(batch, prefix_len + width, dtype=torch.long),
        torch.arange(prefix_len, prefix_len + width).expand(batch, -1).contiguous(),
        torch.zeros(len(fused.layers), 1, n_kv, prefix_len, head_dim),
        torch.zeros(len(fused.layers), 1, n_kv, prefix_len, head_dim),
    )
    # Batch, review length and prefix length are free (AUTO: the exporter finds that the mask
    # spans prefix + review); layers, heads and widths are the model's.
    auto = torch.export.Dim.AUTO
    shapes = {"input_ids": {0: auto, 1: auto}, "key_mask": {0: auto, 1: auto}, "position_ids": {0: auto, 1: auto},
              "prefix_keys": {3: auto}, "prefix_values": {3: auto}}
    with torch.no_grad():
        torch.onnx.export(_Exported(fused).eval(), example, str(path), dynamo=True, input_names=list(INPUTS),
                          output_names=["last_hidden"], dynamic_shapes=shapes, external_data=False, verbose=False)
    return path


def to_openvino(onnx_path: Path, out_xml: Path) -> Path:
    """The ONNX graph as OpenVINO IR, weights stored as float16 (EXPORT_FORMAT 1's served path,
    now the bench's row beside the served one)."""
    import openvino as ov  # OpenVINO is optional: only the openvino serving backend

    ov.save_model(ov.Core().read_model(str(onnx_path)), str(out_xml), compress_to_fp16=True)
    return out_xml


def build(base_name: str, adapter_dir: Path | None, out_dir: Path) -> dict:
    """Merge, export and convert into `out_dir` (which must not exist yet); returns the manifest."""
    import openvino as ov  # OpenVINO is optional: only the openvino serving backend


    tick = time.perf_counter()
    if adapter_dir is not None:
        model, _tokenizer, base_name, _labels = merged_model(adapter_dir, base_name=base_name)
    else:
        model, _tokenizer = load_base(base_name, device="cpu", dtype=torch.float32)
    loaded = time.perf_counter()
    out_dir.mkdir(parents=True)
    export_openvino(model, out_dir / MODEL_FILE)
    manifest = {
        "format": EXPORT_FORMAT,
        "base_model": base_name,
        "adapter_dir": str(adapter_dir) if adapter_dir is not None else None,
        "openvino": ov.get_version(),
        "load_s": round(loaded - tick, 1),
        "export_s": round(time.perf_counter() - loaded, 1),  # traced, converted and saved
        "bytes": sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- the cache of exports ----------------------------------------------------------------------


def exports_dir() -> Path:
    return var_dir() / "exports" / "openvino"


def _file_digest(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)


def export_key(base_name: str, adapter_dir: Path | None) -> str:
    """Names the export's content: the export format, the runtime and torch versions, the base model
    (its config and weight files' sizes: the cached base is rebuilt only from a new package) and
    the adapter's weights and config. Labels and prompt are not in it: the graph takes the
    prefix's keys/values as input and returns hidden states, so they stay with the Classifier."""
    import openvino as ov  # OpenVINO is optional: only the openvino serving backend


    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{ov.get_version()}|{torch.__version__}|{base_name}".encode())
    base = Path(str(model_path(base_name)))
    if base.is_dir():
        for path in sorted(base.glob("*")):
            if path.suffix in (".json", ".safetensors") and path.is_file():
                digest.update(f"|{path.name}:{path.stat().st_size}".encode())
        if (base / "config.json").is_file():
            _file_digest(digest, base / "config.json")
    if adapter_dir is not None:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            digest.update(f"|{name}|".encode())
            _file_digest(digest, Path(adapter_dir) / name)
    return digest.hexdigest()[:24]


def cached_export(key: str) -> Path | None:
    path = exports_dir() / key
    return path if (path / MANIFEST).is_file() and (path / MODEL_FILE).is_file() else None


def ensure_export(base_name: str, adapter_dir: Path | None, key: str | None = None) -> Path:
    """The export's folder, built first if this host has none (in a child process, at low
    priority, under a lock so that two processes do not build the same one)."""
    key = key or export_key(base_name, adapter_dir)
    found = cached_export(key)
    if found is not None:
        os.utime(found)  # most recently used: pruned last
        return found
    root = exports_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building it: wait, then use its result
        found = cached_export(key)
        if found is not None:
            return found
        tmp = root / f".{key}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        command = [sys.executable, "-m", "mlcore.onnx_serving", "build", "--base", base_name, "--out", str(tmp)]
        if adapter_dir is not None:
            command += ["--adapter", str(adapter_dir)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                  cwd=Path(__file__).resolve().parent.parent)
            if done.returncode != 0:
                raise RuntimeError(f"the export exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
            os.rename(tmp, root / key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(root, keep=key)
    return root / key


def _prune(root: Path, keep: str) -> None:
    """Delete all but the KEEP_EXPORTS most recently used exports (var/ is a cache)."""
    exports = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in exports[KEEP_EXPORTS:]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
            (root / f"{old.name}.lock").unlink(missing_ok=True)


# --- running it --------------------------------------------------------------------------------


def single_row_width(width: int) -> int:
    """The width a single row of `width` tokens is padded to (see SINGLE_ROW_WIDTH)."""
    if width <= SINGLE_ROW_WIDTH:
        return SINGLE_ROW_WIDTH
    return -(-width // SINGLE_ROW_STEP) * SINGLE_ROW_STEP


def pad_left(input_ids, key_mask, position_ids, width: int):
    """The decoder's inputs left-padded to `width` tokens: masked pads at position 0, as the
    Classifier pads the shorter rows of a batch, so the last position computes the same."""
    extra = width - input_ids.shape[1]
    if extra <= 0:
        return input_ids, key_mask, position_ids
    rows, prefix_len = len(input_ids), key_mask.shape[1] - input_ids.shape[1]
    input_ids = torch.cat((input_ids.new_zeros(rows, extra), input_ids), dim=1)
    key_mask = torch.cat((key_mask[:, :prefix_len], key_mask.new_zeros(rows, extra), key_mask[:, prefix_len:]), dim=1)
    position_ids = torch.cat((position_ids.new_zeros(rows, extra), position_ids), dim=1)
    return input_ids, key_mask, position_ids


class CompiledDecoder:
    """FusedDecoder.last_hidden computed by OpenVINO over an export.

    A failing call is logged, and the torch decoder (`fallback`) answers it and every later one:
    a broken runtime costs speed, never a request."""

    def __init__(self, model_file: Path, fallback, *, threads: int | None = None, precision_hint: str | None = None):
        import openvino as ov  # OpenVINO is optional: only the openvino serving backend

        threads = threads or torch.get_num_threads()  # the threads torch was given
        self.precision = precision_hint or precision()
        if threads == 1 and self.precision == "bf16":
            # OpenVINO 2026.4's CPU plugin dies of SIGFPE (the whole process, no exception)
            # compiling this graph's float16 weights for bf16 on one thread; f32 compiles.
            self.precision = "f32"
        compiled = ov.Core().compile_model(str(model_file), "CPU", {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, every thread on it (we batch ourselves)
        })
        self.request = compiled.create_infer_request()
        self.model_file = Path(model_file)
        self.fallback = fallback
        self.failed = False
        self._lock = threading.Lock()  # one infer request: one call at a time
        self._prefix = None  # the prefix_kv list whose tensors the request holds

    def _set_prefix(self, prefix_kv) -> None:
        """Give the request the prefix's keys/values (inputs 3...), once per Classifier rather
        than per call: they stay set between calls. Under the lock."""
        if self._prefix is not prefix_kv:
            import openvino as ov  # OpenVINO is optional: only the openvino serving backend

            arrays = [t.float().contiguous().numpy() for pair in prefix_kv for t in pair]
            for index, array in enumerate(arrays, start=len(STEP_INPUTS)):
                self.request.set_input_tensor(index, ov.Tensor(array))  # copied into the tensor
            self._prefix = prefix_kv

    def last_hidden(self, input_ids, key_mask, position_ids, prefix_kv) -> torch.Tensor:
        if not self.failed:
            try:
                if len(input_ids) == 1:
                    input_ids, key_mask, position_ids = pad_left(input_ids, key_mask, position_ids,
                                                                 single_row_width(input_ids.shape[1]))
                feed = {0: input_ids.cpu().numpy(), 1: key_mask.cpu().numpy(), 2: position_ids.cpu().numpy()}
                with self._lock:
                    self._set_prefix(prefix_kv)
                    out = self.request.infer(feed)[0].copy()  # the request's buffer is reused by the next call
                return torch.from_numpy(out)
            except Exception:
                self.failed = True
                logger.exception("OpenVINO failed on %s; serving with torch from now on", self.model_file)
        return self.fallback.last_hidden(input_ids, key_mask, position_ids, prefix_kv)


class RuntimeAttach:
    """The background build-and-swap for one Classifier. `ready` is set when it ended, either
    way; `error` says why the torch path stayed."""

    def __init__(self, classifier, base_name: str, adapter_dir: Path | None):
        self.classifier, self.base_name, self.adapter_dir = classifier, base_name, adapter_dir
        self.ready = threading.Event()
        self.error: str | None = None
        self.decoder: CompiledDecoder | None = None
        self.thread = threading.Thread(target=self._run, name="openvino-export", daemon=True)

    def _run(self) -> None:
        try:
            tick = time.perf_counter()
            folder = ensure_export(self.base_name, self.adapter_dir)
            decoder = CompiledDecoder(folder / MODEL_FILE, self.classifier._fused)
            self.classifier._fused = decoder  # an attribute swap: a call in flight finishes on torch
            self.decoder = decoder
            logger.info("classifier %s: OpenVINO (%s) ready in %.1f s (%s)", self.base_name + (
                f" + {self.adapter_dir}" if self.adapter_dir else ""), decoder.precision, time.perf_counter() - tick, folder)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("classifier %s: serving with torch, the OpenVINO path failed: %s", self.base_name,
                           self.error)
        finally:
            self.ready.set()


def attach(classifier, base_name: str, adapter_dir=None, *, wait: bool = False) -> RuntimeAttach | None:
    """Serve `classifier` through OpenVINO once its export is ready (built in the background
    if needed); until then, and whenever it cannot, the classifier computes with torch.

    Returns the attach job (its `ready` event, `error`), or None when this classifier cannot use
    the runtime at all (said in the log): runtime not installed, not on a CPU, no fused decoder
    (not a plain Llama-family model), or labels of several tokens (scored by the torch forward)."""
    if not available():
        logger.warning("classifier %s: serving with torch: openvino is not installed", base_name)
        return None
    if classifier._fused is None:
        logger.info("classifier %s: serving with torch: no fused CPU decoder to replace (a GPU, a model that is not "
                    "plain Llama-family, or labels of several tokens)", base_name)
        return None
    job = RuntimeAttach(classifier, base_name, Path(adapter_dir) if adapter_dir is not None else None)
    job.thread.start()
    if wait:
        job.ready.wait()
    return job


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the OpenVINO export of a base model (+ adapter).")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="merge, export and convert into a new folder")
    build_cmd.add_argument("--base", required=True)
    build_cmd.add_argument("--adapter")
    build_cmd.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    # A web process's background build: requests being served come first. The suite sets 0: there
    # the "requests" are other tests, and a build at nice 10 on busy cores took 12x its time.
    niceness = os.environ.get("TUNELAB_EXPORT_NICE", "10").strip()
    if not niceness.isdigit() or int(niceness) > 19:
        parser.error(f"TUNELAB_EXPORT_NICE must be a whole number from 0 to 19, not {niceness!r}")
    os.nice(int(niceness))
    warnings.filterwarnings("ignore")
    manifest = build(args.base, Path(args.adapter) if args.adapter else None, Path(args.out))
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
