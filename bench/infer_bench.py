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
    from mlcore.data import load_bundled
    from mlcore.train import TrainConfig, train

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
    generic = Classifier(ours.model, ours.tokenizer, ours.labels)  # same weights, transformers' forward
    methods = {
        "reference": reference.predict,
        "ours": lambda chunk, batch_size: [p.label for p in ours.predict(chunk, batch_size=batch_size)],
        "generic": lambda chunk, batch_size: [p.label for p in generic.predict(chunk, batch_size=batch_size)],
    }
    # Warm-up: first calls allocate memory; not what a served request costs.
    for _ in range(2):
        reference.predict(texts[:2])
        ours.predict(texts[:2], batch_size=2)
        generic.predict(texts[:2], batch_size=2)

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

    gold = [e.label for e in dataset.test][: args.n]
    ref_labels = predicted["reference"]
    valid = [i for i, label in enumerate(ref_labels) if label is not None]

    def agreement(name):
        return sum(predicted[name][i] == ref_labels[i] for i in valid) / len(valid) if valid else float("nan")

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
        torch=torch.__version__,
    )
    return results


def print_table(r: dict) -> None:
    names = {"reference": "generate+parse", "ours": "ours (as served)", "generic": "ours, transformers forward"}
    print()
    print(f"{r['n_reviews']} reviews, {r['base_model']} + adapter, {r['dtype']} on {r['device']}, torch {r['torch']}, "
          f"{r['torch_threads']} threads, "
          f"load average {r['load_avg_1min']:.1f} at the end")
    print(f"{'':35} {'reviews/s':>10} {'p50 ms':>9} {'p95 ms':>9} {'speedup':>8}")
    for batch in (1, 32):
        for method, label in names.items():
            row = r[f"batch{batch}"][method]
            speedup = {"ours": r[f"speedup_batch{batch}"], "generic": r[f"speedup_batch{batch}_transformers_forward"]}.get(method)
            cell = f"x{speedup:.2f}" if speedup else ""
            print(f"batch {batch:<2} {label:26} {row['reviews_per_s']:10.1f} {row['p50_ms']:9.1f} {row['p95_ms']:9.1f} {cell:>8}")
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
    parser.add_argument("--smoke", action="store_true", help="a tiny-model adapter and 4 reviews: does the bench still run?")
    args = parser.parse_args(argv)
    if args.smoke:
        import tempfile

        from bench.smoke import tiny_adapter

        with tempfile.TemporaryDirectory(prefix="tunelab-infer-smoke-") as tmp:
            args.adapter, args.n, args.device = str(tiny_adapter(Path(tmp))), 4, "cpu"
            results = run(args)
    else:
        results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
