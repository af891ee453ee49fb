"""The default lab end to end, this tree against an older commit, in one run.

    .venv/bin/python bench/lab_bench.py                       # against 84d1e7a, on the CPU
    .venv/bin/python bench/lab_bench.py --ref 84d1e7a --repeat 2 --json var/bench/lab.json
    .venv/bin/python bench/lab_bench.py --device cuda --ref none   # this tree only, on a GPU
    .venv/bin/python bench/lab_bench.py --kept --ref 46a36fd   # also: a later run on the same host
    .venv/bin/python bench/lab_bench.py --smoke        # this tree, the preset on the tiny test model: seconds

What one run times, for each tree: a fresh Python process, as the lab's Celery worker child
is, that imports the tree's mlcore, loads the default lab's preset from that tree's
labs/catalog/01-sentiment-lora.md, and calls its mlcore.train.train() with zero_shot=True
(the lab always scores the zero-shot baseline), on that tree's bundled data. Launch is the
moment the parent starts the process; "results" is when the process has written the adapter,
metrics.json and test_predictions.jsonl (all the results page reads) and exited; "first loss"
is when train() reported its first step. Not included: the Celery queue hop and the page
render (milliseconds against minutes).

The reference runs from a git worktree under var/bench/ (made on first use) with the same
virtualenv, so only the code, the preset and the data differ. Runs alternate reference /
current, so load from other processes on a shared machine hits both alike; the table gives
each run and the speed-up of the medians, in wall time and in CPU time (user + system, all
threads of the child): on a machine shared with other work the CPU time is the steadier figure.

Each lab process gets a var/ of its own (base models linked from this checkout's), so it starts
with nothing an earlier run kept: the first lab on a fresh host. `--kept` adds rows for the
current tree as every later run on that host is: one unmeasured run first keeps the zero-shot
baseline and the frozen blocks' hidden states (mlcore.lab_cache), and the "current, kept" runs
read them. It also adds "current, set up": a host's first run after `make run`'s setup kept the
default lab's cache (keep_for_later_runs, what manage.py warm_lab_cache calls), on a worker
child that imported torch and the model code while it waited (labs.worker.child_warm_start):
the clock starts when the run is handed to that process.
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

from mlcore.paths import var_dir  # noqa: E402  (this checkout's var/, as every tree's child reads it)

DEFAULT_REF = "84d1e7a"  # the default lab before issue 12 (~510 s of training on 2 CPU cores)

# Runs in the child with cwd = the tree; prints one JSON line. Only uses what every version of
# mlcore has had: TrainConfig.from_dict (in mlcore.config or, before it, mlcore.train), load_bundled,
# train(report=...).
CHILD = r"""
import json, sys, time
launched = float(sys.argv[1])
sys.path.insert(0, ".")
import yaml
from mlcore.data import load_bundled
try:
    from mlcore.config import TrainConfig
except ImportError:  # a tree from before mlcore.config: TrainConfig lived in mlcore.train
    from mlcore.train import TrainConfig
from mlcore.train import train

text = open("labs/catalog/01-sentiment-lora.md", encoding="utf-8").read()
preset = yaml.safe_load(text.split("---")[1])["preset"]
smoke = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
mode = sys.argv[5] if len(sys.argv) > 5 else "run"
config = TrainConfig.from_dict({**preset, "zero_shot": True, "device": sys.argv[3] or None, **smoke})
if mode == "keep":  # what `make run`'s setup does for the default lab (manage.py warm_lab_cache)
    from mlcore.train import keep_for_later_runs
    print(json.dumps(keep_for_later_runs(config, load_bundled(config.dataset))))
    sys.exit(0)
if mode == "warm":  # a warmed gpu worker child: imports done, then the run arrives
    import transformers.models.llama.modeling_llama
    print("ready", time.process_time(), flush=True)
    sys.stdin.readline()
    launched = time.time()
first = []
def report(event):
    if event["type"] == "step" and not first:
        first.append(time.time() - launched)
result = train(config, load_bundled(config.dataset), sys.argv[2], report=report)
print(json.dumps({
    "first_loss_s": first[0], "train_s": result.train_s, "steps": result.steps,
    "train_examples": len(load_bundled(config.dataset).train), "test_n": result.metrics["n"],
    "macro_f1": result.metrics["macro_f1"], "accuracy": result.metrics["accuracy"],
    "zero_shot_macro_f1": result.zero_shot["macro_f1"],
    "best_step": (getattr(result, "best_validation", None) or {}).get("step"),
}))
"""


def reference_tree(ref: str) -> Path:
    """A worktree of `ref` under var/bench/, made on first use."""
    tree = ROOT / "var" / "bench" / f"ref-{ref}"
    if not (tree / "mlcore").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True)
    return tree


def child_var(parent: Path) -> Path:
    """A var/ of its own for a lab process, its models/ being this checkout's (no model
    dequantization is timed): empty otherwise, so the lab finds nothing an earlier run kept
    (mlcore.lab_cache) unless it shares this var/ with that run."""
    var = Path(tempfile.mkdtemp(dir=parent, prefix="var-"))
    models = var_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)  # on a fresh checkout the first lab builds it, through the link
    (var / "models").symlink_to(models, target_is_directory=True)
    return var


def run_lab(tree: Path, device: str, overrides: dict | None = None, var: Path | None = None, mode: str = "run") -> dict:
    """One lab process, timed. mode "warm": the clock starts once the process has imported what
    a training worker's idle child imports ahead of its run (labs.worker.child_warm_start), and its
    CPU time counts from then; "keep": keep_for_later_runs() instead of a run (untimed setup)."""
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launched = time.time()
        env = os.environ | {"TUNELAB_VAR_DIR": str(var or child_var(Path(out)))}
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, repr(launched), out, device, json.dumps(overrides or {}), mode],
            cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        cpu_before_launch = 0.0
        if mode == "warm":
            cpu_before_launch = float(proc.stdout.readline().split()[1])  # "ready <CPU s so far>"
            launched = time.time()
            proc.stdin.write("go\n")
            proc.stdin.flush()
        stdout, stderr = proc.communicate()
        results_s = time.time() - launched
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"the lab failed in {tree}:\n{stderr[-3000:]}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) - cpu_before_launch
    return json.loads(stdout.strip().splitlines()[-1]) | {"results_s": results_s, "cpu_s": cpu_s}


def table(rows: list[dict], ref: str | None) -> str:
    lines = [
        "| tree | run | launch to results s | CPU s | first loss s | training s | steps | train / test reviews | "
        "test macro-F1 | zero-shot macro-F1 | best step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['tree']} | {row['run']} | {row['results_s']:.0f} | {row['cpu_s']:.0f} | {row['first_loss_s']:.1f} | "
            f"{row['train_s']:.0f} | "
            f"{row['steps']} | {row['train_examples']} / {row['test_n']} | {row['macro_f1']:.3f} | "
            f"{row['zero_shot_macro_f1']:.3f} | {row['best_step'] if row['best_step'] is not None else '-'} |"
        )
    if ref:
        for key, what in (("results_s", "launch to results"), ("cpu_s", "CPU time (all threads)")):
            for tree in sorted({r["tree"] for r in rows} - {ref}):
                median = {t: statistics.median(r[key] for r in rows if r["tree"] == t) for t in (ref, tree)}
                lines.append(f"\n{what}, medians: {ref} {median[ref]:.0f} s, {tree} {median[tree]:.0f} s: "
                             f"**{median[ref] / median[tree]:.2f}x**")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default=DEFAULT_REF, help='commit to compare against ("none": this tree only)')
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tree, alternating")
    parser.add_argument("--device", default="", help='"cpu", "cuda" or empty (automatic, as the lab does)')
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--set", dest="overrides", type=json.loads, default=None, metavar="JSON",
                        help='settings over the preset, e.g. \'{"eval_every": 0}\' (a candidate default)')
    parser.add_argument("--kept", action="store_true",
                        help="also time the current tree as a later run on the same host: reading what an earlier "
                             "run kept (mlcore.lab_cache: the zero-shot baseline, the frozen blocks' hidden states)")
    parser.add_argument("--smoke", action="store_true", help="this tree only, the tiny test model: does the bench still run?")
    args = parser.parse_args()
    overrides = args.overrides
    if args.smoke:
        sys.path.insert(0, str(ROOT))
        from bench.smoke import TINY_RUN

        args.ref, args.repeat, args.device, args.kept, overrides = "none", 1, "cpu", True, TINY_RUN
    ref = None if args.ref == "none" else args.ref
    trees = ([(ref, reference_tree(ref))] if ref else []) + [("current", ROOT)]
    (ROOT / "var").mkdir(exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as scratch:
        kept = set_up = None
        if args.kept:  # the current tree's later runs on one host: one unmeasured run keeps what it can
            kept = child_var(Path(scratch))
            run_lab(ROOT, args.device, overrides, kept)
            trees.append(("current, kept", ROOT))
            # A host set up by `make run` (the lab cache kept by its setup) whose worker child has
            # imported torch and the model code before the run arrives: a learner's first run there.
            set_up = child_var(Path(scratch))
            run_lab(ROOT, args.device, overrides, set_up, mode="keep")
            trees.append(("current, set up", ROOT))
        for run in range(1, args.repeat + 1):
            for name, tree in trees:
                var = {"current, kept": kept, "current, set up": set_up}.get(name)
                mode = "warm" if name == "current, set up" else "run"
                row = run_lab(tree, args.device, overrides, var, mode) | {"tree": name, "run": run,
                                                                         "load": os.getloadavg()[0]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(table(rows, ref))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
