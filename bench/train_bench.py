"""Training benchmark: our LoRA loop (mlcore.train) vs TRL's SFTTrainer, on this machine.

    .venv/bin/pip install -r requirements-bench.txt      # trl==1.16.0 (make bench-train does it)
    .venv/bin/python bench/train_bench.py --steps 40 --json var/bench/train.json
    .venv/bin/python bench/train_bench.py --smoke    # the tiny test model, 2 steps, one seed: seconds (make test)

--smoke runs TRL (its defaults row) only where trl is installed (requirements-dev.txt and make bench install it).

Three trainers, each in its own subprocess (so peak RSS is per trainer), one after the other:
- ours:          mlcore.train.train(): length-grouped batches padded to their longest, the
                 shared system prompt run once per batch, lm_head only at supervised positions.
- trl_default:   SFTTrainer as a user runs it: a prompt-completion dataset (TRL masks the
                 prompt, completion_only_loss), batches padded to their longest, and TRL's
                 defaults, which include gradient checkpointing.
- trl_padded128: the same, with every batch padded to 128 tokens (pad_to_multiple_of=128; the
                 3 training reviews over 128 tokens pad their batch to 256).

Same for all three: base model (SmolLM2-135M-Instruct from our var/ cache), the bundled
"reviews" train split, prompt (system + review, via the chat template), LoRA (TrainConfig's
defaults: r=16, alpha=32, dropout 0.05, all 7 linear layers of the top N blocks (TrainConfig.lora_top_blocks), the same
blocks for TRL through peft's layers_to_transform; TRL still runs and backpropagates through
every block, ours computes the frozen blocks once per example), batch size 8,
number of optimizer steps, seeds (0, 1, 2 by default; each trainer runs once per seed and its
speed and macro-F1 are the means over them), AdamW with the same
learning rate, warmup and linear decay, clipping at 1.0, precision, torch threads and
OMP_WAIT_POLICY (PASSIVE unless set: see mlcore/__init__.py). On a CPU (the default) TRL's
bf16 default is turned off: a CPU without bf16 units runs ours in float32, so both compute in
the same precision. With --device cuda every trainer loads the model in bfloat16 and TRL's
bf16 switch is on, and the table adds each trainer's peak GPU memory. Every model is then
scored by OUR classifier (label-token scoring) on the same test split, so macro-F1 compares
what the training produced, not two scoring methods.

samples/s counts training examples per second of the training loop (optimizer steps; model
loading, dataset preparation and the final evaluation excluded). Peak RSS is the process's
high-water mark at the end of training (model loading included, evaluation not).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAINERS = ("ours", "trl_default", "trl_padded128")
BATCH_SIZE = 8
# Several seeds, because one is not enough to compare quality: at 40 steps the test macro-F1 of
# one trainer moves by +-0.03 from seed to seed (ours: 0.860 / 0.828 / 0.861 for seeds 0-2).
SEEDS = (0, 1, 2)
# "cpu" (float32, the floors in issue 4) or "cuda" (bfloat16 for every trainer); set by --device.
DEVICE = "cpu"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def peak_gpu_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if on_gpu() else None


def bench_config(model: str, steps: int, seed: int):
    from mlcore.config import TrainConfig

    # epochs only bounds the run; max_steps decides its length.
    return TrainConfig(base_model=model, batch_size=BATCH_SIZE, max_steps=steps, epochs=100, seed=seed, device=DEVICE)


def on_gpu() -> bool:
    return DEVICE == "cuda"


def run_ours(model: str, steps: int, seed: int) -> dict:
    from mlcore.data import Dataset, load_bundled
    from mlcore.train import train

    reviews = load_bundled("reviews")
    # No validation split: periodic validation is not training time for anyone here.
    dataset = Dataset(reviews.name, reviews.labels, reviews.train, [], reviews.test)
    rss = {}

    def report(event):
        if event["type"] == "step" and event["step"] == event["total_steps"]:
            rss["peak"], rss["gpu"] = peak_rss_mb(), peak_gpu_mb()  # before the test evaluation

    with tempfile.TemporaryDirectory() as out:
        result = train(bench_config(model, steps, seed), dataset, out, report=report)
    return {"samples_per_s": result.samples_per_s, "peak_rss_mb": rss["peak"], "peak_gpu_mb": rss["gpu"],
            "macro_f1": result.metrics["macro_f1"], "accuracy": result.metrics["accuracy"], "steps": result.steps}


def run_trl(model_name: str, steps: int, seed: int, padded: bool) -> dict:
    import warnings

    from datasets import Dataset as HFDataset
    from trl import SFTConfig, SFTTrainer

    from mlcore.classify import Classifier
    from mlcore.data import load_bundled
    from mlcore.evaluate import evaluate
    from mlcore.prompt import PromptFormat, chat_messages
    from mlcore.registry import load_base
    from mlcore.train import lora_config

    warnings.filterwarnings("ignore", category=FutureWarning)
    config = bench_config(model_name, steps, seed)
    reviews = load_bundled("reviews")
    prompt = PromptFormat.default(reviews.labels, config.prompt_version)  # the prompt ours trains with
    # Prompt-completion format: TRL renders both with the chat template and masks the prompt.
    rows = [
        {"prompt": chat_messages(e.text, reviews.labels, prompt=prompt),
         "completion": [{"role": "assistant", "content": e.label}]}
        for e in reviews.train
    ]
    model, tokenizer = load_base(model_name, device=DEVICE)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=BATCH_SIZE,
            learning_rate=config.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=int(config.warmup_ratio * steps),
            max_grad_norm=config.max_grad_norm,
            weight_decay=config.weight_decay,
            max_length=config.max_length,
            pad_to_multiple_of=128 if padded else None,
            seed=seed,
            bf16=on_gpu(),  # see the module docstring: the same precision as ours on each device
            use_cpu=not on_gpu(),
            report_to="none",
            save_strategy="no",
            logging_steps=10,
            disable_tqdm=True,
        )
        lora = lora_config(config, model.config.num_hidden_layers)  # the same adapter as ours
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=HFDataset.from_list(rows), processing_class=tokenizer, peft_config=lora
        )
        tick = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - tick
        rss, gpu = peak_rss_mb(), peak_gpu_mb()
    trained = trainer.model
    trained.eval()
    test = evaluate(Classifier(trained, tokenizer, reviews.labels, prompt=prompt), reviews.test)["metrics"]
    return {
        "samples_per_s": steps * BATCH_SIZE / seconds,
        "peak_rss_mb": rss,
        "peak_gpu_mb": gpu,
        "macro_f1": test["macro_f1"],
        "accuracy": test["accuracy"],
        "steps": trainer.state.global_step,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
    }


def worker(name: str, model: str, steps: int, seed: int) -> dict:
    import torch

    result = run_ours(model, steps, seed) if name == "ours" else run_trl(model, steps, seed, padded=name == "trl_padded128")
    return {**result, "torch_threads": torch.get_num_threads()}


def summarize(runs: list[dict]) -> dict:
    """One trainer over the seeds: mean speed and macro-F1, the worst peak RSS, each seed's F1."""
    f1s = [r["macro_f1"] for r in runs]
    return {
        "samples_per_s": statistics.fmean(r["samples_per_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_gpu_mb": max(r["peak_gpu_mb"] for r in runs) if on_gpu() else None,
        "macro_f1": statistics.fmean(f1s),
        "macro_f1_per_seed": f1s,
        "accuracy": statistics.fmean(r["accuracy"] for r in runs),
        "runs": runs,
    }


def run_all(model: str, steps: int, seeds: list[int], trainers: tuple[str, ...] = TRAINERS) -> dict:
    # The same OpenMP policy for every trainer (mlcore sets PASSIVE when it is imported first;
    # the TRL workers import torch before mlcore, so set it for all of them here).
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    runs: dict[str, list[dict]] = {name: [] for name in trainers}
    for seed in seeds:  # seed by seed, so that a change in machine load falls on all trainers
        for name in trainers:
            print(f"running {name} ({steps} steps, seed {seed}) ...", file=sys.stderr, flush=True)
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--steps", str(steps),
                       "--device", DEVICE, "--seeds", str(seed), "--result", f.name]
                subprocess.run(cmd, check=True, cwd=ROOT, env=env)
                runs[name].append(json.loads(Path(f.name).read_text()))
    results = {name: summarize(runs[name]) for name in trainers}
    for trl, key in (("trl_default", "speedup_vs_default"), ("trl_padded128", "speedup_vs_padded128")):
        if trl in results:
            results[key] = results["ours"]["samples_per_s"] / results[trl]["samples_per_s"]
    results["settings"] = {
        "model": model, "steps": steps, "batch_size": BATCH_SIZE, "seeds": seeds, "device": DEVICE,
        "omp_wait_policy": env["OMP_WAIT_POLICY"],
        "torch_threads": runs["ours"][0].get("torch_threads"), "load_avg_1min": os.getloadavg()[0],
    }
    return results


def print_table(r: dict) -> None:
    s = r["settings"]
    print(f"\n{s['model']}, {s['steps']} steps x batch {s['batch_size']}, seeds {s['seeds']}, "
          f"{'bfloat16 on ' + gpu_name() if on_gpu() else 'float32 on CPU'}, "
          f"{s['torch_threads']} torch threads; mean over the seeds")
    gpu_column = f" {'peak GPU MB':>11}" if on_gpu() else ""
    print(f"{'trainer':<40} {'samples/s':>9} {'peak RSS MB':>11}{gpu_column} {'macro-F1':>8} {'speed ratio':>11}  F1 per seed")
    names = {
        "ours": "ours (mlcore.train)",
        "trl_default": "TRL SFTTrainer defaults (grad ckpt on)",
        "trl_padded128": "TRL SFTTrainer, padded to 128",
    }
    for key in (name for name in TRAINERS if name in r):
        row = r[key]
        ratio = r["ours"]["samples_per_s"] / row["samples_per_s"]
        per_seed = " ".join(f"{f:.3f}" for f in row["macro_f1_per_seed"])
        gpu_cell = f" {row['peak_gpu_mb']:11.0f}" if on_gpu() else ""
        print(f"{names[key]:<40} {row['samples_per_s']:9.2f} {row['peak_rss_mb']:11.0f}{gpu_cell} {row['macro_f1']:8.3f} "
              f"{ratio:10.2f}x  {per_seed}")
    if "speedup_vs_padded128" in r:
        print(f"ours is {r['speedup_vs_default']:.2f}x TRL defaults and {r['speedup_vs_padded128']:.2f}x TRL padded to 128")
    elif "speedup_vs_default" not in r:
        print("TRL rows left out: trl is not installed (make bench installs it)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per trainer (default 40)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name of the base model")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: float32 (default); cuda: bfloat16 on the GPU for every trainer")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="the tiny test model, 2 steps, seed 0: does the bench still run?")
    parser.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args.worker, args.model, args.steps, int(args.seeds))))
        return 0
    trainers = TRAINERS
    if args.smoke:
        import importlib.util

        args.model, args.steps, args.seeds, DEVICE = "tiny-test", 2, "0", "cpu"
        # TRL's padded row is the same code with one flag: the smoke run leaves it out (~15 s).
        trainers = ("ours", "trl_default") if importlib.util.find_spec("trl") else ("ours",)
    results = run_all(args.model, args.steps, [int(seed) for seed in args.seeds.split(",")], trainers)
    print_table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
