"""API benchmark: POST /api/classify end to end against a real Daphne server.

    .venv/bin/python bench/api_bench.py --adapter var/bench/adapter --requests 64 --json out.json
    .venv/bin/python bench/api_bench.py --smoke     # the tiny test model, 4 requests: seconds (make test)

Sets up a throwaway world under a temporary folder (SQLite database, an embedded Redis, a user,
an API token, a succeeded run whose artifact is the given adapter), starts Daphne on it, and
measures requests/s and p50/p95 latency of one review per request with 1 and with 8 clients
sending at once (each client waits for its answer before sending the next). The server keeps
the classifier loaded after a warm-up request; the rate limit is raised out of the way.
Also one line for POST /v1/chat/completions through the official `openai` client (1 client).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))] if values else float("nan")


def setup_world(tmp: Path, adapter: Path, env: dict) -> tuple[str, int]:
    """Migrate a fresh database and create a user, token and succeeded run; (token, run id)."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from inference.models import ApiToken
    from labs.models import Run
    from labs.services import build_config

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-123")
    _, token = ApiToken.issue(user=user, name="bench")
    train_config = json.loads((adapter / "train_config.json").read_text())
    run = Run.objects.create(owner=user, status=Run.Status.SUCCEEDED,
                             config=build_config({k: v for k, v in train_config.items() if k not in ("device", "continue_from")}))
    shutil.copytree(adapter, Path(settings.ARTIFACTS_DIR) / f"run-{run.pk}", ignore=shutil.ignore_patterns("checkpoint*"))
    return token, run.pk


def measure(base_url: str, token: str, run_id: int, texts: list[str], clients: int, requests: int) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []

    def client_loop(worker: int):
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
            for i in range(worker, requests, clients):
                tick = time.perf_counter()
                response = http.post("/api/classify", json={"run": run_id, "texts": [texts[i % len(texts)]]})
                latencies.append(time.perf_counter() - tick)
                response.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client_loop, range(clients)))
    elapsed = time.perf_counter() - started
    return {"clients": clients, "requests": requests, "requests_per_s": requests / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000}


def measure_openai(base_url: str, token: str, run_id: int, texts: list[str], requests: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=120)
    latencies = []
    started = time.perf_counter()
    for i in range(requests):
        tick = time.perf_counter()
        client.chat.completions.create(model=f"run-{run_id}", messages=[{"role": "user", "content": texts[i % len(texts)]}])
        latencies.append(time.perf_counter() - tick)
    elapsed = time.perf_counter() - started
    return {"clients": 1, "requests": requests, "requests_per_s": requests / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default=str(ROOT / "var/bench/adapter"), help="a trained adapter directory")
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=0, help="TUNELAB_INFERENCE_THREADS for the server (0 = torch default)")
    parser.add_argument("--backend", choices=("openvino", "torch"), default="openvino",
                        help="TUNELAB_INFERENCE_BACKEND for the server (default openvino, as served; torch in --smoke)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="a tiny-model adapter and 4 requests: does the bench still run?")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tunelab-api-bench-"))
    if args.smoke:
        from bench.smoke import tiny_adapter

        args.adapter, args.requests, args.backend = tiny_adapter(tmp / "adapter"), 4, "torch"
    adapter = Path(args.adapter)
    if not (adapter / "adapter_config.json").exists():
        parser.error(f"{adapter} holds no adapter: train one (bench/infer_bench.py --train-quick) or pass --adapter")

    from mlcore.data import load_bundled
    from scripts.redis_server import RedisServer, free_port

    texts = [e.text for e in load_bundled("reviews").test]
    redis = RedisServer(port=free_port(), data_dir=tmp / "redis", persist=False)
    redis.start()
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}", "REDIS_URL": redis.url, "TUNELAB_ARTIFACTS_DIR": str(tmp / "runs"),
        "TUNELAB_TEXTS_PER_MINUTE": "1000000", "TUNELAB_INFERENCE_THREADS": str(args.threads), "DJANGO_DEBUG": "true",
        "TUNELAB_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", "TUNELAB_INFERENCE_BACKEND": args.backend,
    }
    if args.backend == "openvino":
        # What a finished run's requests find a minute after its first one: the export built (here,
        # or cached from an earlier bench: it is keyed on the adapter's content, not its folder).
        from mlcore import onnx_serving

        base_model = json.loads((adapter / "train_config.json").read_text())["base_model"]
        print(f"OpenVINO export: {onnx_serving.ensure_export(base_model, adapter)}", flush=True)
    server = None
    try:
        token, run_id = setup_world(tmp, adapter, env)
        log = open(tmp / "daphne.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
                                  cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + 120
        while True:  # up, and the classifier loaded (the first request loads it)
            try:
                httpx.post(f"{base_url}/api/classify", json={"run": run_id, "texts": ["warm-up"]},
                           headers={"Authorization": f"Bearer {token}"}, timeout=120).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((tmp / "daphne.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        if args.backend == "openvino":
            time.sleep(5)  # the server compiles the cached export in the background after its first load (~1 s)
        results = {
            "api_classify": [measure(base_url, token, run_id, texts, clients, args.requests) for clients in (1, 8)],
            "v1_chat_completions": measure_openai(base_url, token, run_id, texts, max(8, args.requests // 4)),
            "threads": args.threads or "torch default", "load_avg_1min": os.getloadavg()[0], "backend": args.backend,
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'endpoint':28} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    rows = [("POST /api/classify", row) for row in results["api_classify"]]
    rows.append(("POST /v1/chat/completions", results["v1_chat_completions"]))
    for name, row in rows:
        print(f"{name:28} {row['clients']:7} {row['requests_per_s']:7.1f} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f}")
    print(f"(one review per request; {args.backend}; load average {results['load_avg_1min']:.1f} at the end)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
