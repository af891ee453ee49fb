"""Fuzz the API with generated malformed requests; count 5xx and non-JSON answers.

    .venv/bin/python bench/fault_fuzz.py [--requests 1200] [--seed 0] [--json FILE]
    .venv/bin/python bench/fault_fuzz.py --smoke      # 60 requests, seconds (make test runs it)

Starts what the API needs on free loopback ports, in production mode (DEBUG off): an embedded
Redis (the rate limiter) and `make run`'s web server (uvicorn) on a fresh SQLite database with
one learner and an API token; the tiny test model is the only model a request can load. Then it
sends generated requests to POST /api/classify, POST /v1/chat/completions and GET /v1/models (and
/v1/models/<id>): broken JSON, invalid UTF-8, lone surrogates, NUL, every field with values of
the wrong type, nested junk, wrong methods, bad tokens, bodies over the size limit (by
Content-Length, on a raw socket), and a few valid requests among them. Floors: 0 responses
with a 5xx status, 0 responses whose body is not a JSON object (a valid stream=true answer,
text/event-stream, is the one non-JSON success).

bench/fault_bench.py imports fuzz_section() for its `fuzz` figure; run_fuzz() can also be
pointed at a server that is already running.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENDPOINTS = ("/api/classify", "/v1/chat/completions", "/v1/models")
API_BODY_LIMIT = 200_000  # the server under test gets this TUNELAB_API_MAX_BODY_BYTES
OVERSIZE_BYTES = 50_000_000  # promised by the oversize requests: over any sane limit, also a default server's


# --- generated requests ---------------------------------------------------------------------


def junk(rng: random.Random, depth: int = 0):
    """A JSON value of any type, mostly the wrong one for wherever it lands."""
    simple = [None, True, False, 0, -1, 2**70, -(2**63), 1.5, 1e308, "", "x", "\ud800", "a\x00b", "\udfff\ud800",
              "🙂" * 3, "\u202e" + "evil", "x" * rng.randint(1, 3000), "run-", "run-999999", "tiny-test", "run--1",
              "../../etc/passwd", "%00", "positive", [], {}, [{}], [[]], {"": None}]
    if depth < 3 and rng.random() < 0.3:
        if rng.random() < 0.5:
            return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["text", "type", "role", "content", "a", ""]): junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(simple)


def _maybe(rng: random.Random, valid, p_valid: float = 0.5):
    return valid if rng.random() < p_valid else junk(rng)


def classify_body(rng: random.Random) -> dict:
    body = {}
    for key, valid in (("run", 999_999), ("model", "tiny-test"), ("texts", ["Nice.", "Broke."]), ("text", "Fine."),
                       ("labels", ["positive", "negative"])):
        if rng.random() < 0.6:
            body[key] = _maybe(rng, valid, 0.35)
    if rng.random() < 0.3:  # a list of texts with one poisoned item
        body["texts"] = ["ok"] * rng.randint(0, 3) + [junk(rng)] + ["ok"] * rng.randint(0, 3)
    if rng.random() < 0.05:
        body["texts"] = ["t"] * rng.randint(65, 200)  # over API_MAX_TEXTS
    return body


def chat_body(rng: random.Random) -> dict:
    message = {"role": _maybe(rng, "user", 0.7), "content": _maybe(rng, "It broke.", 0.4)}
    if rng.random() < 0.3:
        message["content"] = [{"type": _maybe(rng, "text", 0.6), "text": _maybe(rng, "Fine.", 0.4)}, junk(rng)]
    body = {"model": _maybe(rng, "tiny-test", 0.6),
            "messages": _maybe(rng, [message] if rng.random() < 0.7 else [message, junk(rng)], 0.8)}
    for key, valid in (("stream", True), ("stream_options", {"include_usage": True}), ("temperature", 0),
                       ("max_tokens", 5), ("n", 1), ("user", "u"), ("seed", 1)):
        if rng.random() < 0.25:
            body[key] = _maybe(rng, valid, 0.4)
    if rng.random() < 0.15:
        body["stream_options"] = rng.choice([[], [1], "include_usage", {"include_usage": junk(rng)}])
    return body


def encode(rng: random.Random, value) -> bytes:
    """JSON text for the value, sometimes damaged on the way."""
    text = json.dumps(value, allow_nan=True)  # NaN/Infinity: not JSON, as some clients send it
    raw = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.06:
        return raw[: rng.randint(0, max(0, len(raw) - 1))]  # truncated
    if roll < 0.10:
        return b"\xef\xbb\xbf" + raw  # a byte-order mark
    if roll < 0.14:
        cut = rng.randint(0, len(raw))
        return raw[:cut] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\", b'"']) + raw[cut:]
    if roll < 0.16:
        return b"[" * rng.randint(1000, 50_000) + b"]" * rng.randint(0, 10)  # deep nesting
    if roll < 0.18:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
    return raw


def token_header(rng: random.Random, token: str) -> dict:
    roll = rng.random()
    if roll < 0.85:
        return {"Authorization": f"Bearer {token}"}
    return rng.choice([{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer tl_" + "x" * 40},
                       {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": f"bearer  {token}"},
                       {"Authorization": b"Bearer \xe9\xe9\xe9\xff"}])  # bytes: not ASCII, sent as is


def generated_requests(n: int, seed: int, token: str) -> list[dict]:
    """n requests, spread evenly over the endpoints; deterministic for a seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        endpoint = ENDPOINTS[i % len(ENDPOINTS)]
        headers = {"Content-Type": rng.choice(["application/json"] * 6 + ["text/plain", "application/x-www-form-urlencoded",
                                                                          "multipart/form-data; boundary=x"])}
        headers.update(token_header(rng, token))
        if rng.random() < 0.015:
            out.append({"kind": "oversize", "path": endpoint, "headers": headers})
            continue
        if endpoint == "/v1/models":
            method = rng.choice(["GET"] * 5 + ["POST", "PUT", "DELETE", "PATCH"])
            model_id = quote(str(junk(rng)), safe="", errors="surrogatepass")[:300]
            path = endpoint if rng.random() < 0.5 else f"{endpoint}/{model_id}"
            if rng.random() < 0.3:
                path += "?" + quote(str(junk(rng)), safe="=&", errors="surrogatepass")[:200]
            body = encode(rng, junk(rng)) if method != "GET" or rng.random() < 0.2 else b""
        else:
            method = "POST" if rng.random() < 0.93 else rng.choice(["GET", "PUT", "DELETE"])
            path = endpoint
            value = classify_body(rng) if endpoint == "/api/classify" else chat_body(rng)
            body = encode(rng, value if rng.random() < 0.9 else junk(rng))
        out.append({"kind": "http", "method": method, "path": path, "headers": headers, "body": body})
    return out


# --- sending and judging -------------------------------------------------------------------


def _is_json_object(content: bytes) -> bool:
    try:
        return isinstance(json.loads(content), dict)
    except ValueError:
        return False


def _oversize(base_url: str, request: dict) -> tuple[int, str, bytes]:
    """Promise a body far over the limit on a raw socket, send a little of it, read the answer."""
    host, port = base_url.split("//")[1].split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in request["headers"].items() if k.lower() != "authorization")
    auth = request["headers"].get("Authorization")
    head += f"Authorization: {auth}\r\n" if isinstance(auth, str) else ""
    raw = (f"POST {request['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {OVERSIZE_BYTES}\r\n"
           "Connection: close\r\n\r\n").encode() + b'{"texts": ["' + b"x" * 4096
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1] for line in lines[1:] if ": " in line}
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


def run_fuzz(base_url: str, token: str, *, n: int = 1200, seed: int = 0, concurrency: int = 4) -> dict:
    """Send n generated requests to a running server: {"requests", "5xx", "non_json", ...}."""
    import httpx

    requests = generated_requests(n, seed, token)
    statuses: Counter = Counter()
    failures: list[dict] = []

    latencies: list[float] = []
    slowest: dict = {}

    def send(client: httpx.Client, request: dict) -> None:
        tick = time.monotonic()
        try:
            if request["kind"] == "oversize":
                status, content_type, body = _oversize(base_url, request)
            else:
                response = client.request(request["method"], base_url + request["path"], headers=request["headers"],
                                          content=request["body"])
                status, content_type, body = response.status_code, response.headers.get("content-type", ""), response.content
        except Exception as exc:  # a dropped connection is a failure too
            statuses["transport_error"] += 1
            failures.append({"path": request["path"], "error": f"{type(exc).__name__}: {exc}"[:300],
                             "method": request.get("method"), "headers": {k: str(v) for k, v in request["headers"].items()},
                             "sent": (request.get("body") or b"")[:300].decode("utf-8", "replace")})
            return
        statuses[status] += 1
        latencies.append(time.monotonic() - tick)
        if latencies[-1] >= max(latencies):
            slowest.update(path=request["path"], status=status, seconds=round(latencies[-1], 2),
                           sent=(request.get("body") or b"")[:200].decode("utf-8", "replace"))
        stream = status == 200 and content_type.startswith("text/event-stream")
        json_ok = stream or (content_type.startswith("application/json") and _is_json_object(body))
        if not json_ok:
            statuses["non_json"] += 1
        if status >= 500 or not json_ok:
            failures.append({"path": request["path"], "status": status, "content_type": content_type,
                             "body": body[:300].decode("utf-8", "replace"),
                             "sent": (request.get("body") or b"")[:200].decode("utf-8", "replace")})

    def worker(chunk: list[dict]) -> None:
        with httpx.Client(timeout=180) as client:
            for request in chunk:
                send(client, request)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, [requests[i::concurrency] for i in range(concurrency)]))
    five_xx = sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500)
    return {
        "requests": len(requests), "5xx": five_xx, "non_json": statuses.pop("non_json", 0),
        "transport_errors": statuses.pop("transport_error", 0),
        "by_status": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "by_endpoint": dict(Counter(r["path"].split("?")[0] if not r["path"].startswith("/v1/models/") else "/v1/models/<id>"
                                    for r in requests)),
        "seconds": round(time.monotonic() - started, 1),
        "slowest": slowest,
        "failures": failures[:20],
    }


# --- the stack it needs --------------------------------------------------------------------

_SETUP = """
import django; django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from inference.models import ApiToken
call_command("migrate", verbosity=0)
user = get_user_model().objects.create_user("fuzzer", password="fuzz-password-123")
print(ApiToken.issue(user=user, name="fuzz")[1])
"""


def fuzz_section(*, n: int = 1200, seed: int = 0) -> dict:
    """Start Redis + `make run`'s web server on free loopback ports (fresh database, production mode),
    fuzz, stop."""
    import httpx

    from mlcore.paths import models_dir
    from scripts.redis_server import RedisServer, free_port
    from scripts.runstack import web_command

    tmp = Path(tempfile.mkdtemp(prefix="tunelab-fuzz-"))
    if models_dir().is_dir():  # the model caches are only read here and slow to build: share this checkout's
        (tmp / "var").mkdir()
        (tmp / "var" / "models").symlink_to(models_dir().resolve(), target_is_directory=True)
    redis = RedisServer(port=free_port(), data_dir=tmp / "redis", persist=False)
    redis.start()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
           "DJANGO_SETTINGS_MODULE": "config.settings", "TUNELAB_VAR_DIR": str(tmp / "var"),
           "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}", "REDIS_URL": redis.url, "TUNELAB_ALLOW_TEST_MODEL": "1",
           "TUNELAB_TEXTS_PER_MINUTE": "10000000", "TUNELAB_API_MAX_BODY_BYTES": str(API_BODY_LIMIT),
           "TUNELAB_INFERENCE_THREADS": "1", "OMP_NUM_THREADS": "1", "TUNELAB_LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1"}
    server = None
    try:
        token = subprocess.run([sys.executable, "-c", _SETUP], cwd=ROOT, env=env, capture_output=True, text=True,
                               check=True, timeout=300).stdout.strip().splitlines()[-1]
        port = free_port()
        log = open(tmp / "web.log", "wb")
        # `make run`'s own web server (one process: the warm-up below loads the model in it).
        server = subprocess.Popen(web_command(sys.executable, host="127.0.0.1", port=port, processes=1, trusted_proxies=""),
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((tmp / "web.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        # Load the test model once first (~15 s on a busy 2-core machine): the fuzz then measures
        # answers, not the first request's model load.
        httpx.post(f"{base_url}/api/classify", json={"model": "tiny-test", "texts": ["warm-up"]},
                   headers={"Authorization": f"Bearer {token}"}, timeout=600).raise_for_status()
        result = run_fuzz(base_url, token, n=n, seed=seed)
        result["server_log_tracebacks"] = (tmp / "web.log").read_text(errors="replace").count("Traceback")
        return result
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200, help="generated requests (spread over the 3 endpoints)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="60 requests: does the bench still run? (make test)")
    args = parser.parse_args(argv)
    result = fuzz_section(n=60 if args.smoke else args.requests, seed=args.seed)
    print(f"{'requests':>9} {'5xx':>5} {'non-JSON':>9} {'dropped':>8} {'seconds':>8}   (floors: 5xx 0, non-JSON 0)")
    print(f"{result['requests']:9} {result['5xx']:5} {result['non_json']:9} {result['transport_errors']:8} {result['seconds']:8}")
    print("by status:", ", ".join(f"{k}: {v}" for k, v in result["by_status"].items()))
    for failure in result["failures"][:5]:
        print("failure:", json.dumps(failure)[:400])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["5xx"] == 0 and result["non_json"] == 0 and result["transport_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
