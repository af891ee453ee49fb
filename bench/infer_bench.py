"""Inference benchmark: our classifier vs the common `generate()` + parse approach.

    .venv/bin/python bench/infer_bench.py --adapter var/runs/12            # a trained run's adapter
    .venv/bin/python bench/infer_bench.py --json out.json      # var/bench/adapter, trained first if missing
    .venv/bin/python bench/infer_bench.py --smoke              # the tiny test model, 4 reviews: seconds (make test)

Both methods use the same base model (SmolLM2-135M-Instruct), the same fine-tuned LoRA adapter
and the same reviews (the bundled test split), in one process on one machine:

- reference: the adapter loaded the way a user would (PeftModel.from_pretrained, unmerged),
  the prompt rendered with the chat template per call, `model.generate(max_new_tokens=5)`
  (greedy; the fine-tuned model stops at <|im_end|> after ~2 tokens), then the text parsed to a
  label. Batches are left-padded, as generate() needs.
- ours (as served): mlcore.classify.load_classifier(merge=True): the adapter folded into the
  weights, the system-prompt prefix's key/value cache computed once, texts batched by length
  (no forward pass more than 25% padding), one forward pass with mlcore.fused (q/k/v and
  gate/up fused, the last layer at the last position only), label-token logits.
- ours, transformers forward: the same Classifier (same weights, prefix cache, batching) but
  computing with transformers' own forward, to show what mlcore.fused adds.

Runtime rows (--runtimes, on by default; left out in --smoke): the same merged model and the
same Classifier (the adapter's prompt, the prefix's key/value cache computed once by torch, label
rows of lm_head at the last position, same threads), with its decoder over the review tokens
(mlcore.fused's last_hidden) run by:
- OpenVINO bf16 (what serving uses on CPUs with bfloat16 units: the graph converted by
  OpenVINO's PyTorch frontend, mlcore.onnx_serving.ensure_export, cached in
  var/exports/openvino) and OpenVINO f32 over the same export;
- OpenVINO bf16 over the ONNX export (mlcore.onnx_serving.export_fp32 + to_openvino, the graph
  served before EXPORT_FORMAT 2), to compare the two graphs in one run;
- ONNX Runtime float32 over that ONNX export; int8 by `quantize_dynamic` with its defaults; int8
  with per-channel weight scales and the 30 down_proj matmuls kept float32 (the most sensitive by
  measurement); int8 MatMulNBits (8-bit weights per block of 32, int8 activations per block of 32).
Each reports agreement with ours (float32) and macro-F1 on the test split, its export time and
file size; the process's resident memory at the end is in the JSON (every method's sessions).

The methods are timed chunk by chunk in turn (reference, ours, ours with transformers forward, reference, ...), so
that load from other processes on a shared machine falls on all alike. Reports reviews/s at
batch 1 and batch 32, p50/p95 latency per call, and how often each agrees with the reference
where the reference produced a valid label.

Without --adapter it uses var/bench/adapter (var/bench/adapter-cuda with --device cuda),
training it first if missing with QUICK_CONFIG (LoRA r=16 on q/k/v/o, 240 training reviews,
1 epoch, batch 8: 30 steps, a few minutes on 2 idle CPU cores; test accuracy 0.72).

With --device cuda both methods run in bfloat16 on the GPU (the model as load_base gives it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A small, quick adapter (the default lab's preset until it moved to all 7 linear layers and 2
# epochs): 30 steps. The README's numbers were measured with exactly this adapter.
QUICK_CONFIG = dict(dataset="reviews", train_limit=240, epochs=1, batch_size=8, lora_r=16, lora_alpha=32,
                    learning_rate=1e-3, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), seed=0)


def train_quick(out_dir: Path, device: str) -> Path:
    from mlcore.config import TrainConfig
    from mlcore.data import load_bundled
    from mlcore.train import train

    if (out_dir / "adapter_config.json").exists():
        print(f"reusing the adapter in {out_dir}")
        return out_dir
    print(f"training a quick adapter into {out_dir} ({QUICK_CONFIG}) ...", flush=True)
    result = train(TrainConfig(**QUICK_CONFIG, device=device), load_bundled("reviews"), out_dir)
    print(f"  done in {result.elapsed_s:.0f} s, test accuracy {result.metrics['accuracy']:.3f}")
    return out_dir


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label named by a generated answer; None when it names none (or several)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    found = [label for label in labels if label in words]
    return found[0] if len(found) == 1 else None


class Reference:
    """`generate()` + parsing, the way most tutorials classify with a fine-tuned chat model."""

    def __init__(self, base_name: str, adapter_dir: Path, labels: list[str], device: str):
        from peft import PeftModel

        from mlcore.registry import load_base

        model, tokenizer = load_base(base_name, device=device)
        self.model = PeftModel.from_pretrained(model, adapter_dir).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.labels = labels

    def predict(self, texts: list[str]) -> list[str | None]:
        import torch

        from mlcore.prompt import render_prompt, truncate_text

        prompts = [render_prompt(self.tokenizer, truncate_text(self.tokenizer, t, 256)[0], self.labels) for t in texts]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                **batch, max_new_tokens=5, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
            )
        answers = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [parse_label(a, self.labels) for a in answers]


def _stats(n: int, times: list[float]) -> dict:
    return {"reviews_per_s": n / sum(times), "p50_ms": percentile(times, 50) * 1000, "p95_ms": percentile(times, 95) * 1000}


def time_alone(methods: dict, texts: list[str], names: list[str], block: int = 50) -> dict:
    """Batch-1 latency as a server answering one model's requests back to back sees it.

    The main loop takes turns chunk by chunk, so every call starts with another method's weights
    in the caches (fair to each, and what a busy machine sees). Here each method answers a block
    of `block` reviews in a row, the methods alternating block by block so shared load still
    hits them alike: its weights stay warm between calls, as on a web process that only serves."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for start in range(0, len(texts), block):
        for name in names:
            for text in texts[start : start + block]:
                tick = time.perf_counter()
                methods[name]([text], batch_size=1)
                times[name].append(time.perf_counter() - tick)
    return {name: _stats(len(texts), t) for name, t in times.items()}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class StackedFeed:
    """The ONNX export's inputs (mlcore.onnx_serving.INPUTS): the prefix stacked once per Classifier."""

    _prefix = (None, None)

    def feed(self, input_ids, key_mask, position_ids, prefix_kv) -> dict:
        import torch

        from mlcore.onnx_serving import INPUTS

        if self._prefix[0] is not prefix_kv:
            self._prefix = (prefix_kv, [torch.stack([kv[i] for kv in prefix_kv]).numpy() for i in (0, 1)])
        return dict(zip(INPUTS, [input_ids.numpy(), key_mask.numpy(), position_ids.numpy(), *self._prefix[1]], strict=True))


class OnnxGraphOpenVINO(StackedFeed):
    """FusedDecoder.last_hidden by OpenVINO over the ONNX export: what served before
    EXPORT_FORMAT 2 (bench row only)."""

    def __init__(self, xml: Path, threads: int, precision: str):
        import openvino as ov

        self.request = ov.Core().compile_model(str(xml), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
        }).create_infer_request()

    def last_hidden(self, input_ids, key_mask, position_ids, prefix_kv):
        import torch

        return torch.from_numpy(self.request.infer(self.feed(input_ids, key_mask, position_ids, prefix_kv))[0].copy())


class OrtDecoder(StackedFeed):
    """FusedDecoder.last_hidden by an ONNX Runtime session (bench rows only; serving uses OpenVINO)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No spinning between calls: its threads would take the cores from the methods timed next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def last_hidden(self, input_ids, key_mask, position_ids, prefix_kv):
        import torch

        return torch.from_numpy(self.session.run(None, self.feed(input_ids, key_mask, position_ids, prefix_kv))[0])


def ort_int8(fp32: Path, kind: str) -> Path:
    """fp32's weight matmuls in int8, one of three ways (see the module's docstring)."""
    import onnx

    out = fp32.with_name(f"decoder-{kind}.onnx")
    if kind == "int8-blocks":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude: list[str] = []
    if kind == "int8-careful":
        graph = onnx.load(str(fp32), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        linears = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        exclude = linears[3::4]  # per layer: qkv, o, gate_up, down (mlcore.fused's order)
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=kind == "int8-careful",
                     nodes_to_exclude=exclude)
    return out


RUNTIME_ROWS = {  # method name: what the table calls it
    "ov-bf16": "OpenVINO bf16 (served)",
    "ov-f32": "OpenVINO f32",
    "ov-bf16-onnx": "OpenVINO bf16, ONNX export (served before)",
    "ort-fp32": "ONNX Runtime fp32",
    "ort-int8": "ONNX Runtime int8 dynamic (defaults)",
    "ort-int8-careful": "ONNX Runtime int8 per-channel, down_proj fp32",
    "ort-int8-blocks": "ONNX Runtime int8 MatMulNBits block 32",
}


def runtime_classifiers(ours, base_name: str, adapter: Path, threads: int, work: Path) -> tuple[dict, dict]:
    """{method: Classifier sharing ours's model, prompt and prefix, its decoder swapped}, and per
    method {export_s, file_mb}. A runtime that is not installed is left out (said)."""
    import importlib.util

    from mlcore import onnx_serving
    from mlcore.classify import Classifier

    made, info = {}, {}

    def clone(decoder):
        classifier = Classifier(ours.model, ours.tokenizer, ours.labels, prompt=ours.prompt, fuse=True,
                                max_text_tokens=ours.max_text_tokens)
        classifier._fused = decoder
        return classifier

    if onnx_serving.available():
        tick = time.perf_counter()
        folder = onnx_serving.ensure_export(base_name, adapter)
        manifest = json.loads((folder / onnx_serving.MANIFEST).read_text())
        # A cached export reports the time it took when it was built.
        export_s = time.perf_counter() - tick if time.perf_counter() - tick > 5 else manifest["load_s"] + \
            manifest["export_s"]
        for precision in ("bf16", "f32"):
            decoder = onnx_serving.CompiledDecoder(folder / onnx_serving.MODEL_FILE, ours._fused, threads=threads,
                                                   precision_hint=precision)
            made[f"ov-{precision}"] = clone(decoder)
            info[f"ov-{precision}"] = {"export_s": export_s, "file_mb": manifest["bytes"] / 2**20, "precision": decoder.precision}
    else:
        print("OpenVINO rows are left out: openvino is not installed (pip install -r requirements.txt)")
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    if importlib.util.find_spec("onnxscript") and (has_ort or onnx_serving.available()):
        tick = time.perf_counter()
        fp32 = onnx_serving.export_fp32(ours.model, work / "decoder.onnx")
        fp32_s = time.perf_counter() - tick
    if importlib.util.find_spec("onnxscript") and onnx_serving.available():
        tick = time.perf_counter()
        xml = onnx_serving.to_openvino(fp32, work / "decoder-onnx.xml")
        made["ov-bf16-onnx"] = clone(OnnxGraphOpenVINO(xml, threads, onnx_serving.precision()))
        info["ov-bf16-onnx"] = {"export_s": fp32_s + time.perf_counter() - tick,
                                "file_mb": (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20}
    if has_ort and importlib.util.find_spec("onnxscript"):
        for kind in ("fp32", "int8", "int8-careful", "int8-blocks"):
            tick = time.perf_counter()
            path = fp32 if kind == "fp32" else ort_int8(fp32, kind)
            quantize_s = time.perf_counter() - tick
            made[f"ort-{kind}"] = clone(OrtDecoder(path, threads))
            info[f"ort-{kind}"] = {"export_s": fp32_s + quantize_s, "file_mb": path.stat().st_size / 2**20}
    else:
        print("ONNX rows are left out: onnx/onnxscript/onnxruntime are not installed (pip install -r requirements-bench.txt)")
    return made, info


def run(args) -> dict:
    import torch

    from mlcore.classify import Classifier, load_classifier, read_labels
    from mlcore.data import load_bundled

    if args.threads:
        torch.set_num_threads(args.threads)
    default_dir = ROOT / "var" / "bench" / ("adapter" if args.device == "cpu" else f"adapter-{args.device}")
    adapter = Path(args.adapter) if args.adapter else train_quick(default_dir, args.device)
    train_config = json.loads((adapter / "train_config.json").read_text())
    base_name = train_config["base_model"]
    labels = read_labels(adapter)
    dataset_name = train_config.get("dataset")
    dataset = load_bundled(dataset_name if dataset_name in ("reviews", "reviews-mixed") else "reviews")
    texts = [e.text for e in dataset.test][: args.n]

    print(f"loading {base_name} + {adapter} twice (reference: PEFT unmerged; ours: merged + prefix cache)", flush=True)
    reference = Reference(base_name, adapter, labels, args.device)
    ours = load_classifier(base_name, adapter, merge=True, device=args.device)
    generic = Classifier(ours.model, ours.tokenizer, ours.labels, prompt=ours.prompt)  # same weights, transformers' forward
    methods = {
        "reference": reference.predict,
        "ours": lambda chunk, batch_size: [p.label for p in ours.predict(chunk, batch_size=batch_size)],
        "generic": lambda chunk, batch_size: [p.label for p in generic.predict(chunk, batch_size=batch_size)],
    }
    runtimes, runtime_info = {}, {}
    if args.runtimes and args.device == "cpu":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tunelab-infer-onnx-") as work:
            runtimes, runtime_info = runtime_classifiers(ours, base_name, adapter, torch.get_num_threads(), Path(work))
    for name, classifier in runtimes.items():
        methods[name] = (lambda c: lambda chunk, batch_size: [p.label for p in c.predict(chunk, batch_size=batch_size)])(
            classifier)
    # Warm-up: first calls allocate memory; not what a served request costs.
    for _ in range(2):
        reference.predict(texts[:2])
        for name, predict in methods.items():
            if name != "reference":
                predict(texts[:2], batch_size=2)

    results: dict = {}
    predicted: dict[str, list] = {name: [] for name in methods}
    for batch_size in (1, 32):
        times: dict[str, list[float]] = {name: [] for name in methods}
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            for name, predict in methods.items():  # in turn, chunk by chunk: shared load hits all alike
                tick = time.perf_counter()
                out = predict(chunk, batch_size=batch_size) if name != "reference" else predict(chunk)
                times[name].append(time.perf_counter() - tick)
                if batch_size == 1:
                    predicted[name] += out
        results[f"batch{batch_size}"] = {name: _stats(len(texts), t) for name, t in times.items()}
        print(f"batch {batch_size}: " + ", ".join(f"{name} {len(texts) / sum(t):.1f} reviews/s" for name, t in times.items()),
              flush=True)
        for name in ("ours", "generic"):
            key = f"speedup_batch{batch_size}" + ("" if name == "ours" else "_transformers_forward")
            results[key] = sum(times["reference"]) / sum(times[name])

    results["batch1_alone"] = time_alone(methods, texts, [name for name in ("ours", "ov-bf16") if name in methods])

    gold = [e.label for e in dataset.test][: args.n]
    ref_labels = predicted["reference"]
    valid = [i for i, label in enumerate(ref_labels) if label is not None]

    def agreement(name):
        return sum(predicted[name][i] == ref_labels[i] for i in valid) / len(valid) if valid else float("nan")

    from sklearn.metrics import f1_score

    results["runtimes"] = {
        name: runtime_info[name] | {
            "agreement_with_ours": sum(a == b for a, b in zip(predicted[name], predicted["ours"], strict=True)) / len(texts),
            "macro_f1": f1_score(gold, predicted[name], average="macro"),
        }
        for name in runtimes
    }
    results["ours_macro_f1"] = f1_score(gold, predicted["ours"], average="macro")
    results.update(
        agreement=agreement("ours"),
        agreement_transformers_forward=agreement("generic"),
        reference_valid=len(valid) / len(ref_labels),
        reference_accuracy=sum(r == g for r, g in zip(ref_labels, gold, strict=True)) / len(gold),
        ours_accuracy=sum(o == g for o, g in zip(predicted["ours"], gold, strict=True)) / len(gold),
        n_reviews=len(texts),
        adapter=str(adapter),
        base_model=base_name,
        torch_threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        dtype=str(ours.model.dtype).removeprefix("torch."),
        cpu_count=os.cpu_count(),
        load_avg_1min=os.getloadavg()[0],
        ours_rss_mb=rss_mb(),  # the whole process at the end (every method's model and sessions)
        torch=torch.__version__,
    )
    return results


def print_table(r: dict) -> None:
    names = {"reference": "generate+parse", "ours": "ours (as served)", "generic": "ours, transformers forward"}
    print()
    print(f"{r['n_reviews']} reviews, {r['base_model']} + adapter, {r['dtype']} on {r['device']}, torch {r['torch']}, "
          f"{r['torch_threads']} threads, "
          f"load average {r['load_avg_1min']:.1f} at the end")
    print(f"{'':54} {'reviews/s':>10} {'p50 ms':>9} {'p95 ms':>9} {'speedup':>8}")
    names |= {name: RUNTIME_ROWS[name] for name in r.get("runtimes", {})}
    for batch in (1, 32):
        for method, label in names.items():
            row = r[f"batch{batch}"][method]
            speedup = {"ours": r[f"speedup_batch{batch}"], "generic": r[f"speedup_batch{batch}_transformers_forward"]}.get(method)
            cell = f"x{speedup:.2f}" if speedup else ""
            print(f"batch {batch:<2} {label:45} {row['reviews_per_s']:10.1f} {row['p50_ms']:9.1f} {row['p95_ms']:9.1f} {cell:>8}")
    if r.get("runtimes"):
        print()
        print("| path | p50 ms b1 | p95 ms b1 | reviews/s b1 | reviews/s b32 | agreement with ours | macro-F1 | export s "
              "| file MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = {"ours": ("ours (torch, mlcore.fused)", {"agreement_with_ours": 1.0, "macro_f1": r["ours_macro_f1"]})}
        rows |= {name: (RUNTIME_ROWS[name], info) for name, info in r["runtimes"].items()}
        for method, (label, info) in rows.items():
            b1, b32 = r["batch1"][method], r["batch32"][method]
            export = f"{info['export_s']:.0f}" if "export_s" in info else "-"
            memory = f"{info['file_mb']:.0f}" if "file_mb" in info else "-"
            print(f"| {label} | {b1['p50_ms']:.1f} | {b1['p95_ms']:.1f} | {b1['reviews_per_s']:.1f} | "
                  f"{b32['reviews_per_s']:.1f} | {info['agreement_with_ours']:.3f} | {info['macro_f1']:.3f} | {export} "
                  f"| {memory} |")
    for method, row in r.get("batch1_alone", {}).items():
        print(f"batch 1, back to back (blocks of 50 reviews per method): {names[method]}: p50 {row['p50_ms']:.1f} ms, "
              f"p95 {row['p95_ms']:.1f} ms, {row['reviews_per_s']:.1f} reviews/s")
    print(
        f"agreement with the reference (where it gave a valid label, {r['reference_valid']:.1%} of reviews): "
        f"ours {r['agreement']:.4f}, ours with transformers forward {r['agreement_transformers_forward']:.4f}; "
        f"accuracy reference {r['reference_accuracy']:.3f}, ours {r['ours_accuracy']:.3f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="a trained adapter directory (adapter_config.json, labels.json, train_config.json); "
                        "default: var/bench/adapter, trained with QUICK_CONFIG if missing")
    parser.add_argument("--n", type=int, default=None, help="use only the first N test reviews")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: float32 (default); cuda: bfloat16 on the GPU, both methods")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--runtimes", action=argparse.BooleanOptionalAction, default=True,
                        help="add the OpenVINO and ONNX Runtime rows (CPU only; default on, off in --smoke)")
    parser.add_argument("--smoke", action="store_true", help="a tiny-model adapter and 4 reviews: does the bench still run?")
    args = parser.parse_args(argv)
    if args.smoke:
        import tempfile

        from bench.smoke import tiny_adapter

        with tempfile.TemporaryDirectory(prefix="tunelab-infer-smoke-") as tmp:
            args.adapter, args.n, args.device, args.runtimes = str(tiny_adapter(Path(tmp))), 4, "cpu", False
            results = run(args)
    else:
        results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
