"""Training throughput of our loop on a Qwen2.5-0.5B-shaped model: samples/s, tokens/s and MFU.

    .venv/bin/python bench/shape_bench.py --device cuda                  # batch 8, 32, 128 on a GPU
    .venv/bin/python bench/shape_bench.py --device cpu --batches 8 --steps 3 --peak-tflops 0.15
    .venv/bin/python bench/shape_bench.py --layers 2 --batches 2 --steps 2  # fewer blocks, full width
    .venv/bin/python bench/shape_bench.py --smoke    # a toy Qwen2 shape in a temporary folder: seconds (make test)

The real Qwen2.5-0.5B-Instruct weights are not on this machine (nothing is downloaded), so the
model has its exact shape (24 blocks, hidden 896, MLP 4864, 14 query / 2 key-value heads, vocab
151,936, tied embeddings) with random weights (seed 0), and SmolLM2's tokenizer, which uses the
same ChatML template and whose ids fit the vocabulary. Speed does not depend on the weights'
values. It is written once to var/bench/qwen2.5-0.5b-shaped and loaded through the registry's
Qwen entry (TUNELAB_QWEN_PATH), so the run is the default lab's code path: mlcore.train.train
with the default configuration (LoRA in the top N blocks, frozen hidden states cached), only
the batch size and the number of steps changed.

Timing: the training split is repeated so every measured step is in the first epoch (each
review's frozen lower blocks are computed in its step, as in a lab's first epoch); the first
--warmup steps are not timed (CUDA/allocator warm-up). Validation and test scoring are left out.

MFU convention: model FLOPs per token = 2 x N_frozen (the forward through the blocks below the
LoRA blocks) + 6 x N_path (the blocks backward runs through, counted at the usual 6N for a
forward and a backward, although frozen weights need no weight gradients); N excludes the
embedding, attention-score FLOPs and the label-only output head are not counted. MFU = that x
tokens/s / --peak-tflops (default on CUDA: 989 TFLOP/s, the H200's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_DIR = ROOT / "var" / "bench" / "qwen2.5-0.5b-shaped"
QWEN_25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1_000_000.0,
                   max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu")
H200_BF16_TFLOPS = 989.0
# --smoke: the same architecture at toy width (and Qwen's vocabulary), so the code path runs in seconds.
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def build_model(folder: Path, layers: int, shape: dict | None = None) -> None:
    """Random Qwen2.5-0.5B-shaped weights (bf16 safetensors) + SmolLM2's tokenizer in `folder`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mlcore.registry import DEFAULT_BASE_MODEL, load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
    config = Qwen2Config(**(QWEN_25_05B | {"num_hidden_layers": layers} | (shape or {})), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def model_flops_per_token(config) -> float:
    """2 x N_frozen + 6 x N_path (see the module docstring), from the model's shape (meta tensors, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mlcore.registry import model_path
    from mlcore.train import lora_blocks

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path(config.base_model)))
    layers = model.model.layers
    first_path = min(lora_blocks(config, len(layers)) or [0])
    count = lambda blocks: sum(p.numel() for layer in blocks for p in layer.parameters())  # noqa: E731
    return 2.0 * count(layers[:first_path]) + 6.0 * count(layers[first_path:])


def measure(batch: int, steps: int, warmup: int, device: str) -> dict:
    """Train `warmup + steps` steps at `batch`; timing over the last `steps`."""
    import torch

    from mlcore.config import TrainConfig
    from mlcore.data import Dataset, load_bundled
    from mlcore.train import train

    reviews = load_bundled("reviews")
    needed = batch * (steps + warmup)
    train_set = (reviews.train * (needed // len(reviews.train) + 1))[:needed]
    dataset = Dataset("reviews", reviews.labels, train_set, [], reviews.test[:1])
    config = TrainConfig(base_model="qwen2.5-0.5b-instruct", batch_size=batch, max_steps=steps + warmup, epochs=1,
                         eval_every=0, keep_best=False, device=device)
    events = []

    def report(event):
        if event["type"] == "step":
            if device == "cuda":
                torch.cuda.synchronize()
            events.append((time.perf_counter(), event))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as out:
        train(config, dataset, out, report=report)
    (t0, first), (t1, last) = events[warmup - 1], events[-1]
    cumulative_tokens = lambda e: e["tokens_per_s"] * e["step"] * batch / e["samples_per_s"]  # noqa: E731
    seconds = t1 - t0
    tokens = cumulative_tokens(last) - cumulative_tokens(first)
    flops = model_flops_per_token(config)
    return {
        "batch": batch, "steps": steps, "seconds": seconds, "samples_per_s": batch * steps / seconds,
        "tokens_per_s": tokens / seconds, "flops_per_token": flops, "model_tflops": flops * tokens / seconds / 1e12,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def table(rows: list[dict], peak_tflops: float | None) -> str:
    lines = ["| batch | samples/s | tokens/s | model TFLOP/s | MFU | peak GPU MB |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{r['model_tflops'] / peak_tflops:.1%}" if peak_tflops else "-"
        peak = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        speed = f"{r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['model_tflops']:.3f}"
        lines.append(f"| {r['batch']} | {speed} | {mfu} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--batches", default="8,32,128")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--layers", type=int, default=QWEN_25_05B["num_hidden_layers"], help="fewer blocks: a smoke run")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak (default: H200 bf16 on CUDA, none on CPU)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="a toy shape, 2 steps on the CPU: does the bench still run?")
    args = parser.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="tunelab-shape-smoke-") as tmp:
            args.device, args.batches, args.steps, args.warmup = "cpu", "2", 2, 1
            args.layers = SMOKE_SHAPE["num_hidden_layers"]
            build_model(Path(tmp), args.layers, SMOKE_SHAPE)
            return bench(args, Path(tmp))
    full = args.layers == QWEN_25_05B["num_hidden_layers"]
    folder = MODEL_DIR if full else MODEL_DIR.with_name(f"{MODEL_DIR.name}-{args.layers}")
    if not (folder / "config.json").exists():
        build_model(folder, args.layers)
    return bench(args, folder)


def bench(args, folder: Path) -> int:
    os.environ["TUNELAB_QWEN_PATH"] = str(folder)
    peak = args.peak_tflops or (H200_BF16_TFLOPS if args.device == "cuda" else None)
    rows = [measure(int(b), args.steps, args.warmup, args.device) for b in args.batches.split(",")]
    print(f"Qwen2.5-0.5B-shaped ({args.layers} blocks), random weights, {args.device}, {args.steps} timed steps"
          f" after {args.warmup}; peak {peak or '-'} TFLOP/s")
    print(table(rows, peak))
    if args.json:
        summary = {"layers": args.layers, "device": args.device, "peak_tflops": peak, "rows": rows}
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
