"""Faults survived, with figures: a real stack (scripts/runstack.py: embedded Redis, Daphne, Celery
gpu + default workers, beat) on free loopback ports, a fresh SQLite database, the tiny test model
and few steps, and then the faults and loads of issue 11.

    .venv/bin/python bench/fault_bench.py [--json FILE] [--only redis_kill,worker_kill,...]
    .venv/bin/python bench/fault_bench.py --smoke     # seconds: does the bench still run? (make test)

Sections (each prints one table row; --json writes them all):
- redis_kill: kill -9 Redis with 3 runs queued and 1 running; the supervisor restarts it.
- worker_kill: SIGKILL the gpu worker mid-run; the run resumes from its checkpoint. Then the same
  with the run's attempts used up: how long until it is failed with a reason.
- web_restart: kill the web process mid-run while a browser-like viewer follows the run.
- stream_viewers: 100 websocket viewers on one live run.
- quiz_load: 50 learners browsing, answering and autosaving at once for a bounded time.
- quiz_burst: quiz_load's burst mode, a class arriving at once: 50, 100 and 200 learners, a quarter
  of them with no think time, against 1 web process and then TUNELAB_WEB_PROCESSES=2 (the same
  stack restarted): p50/p95/errors/rps per level.
- fuzz: bench/fault_fuzz.py's generated malformed API requests (when that file is present).
- fairness: 5 learners each launch a 3-run group, 2 gpu workers (a second stack).
- multi_host: a web host with no gpu worker and two worker "hosts" (own var dirs, only the database
  and Redis shared): runs start on B, B is killed past a checkpoint and its disk deleted, C resumes
  from the stored checkpoint; the web host serves the run and builds its GGUF (a stack of its own).
- abuse: a scripted learner tries each path issue 21 found unmetered (prompt tokens, GGUF exports,
  upload churn, the serving cache, heavy JSON columns, the GPU quota, sign-up, websockets, hostile
  input) against small limits (a stack of its own): per path what was refused, bytes stored and
  worker seconds; "unmetered paths" and "5xx" (floors 0 and 0).

A viewer behaves like the run page's script: it reconnects with ?after=<last seq> when its socket
drops, so missing/duplicate counts are what a learner would have seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.browser_http import BrowserHTTP, HTTPError  # noqa: E402
from bench.smoke import TINY_RUN  # noqa: E402
from scripts.redis_server import free_port  # noqa: E402

# What this bench changes from the training defaults; launch_form() adds every other field.
TINY = dict(TINY_RUN, lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
# A learner's pause before each action in quiz_load: 1-3 s, uniformly drawn (seeded). Faster than
# a person reads a question or types an answer; one action = one request, as the browser sends them
# (the autosave fires 800 ms after typing stops).
THINK_S = (1.0, 3.0)
# quiz_burst: the class sizes measured, the share of learners who never pause (scripted clicking,
# a page reloaded in a loop) and the web process counts compared.
BURST_LEVELS = (50, 100, 200)
BURST_NO_THINK = 0.25
BURST_PROCESSES = (1, 2)
SECTIONS = ("redis_kill", "worker_kill", "web_restart", "stream_viewers", "quiz_load", "quiz_burst", "fuzz", "fairness",
            "multi_host", "abuse")
SINGLE_STACK = ("redis_kill", "worker_kill", "web_restart", "stream_viewers", "quiz_load", "quiz_burst")
# --smoke: one stack with two web processes, a tiny run followed by a few viewers, a short quiz
# load and a short burst (~40 s); it proves the launch form, the stack, the sockets and several
# web processes still work, not any figure.
SMOKE_PROCESSES = 2
SMOKE = {"stream_viewers": dict(n=3, epochs=2), "quiz_load": dict(users=4, seconds=3, think_s=(0.05, 0.2)),
         "quiz_burst": dict(levels=(4,), seconds=2, processes=(SMOKE_PROCESSES,), think_s=(0.05, 0.2)),
         "abuse": dict(runs=2)}
# Sections on a stack of their own: its gpu workers and environment. multi_host: a web host with
# no gpu worker (the workers are other "hosts"), one gpu slot; abuse: small limits (configure_abuse).
OWN_STACKS = {"multi_host": dict(gpu_workers=0, env={"TUNELAB_GPU_SLOTS": "1"}), "abuse": dict(gpu_workers=1, env={})}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the stack -------------------------------------------------------------------------------


class Stack:
    """scripts/runstack.py in a temporary var/ with its own database, ports and Redis."""

    def __init__(self, *, gpu_workers: int, web_processes: int = 1):
        self.tmp = Path(tempfile.mkdtemp(prefix="tunelab-faults-"))
        self.var = self.tmp / "var"
        self.var.mkdir()
        # The model caches are read-only here and slow to build: share the checkout's.
        (self.var / "models").symlink_to(ROOT / "var" / "models", target_is_directory=True)
        self.port, self.redis_port = free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TUNELAB_", "REDIS_URL", "DATABASE_URL"))},
            "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "TUNELAB_VAR_DIR": str(self.var), "DATABASE_URL": f"sqlite:///{self.var / 'bench.sqlite3'}",
            "TUNELAB_PORT": str(self.port), "TUNELAB_REDIS_PORT": str(self.redis_port),
            "TUNELAB_GPU_WORKERS": str(gpu_workers), "TUNELAB_WEB_PROCESSES": str(web_processes),
            "TUNELAB_ALLOW_TEST_MODEL": "1",
            "TUNELAB_HEARTBEAT_INTERVAL": "0.5", "TUNELAB_HEARTBEAT_TIMEOUT": "5", "TUNELAB_REAPER_INTERVAL": "2",
            "TUNELAB_CHECKPOINT_EVERY": "5", "TUNELAB_DISPATCH_TIMEOUT": "20", "TUNELAB_MAX_ACTIVE_RUNS": "20",
            "TUNELAB_SHUTDOWN_GRACE": "30", "TUNELAB_LOG_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen | None = None
        self.log = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self) -> None:
        for command in (["migrate", "--noinput"], ["setup_site", "--skip-model"], ["collectstatic", "--noinput"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=self.env, check=True,
                           stdout=subprocess.DEVNULL)
        os.environ.update({k: self.env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "TUNELAB_VAR_DIR",
                                                       "TUNELAB_ALLOW_TEST_MODEL", "TUNELAB_CHECKPOINT_EVERY")})
        os.environ["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        import django

        django.setup()

    @property
    def web_processes(self) -> int:
        return int(self.env["TUNELAB_WEB_PROCESSES"])

    def start(self) -> None:
        self.log = open(self.tmp / "runstack.log", "ab")
        self.process = subprocess.Popen([sys.executable, "scripts/runstack.py"], cwd=ROOT, env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        gpus = {f"gpu{i}" for i in range(1, int(self.env["TUNELAB_GPU_WORKERS"]) + 1)}
        wait_until(lambda: {"web", "default", "beat", "redis"} | gpus <= set(self.pids()), 60, "runstack.json")
        import httpx

        try:
            wait_until(lambda: _get_ok(httpx, f"http://{self.address}/healthz"), 120, "the web server")
        except TimeoutError as exc:  # the stack's folder goes with it: say what its log said
            raise TimeoutError(f"{exc}; runstack.log ends: {(self.tmp / 'runstack.log').read_text()[-1500:]}") from None

    def pids(self) -> dict:
        try:
            return json.loads((self.var / "runstack.json").read_text())
        except (OSError, ValueError):
            return {}

    def kill(self, name: str) -> int:
        pid = self.pids()[name]
        os.killpg(pid, signal.SIGKILL) if name != "redis" else os.kill(pid, signal.SIGKILL)
        return pid

    def restart(self, *, web_processes: int) -> None:
        """The same database and var/ under another web process count (runstack stops in order)."""
        self.halt()
        self.env["TUNELAB_WEB_PROCESSES"] = str(web_processes)
        wait_until(lambda: not (self.var / "runstack.json").exists(), 30, "the old stack to be gone")
        self.start()

    def halt(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.log is not None:
            self.log.close()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _get_ok(httpx, url) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


# --- learners --------------------------------------------------------------------------------


def learner(name: str, stack: Stack) -> dict:
    """A user with a logged-in session: {"user", "cookie"} (sessions are made directly, so the
    login throttle is not what is measured)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, created = get_user_model().objects.get_or_create(username=name)
    if created:  # (a new password would end the user's other sessions)
        user.set_unusable_password()  # (hashing 50 passwords would cost the bench ~20 s of CPU)
        user.save()
    client = Client()
    client.force_login(user)
    return {"user": user, "cookie": client.cookies["sessionid"].value}


def http_for(stack: Stack, who: dict):
    import httpx

    return httpx.Client(base_url=f"http://{stack.address}", cookies={"sessionid": who["cookie"]},
                        headers={"Referer": f"http://{stack.address}/"}, timeout=60)


def launch_form(**overrides) -> dict:
    """What a browser posts from the launch form: TINY's settings over TrainConfig's defaults."""
    from labs.forms import posted_form

    return posted_form(**{**TINY, **overrides})


def launch(stack: Stack, who: dict, lab: str = "sentiment-lora", **overrides) -> list[int]:
    """POST the launch form like a browser; the ids of the runs it created."""
    from labs.models import Run

    before = set(Run.objects.filter(owner=who["user"]).values_list("pk", flat=True))
    with http_for(stack, who) as http:
        http.get("/labs/")  # (sets the CSRF cookie)
        data = {**launch_form(**overrides), "csrfmiddlewaretoken": http.cookies["csrftoken"]}
        response = http.post(f"/labs/{lab}/launch/", data=data)
    if response.status_code != 302:
        raise RuntimeError(f"launch refused ({response.status_code}): {response.text[-1500:]}")
    return sorted(set(Run.objects.filter(owner=who["user"]).values_list("pk", flat=True)) - before)


def finished(run_ids) -> bool:
    from labs.models import Run

    return not Run.objects.filter(pk__in=run_ids, status__in=Run.ACTIVE).exists()


def db_seqs(run_id: int) -> list[int]:
    from labs.models import RunEvent

    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))


async def view(stack: Stack, who: dict, run_id: int, received: list[int], *, deadline: float) -> None:
    """Follow a run like the page does: read, and on a dropped socket reconnect after the last seq."""
    import websockets

    last = 0
    while time.monotonic() < deadline:
        url = f"ws://{stack.address}/ws/labs/runs/{run_id}/?after={last}"
        try:
            async with websockets.connect(url, additional_headers={"Cookie": f"sessionid={who['cookie']}"},
                                          origin=f"http://{stack.address}", open_timeout=20) as socket:
                while True:
                    message = json.loads(await asyncio.wait_for(socket.recv(), timeout=max(1, deadline - time.monotonic())))
                    if message["type"] == "end":
                        return
                    received.append(message["seq"])
                    last = max(last, message["seq"])
        except (TimeoutError, OSError, websockets.exceptions.WebSocketException):
            await asyncio.sleep(0.5)


def compare(run_id: int, received: list[int]) -> tuple[int, int]:
    """(missing, duplicate) events of what a viewer received against the database."""
    stored = db_seqs(run_id)
    return len(set(stored) - set(received)), len(received) - len(set(received))


async def follow_all(stack, who, run_ids, timeout):
    received = {pk: [] for pk in run_ids}
    deadline = time.monotonic() + timeout
    await asyncio.gather(*(view(stack, who, pk, received[pk], deadline=deadline) for pk in run_ids))
    return received


class Viewers:
    """Websocket viewers on runs, in a thread of their own while the bench breaks things."""

    def __init__(self, stack, who, run_ids, timeout=300, copies=1):
        import threading

        self.run_ids, self.copies = list(run_ids), copies
        self.received: list[tuple[int, list[int]]] = [(pk, []) for pk in self.run_ids for _ in range(copies)]

        async def main():
            deadline = time.monotonic() + timeout
            await asyncio.gather(*(view(stack, who, pk, seqs, deadline=deadline) for pk, seqs in self.received))

        self.thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self.thread.start()

    def join(self, timeout=None) -> list[tuple[int, list[int]]]:
        self.thread.join(timeout)
        return self.received


def run_state(run_id: int):
    from labs.models import Run

    return Run.objects.get(pk=run_id)


def steps_seen(run_id: int) -> int:
    from labs.models import RunEvent

    steps = RunEvent.objects.filter(run_id=run_id, type="step").values_list("payload", flat=True)
    return max((p["step"] for p in steps), default=0)


# --- sections --------------------------------------------------------------------------------


def section_redis_kill(stack: Stack) -> dict:
    from labs.models import Run

    who = learner("redis-kill", stack)
    runs = [pk for _ in range(4) for pk in launch(stack, who, epochs=8)]  # 16 steps each
    viewers = Viewers(stack, who, runs, timeout=400)
    wait_until(lambda: steps_seen(runs[0]) >= 3, 120, "the first run to be training")
    queued = Run.objects.filter(pk__in=runs, status=Run.Status.QUEUED).count()
    stack.kill("redis")
    old = stack.pids().get("redis")
    wait_until(lambda: stack.pids().get("redis") not in (None, old), 30, "the supervisor to restart Redis")
    try:
        wait_until(lambda: finished(runs), 400, "the runs to finish")
    except TimeoutError:
        pass
    received = dict(viewers.join(timeout=60))
    counts = [compare(pk, received[pk]) for pk in runs]
    return {"runs": len(runs), "queued_at_kill": queued,
            "succeeded": Run.objects.filter(pk__in=runs, status=Run.Status.SUCCEEDED).count(),
            "stuck": Run.objects.filter(pk__in=runs, status__in=Run.ACTIVE).count(),
            "missing_events": sum(m for m, _ in counts), "duplicate_events": sum(d for _, d in counts)}


def _kill_gpu_mid_run(stack: Stack, who: dict, *, exhaust: bool) -> tuple[int, float]:
    from django.conf import settings

    from labs.models import Run

    (run_id,) = launch(stack, who, epochs=15)  # 30 steps, a checkpoint every 5
    wait_until(lambda: steps_seen(run_id) >= 8, 180, "step 8")
    if exhaust:  # as if this were its last allowed attempt: it must be failed, with the reason
        Run.objects.filter(pk=run_id).update(attempts=settings.RUN_MAX_ATTEMPTS)
    stack.kill("gpu1")
    return run_id, time.monotonic()


def section_worker_kill(stack: Stack) -> dict:
    from labs.models import Run

    who = learner("worker-kill", stack)
    run_id, killed = _kill_gpu_mid_run(stack, who, exhaust=False)
    lost_at = steps_seen(run_id)
    wait_until(lambda: finished([run_id]), 300, "the resumed run")
    run = run_state(run_id)
    resumed_log = run.events.filter(type="log", payload__message__startswith="Resuming from the checkpoint at step").first()
    checkpoint = int(resumed_log.payload["message"].rstrip(".").split()[-1]) if resumed_log else 0
    result = {"resumed": run.status == Run.Status.SUCCEEDED and resumed_log is not None,
              "steps_lost": lost_at - checkpoint if resumed_log else lost_at,
              "resumed_and_done_s": round(time.monotonic() - killed, 1)}
    wait_until(lambda: "gpu1" in stack.pids() and _alive(stack.pids()["gpu1"]), 60, "the restarted worker")
    run_id, killed = _kill_gpu_mid_run(stack, who, exhaust=True)
    wait_until(lambda: finished([run_id]), 120, "the failure")
    run = run_state(run_id)
    failed = run.status == Run.Status.FAILED and run.error
    result["failed_with_reason_s"] = round(time.monotonic() - killed, 1) if failed else None
    result["reason"] = run.error[:160]
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def section_web_restart(stack: Stack) -> dict:
    who = learner("web-restart", stack)
    (run_id,) = launch(stack, who, epochs=15)
    viewers = Viewers(stack, who, [run_id], timeout=300)
    wait_until(lambda: steps_seen(run_id) >= 4, 180, "step 4")
    stack.kill("web")
    wait_until(lambda: finished([run_id]), 300, "the run")
    (_, received), = viewers.join(timeout=120)
    missing, duplicate = compare(run_id, received)
    return {"missing_events": missing, "duplicate_events": duplicate}


def section_stream_viewers(stack: Stack, n: int = 100, epochs: int = 10) -> dict:
    who = learner("stream", stack)
    (run_id,) = launch(stack, who, epochs=epochs)
    viewers = Viewers(stack, who, [run_id], timeout=300, copies=n)
    wait_until(lambda: finished([run_id]), 300, "the run")
    received = viewers.join(timeout=120)
    stored = db_seqs(run_id)
    return {"viewers": n, "complete": sum(1 for _, seqs in received if seqs == stored), "events": len(stored)}


def section_quiz_load(stack: Stack, users: int = 50, seconds: float = 30, think_s: tuple = THINK_S) -> dict:
    learners = [learner(f"quiz-{i}", stack) for i in range(users)]
    return quiz_traffic(stack, learners, seconds=seconds, think_s=think_s)


def section_quiz_burst(stack: Stack, levels: tuple = BURST_LEVELS, seconds: float = 20,
                       processes: tuple = BURST_PROCESSES, think_s: tuple = THINK_S) -> dict:
    """quiz_load's burst mode: the curve over class sizes, a quarter of each class never pausing,
    for each web process count (the stack is restarted between counts, same database)."""
    learners = [learner(f"burst-{i}", stack) for i in range(max(levels))]
    result = {"no_think_share": BURST_NO_THINK, "seconds": seconds, "load_average": None, "curve": {}}
    for count in processes:
        if count != stack.web_processes:
            stack.restart(web_processes=count)
        for users in levels:
            row = quiz_traffic(stack, learners[:users], seconds=seconds, think_s=think_s,
                               no_think=round(users * BURST_NO_THINK))
            row["load_average_1m"] = round(os.getloadavg()[0], 1)
            result["curve"][f"{count}x{users}"] = row
            print(f"  quiz_burst {count} web process(es), {users:3} learners: {json.dumps(row)}", flush=True)
    result["load_average"] = round(os.getloadavg()[1], 1)
    return result


def quiz_traffic(stack: Stack, learners: list[dict], *, seconds: float, think_s: tuple, no_think: int = 0) -> dict:
    """Learners browse quizzes, open questions, autosave and answer for `seconds`: each one pauses
    `think_s` before every request, except the first `no_think`, who only pause on arrival. Each
    learner is a browser tab with its own keep-alive connection (bench/browser_http.py)."""
    from quiz.models import Quiz

    quiz = Quiz.objects.order_by("pk").first()
    host, port = stack.address.rsplit(":", 1)
    timings: list[float] = []
    errors, error_kinds = 0, {}

    async def one(who, pauses: bool):
        nonlocal errors
        http = BrowserHTTP(host, int(port), cookies={"sessionid": who["cookie"]},
                           headers={"Referer": f"http://{stack.address}/"})

        async def call(method, url, data=None):
            nonlocal errors
            started = time.perf_counter()
            try:
                response = await http.request(method, url, data)
                ok, kind = response.status_code < 400, str(response.status_code)
            except HTTPError as exc:
                response, ok, kind = None, False, str(exc).split(":")[0]
            timings.append(time.perf_counter() - started)
            errors += not ok
            if not ok:
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
            return response

        pause = random.Random(who["cookie"])

        async def think():
            await asyncio.sleep(pause.uniform(*think_s) if pauses else 0)

        try:
            await asyncio.sleep(pause.uniform(*think_s))  # learners arrive over a few seconds, not in the same millisecond
            await call("GET", "/quiz/quizzes/")  # (sets the CSRF cookie)
            start = await call("POST", f"/quiz/quizzes/{quiz.slug}/start/",
                               {"csrfmiddlewaretoken": http.cookies.get("csrftoken", "")})
            attempt = start.headers.get("location", "") if start is not None else ""
            n = 1
            while time.monotonic() < end:
                token = {"csrfmiddlewaretoken": http.cookies.get("csrftoken", "")}
                await think()
                await call("GET", "/quiz/")
                if attempt:
                    base = attempt.rsplit("/", 2)[0]
                    await think()
                    await call("GET", f"{base}/{n}/")
                    await think()
                    await call("POST", f"{base}/{n}/autosave/", {**token, "text": f"my answer {time.time()}"})
                    await think()
                    await call("POST", f"{base}/{n}/", {**token, "text": "final answer", "go": "next"})
                    n = n % 5 + 1
        finally:
            await http.aclose()

    async def main():
        await asyncio.gather(*(one(who, i >= no_think) for i, who in enumerate(learners)))

    end = time.monotonic() + seconds
    server_cpu, client_cpu = web_cpu_seconds(stack), time.process_time()
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(main())
    server_cpu, client_cpu = web_cpu_seconds(stack) - server_cpu, time.process_time() - client_cpu
    ms = sorted(t * 1000 for t in timings)
    return {"users": len(learners), "no_think": no_think, "seconds": seconds, "requests": len(ms),
            "rps": round(len(ms) / seconds, 1), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[max(0, int(len(ms) * 0.95) - 1)], 1), "errors": errors, "error_kinds": error_kinds,
            # CPU per request does not depend on what else the machine runs, unlike the latencies:
            # the web processes' (the server's cost) and this bench's own (the simulated browsers').
            "server_cpu_ms_per_request": round(server_cpu * 1000 / max(1, len(ms)), 2),
            "client_cpu_ms_per_request": round(client_cpu * 1000 / max(1, len(ms)), 2)}


def _fast_loop():
    """uvloop's event loop where installed (it comes with uvicorn[standard]): the simulated browsers
    share the server's 2 cores, and every bit of CPU they spend is taken from what is measured."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def web_cpu_seconds(stack) -> float:
    """CPU seconds used so far by the web server: its process and every process it started."""
    import psutil  # (a dependency of peft, always installed with the ML stack)

    try:
        parent = psutil.Process(stack.pids()["web"])
        total = 0.0
        for process in (parent, *parent.children(recursive=True)):
            times = process.cpu_times()
            total += times.user + times.system
        return total
    except (KeyError, psutil.Error):
        return 0.0


def section_fuzz() -> dict:
    try:
        from bench.fault_fuzz import fuzz_section
    except ImportError:
        return {"skipped": "bench/fault_fuzz.py is not there"}
    return fuzz_section()


def section_fairness(stack: Stack, learners: int = 5) -> dict:
    from labs.models import Run

    people = [learner(f"fair-{i}", stack) for i in range(learners)]
    t0 = time.monotonic()
    from django.utils import timezone

    launched_at = timezone.now()
    groups = {who["user"].username: launch(stack, who, lab="rank-sweep") for who in people}
    all_runs = [pk for runs in groups.values() for pk in runs]
    wait_until(lambda: finished(all_runs), 900, "every group")
    starts = {name: sorted(Run.objects.filter(pk__in=runs).values_list("started_at", flat=True)) for name, runs in groups.items()}
    first = {name: round((s[0] - launched_at).total_seconds(), 1) for name, s in starts.items()}
    last_first = max(s[0] for s in starts.values())
    first_third = min(s[2] for s in starts.values())
    return {"first_start_s": first, "every_first_before_any_third": last_first < first_third,
            "all_done_s": round(time.monotonic() - t0, 1),
            "succeeded": Run.objects.filter(pk__in=all_runs, status=Run.Status.SUCCEEDED).count(), "runs": len(all_runs)}


# --- several hosts ---------------------------------------------------------------------------


class WorkerHost:
    """A gpu worker as on another machine: its own var dir; only DATABASE_URL and REDIS_URL (and the
    read-only model cache, to save the build) in common with the stack."""

    def __init__(self, stack: Stack, name: str):
        self.name, self.var = name, stack.tmp / f"host-{name}"
        self.var.mkdir()
        (self.var / "models").symlink_to(ROOT / "var" / "models", target_is_directory=True)
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED", "OMP_NUM_THREADS",
                "DATABASE_URL", "TUNELAB_ALLOW_TEST_MODEL", "TUNELAB_HEARTBEAT_INTERVAL", "TUNELAB_LOG_LEVEL")
        env = {k: v for k, v in stack.env.items() if k in keep}
        env.update(REDIS_URL=f"redis://127.0.0.1:{stack.redis_port}/0", TUNELAB_VAR_DIR=str(self.var))
        self.log = open(stack.tmp / f"host-{name}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "-c", "1", "--max-tasks-per-child", "1",
             "-n", f"gpu@host-{name}", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """The machine is gone, and its disk with it."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.var, ignore_errors=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def section_multi_host(stack: Stack, runs: int = 2, quant: str = "q8_0") -> dict:
    """Runs launched on the web host (a stack with no gpu worker of its own) start on worker host B,
    which is killed once the first run is past its first checkpoint; worker host C resumes it from the
    stored checkpoint and trains the rest; the web host then serves the resumed run on the API and
    builds its GGUF. lost_steps: steps trained on B after the checkpoint C resumed from."""
    from inference.models import ApiToken
    from labs.models import ArtifactSet, Run, RunEvent

    who = learner("multi-host", stack)
    host_b = WorkerHost(stack, "b")
    host_c = None
    try:
        run_ids = [pk for _ in range(runs) for pk in launch(stack, who, epochs=15)]  # 30 steps, a checkpoint every 5
        first = run_ids[0]
        wait_until(lambda: steps_seen(first) >= 8, 240, "step 8 on host B")
        before_kill = steps_seen(first)
        host_b.kill()
        killed = time.monotonic()
        host_c = WorkerHost(stack, "c")
        resumed_event = wait_until(lambda: RunEvent.objects.filter(
            run_id=first, type="log", payload__message__startswith="Resuming from the checkpoint").first(), 300,
            "the run to resume on host C")
        resume_s = time.monotonic() - killed
        wait_until(lambda: finished(run_ids), 600, "the runs to finish")
        checkpoint = int(resumed_event.payload["message"].rstrip(".").split()[-1])
        done = Run.objects.filter(pk__in=run_ids, status=Run.Status.SUCCEEDED)
        _, raw = ApiToken.issue(user=who["user"], name="multi-host")
        with http_for(stack, who) as http:
            served = http.post("/api/classify", json={"run": first, "texts": ["Broke in a day."]},
                               headers={"Authorization": f"Bearer {raw}"}, timeout=300).status_code
            http.get("/labs/")
            http.post(f"/labs/runs/{first}/gguf/", data={"quant": quant, "csrfmiddlewaretoken": http.cookies["csrftoken"]})
            wait_until(lambda: 'data-state="ready"' in http.get(f"/labs/runs/{first}/gguf/").text
                       or 'data-state="failed"' in http.get(f"/labs/runs/{first}/gguf/").text, 300, "the GGUF bundle")
            bundle = http.get(f"/labs/runs/{first}/gguf/{quant}.zip")
        adapters = ArtifactSet.objects.filter(run_id__in=run_ids, kind=ArtifactSet.Kind.ADAPTER, complete=True)
        return {"runs": len(run_ids), "succeeded": done.count(), "lost_runs": len(run_ids) - done.count(),
                "resumed": Run.objects.filter(pk__in=run_ids, attempts__gt=1).count(),
                "resumed_on": Run.objects.get(pk=first).worker_host, "lost_steps": before_kill - checkpoint,
                "resume_s": round(resume_s, 1), "api_status": served, "gguf_status": bundle.status_code,
                "gguf_bytes": len(bundle.content) if bundle.status_code == 200 else 0,
                "adapter_bytes_stored": sum(a.size for a in adapters) // max(1, adapters.count()),
                "checkpoints_left": ArtifactSet.objects.filter(run_id__in=run_ids, kind=ArtifactSet.Kind.CHECKPOINT).count()}
    finally:
        for host in (host_b, host_c):
            if host is not None and host.process.poll() is None:
                host.stop()


# --- abuse: the paths issue 21 found unmetered, tried by a scripted learner ------------------

# Each limit is set small (configure_abuse), so that a learner who keeps trying reaches it within
# seconds; the section then reports, per path, what the server answered, what it stored and how
# much worker time it spent. A path is "unmetered" when the learner got past where its limit
# should have stopped them. 5xx: server errors; a 503 with Retry-After (model loads busy) is a
# refusal, not an error.
ABUSE_RUNS = 3  # tiny runs the learner's GPU quota admits (the next launch is refused)
ABUSE_PASSWORD = "a-long-Passphrase-42"
ABUSE_LABELS = ("positive", "negative", "neutral")
ABUSE_FEWSHOT_ROWS = 200  # long reviews: 12 of them in every few-shot prompt
ABUSE_CHURN_ROWS = 150  # rows of each distinct upload of the launch-then-cancel churn
ABUSE_ENV = {
    "TUNELAB_EXPORTS_PER_DAY": "2", "TUNELAB_EXPORT_DISK_BYTES": "1000000", "TUNELAB_EXPORT_RETRY_AFTER": "600",
    "TUNELAB_MODEL_LOADS_AT_ONCE": "1", "TUNELAB_MODEL_LOAD_WAIT": "0.2", "TUNELAB_MODEL_LOAD_TEXTS": "50",
    "TUNELAB_CLASSIFIER_CACHE_SIZE": "2", "TUNELAB_INFERENCE_BACKEND": "torch", "TUNELAB_API_MAX_TEXTS": "8",
    "TUNELAB_PLAYGROUND_MAX_TEXTS": "8",
    "TUNELAB_SIGNUPS_PER_ADDRESS": "3", "TUNELAB_WS_PER_USER": "3", "TUNELAB_WS_SYNC_INTERVAL": "2",
    "TUNELAB_BASELINE_API_TOKENS_PER_DAY": "2000", "TUNELAB_LLM_API_KEY": "sk-fake", "TUNELAB_LLM_MODEL": "fake-model",
    "TUNELAB_RUN_LOAD_S": "0",
}


def _long_rows(n: int, tag: str = "") -> list[dict]:
    text = "it was quite something to behold, " * 60  # ~480 tokens: past the 256 a review or an example is cut to
    return [{"text": f"{tag}review {i} {text}", "label": ABUSE_LABELS[i % 3]} for i in range(n)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def configure_abuse(stack: Stack, runs: int = ABUSE_RUNS) -> None:
    """Limits reached within seconds, priced from the tiny run's own estimate: each tiny launch is
    estimated at 100 s, the GPU quota holds `runs` of them, the per-run token budget admits every
    run of the bench but not 12 long examples in every few-shot prompt, the upload budget two of
    the churn's distinct uploads and a bit."""
    from labs.models import DatasetUpload, Run
    from labs.scheduling import run_cost
    from labs.services import build_config, upload_fingerprint
    from tests.fakes.openai_server import FakeOpenAI

    base = build_config(dict(TINY))
    tiny = run_cost(base, None).tokens
    long_upload = DatasetUpload(examples=_long_rows(ABUSE_FEWSHOT_ROWS), labels=list(ABUSE_LABELS))
    fewshot = run_cost({**base, "train_limit": 12}, long_upload, mode=Run.Mode.FEWSHOT, shots=12).tokens
    trained = max(tiny, *(run_cost({**base, **o}, long_upload).tokens for o in ({"train_limit": 12}, {"train_limit": 240})))
    if trained >= fewshot:
        raise RuntimeError(f"the few-shot prompts ({fewshot} tokens) must cost more than a trained run ({trained})")
    churn = upload_fingerprint(_long_rows(ABUSE_CHURN_ROWS, tag="churn 0 "))[1]
    stack.fake = FakeOpenAI().start()  # the paid API's stand-in: it counts the calls that reached it
    stack.env.update(ABUSE_ENV, **{
        "TUNELAB_RUN_TOKENS_PER_S": str(tiny / 100), "TUNELAB_GPU_SECONDS_PER_DAY": str(100 * runs + 50),
        "TUNELAB_RUN_MAX_TOKENS": str((trained + fewshot) // 2), "TUNELAB_UPLOAD_BYTES_PER_USER": str(int(churn * 2.5)),
        "TUNELAB_TEXTS_PER_MINUTE": str(50 * (runs - 1) + 10), "TUNELAB_LLM_BASE_URL": stack.fake.base_url,
    })


class AbuseLog:
    """Every answer the learner got, by path: status counts, and the server errors among them."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.server_errors: list[str] = []

    def row(self, path: str) -> dict:
        return self.rows.setdefault(path, {"tries": 0, "statuses": {}, "bytes_stored": 0, "worker_s": 0.0,
                                           "metered": False, "how": ""})

    def saw(self, path: str, status, *, retry_after: bool = False, what: str = "") -> None:
        row = self.row(path)
        row["tries"] += 1
        row["statuses"][str(status)] = row["statuses"].get(str(status), 0) + 1
        if isinstance(status, int) and status >= 500 and not (status == 503 and retry_after):
            self.server_errors.append(f"{path}: {status} {what}"[:200])

    def http(self, path: str, response, what: str = ""):
        self.saw(path, response.status_code, retry_after="retry-after" in response.headers, what=what)
        return response


def _csrf(http) -> dict:
    return {"csrfmiddlewaretoken": http.cookies.get("csrftoken", "")}


def _post_launch(http, lab: str, *, upload: tuple[str, bytes] | None = None, **overrides):
    http.get(f"/labs/{lab}/launch/")  # (sets the CSRF cookie)
    files = {"upload": upload} if upload else None
    return http.post(f"/labs/{lab}/launch/", data={**launch_form(**overrides), **_csrf(http)}, files=files)


def _run_seconds(runs) -> float:
    """Worker seconds the runs took (started to finished, or to now while running)."""
    from django.utils import timezone

    now = timezone.now()
    return round(sum(((run.finished_at or now) - run.started_at).total_seconds() for run in runs if run.started_at), 1)


def _uploads_bytes(user) -> int:
    from labs.models import DatasetUpload

    return sum(DatasetUpload.objects.filter(owner=user).values_list("size_bytes", flat=True))


def _sql_reading(stack: Stack, who: dict, url: str, columns: tuple[str, ...], **headers) -> list[str]:
    """The queries a page makes that read any of `columns`: the page rendered by this process's
    Django on the stack's database (the web server's queries cannot be seen from here)."""
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", **headers)
    client.cookies["sessionid"] = who["cookie"]
    queries: list[str] = []

    def record(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = client.get(url)
    if response.status_code != 200 or not queries:
        raise RuntimeError(f"{url} answered {response.status_code} after {len(queries)} queries: nothing to check")
    return [sql[:120] for sql in queries if any(f'"{column}"' in sql for column in columns)]


def abuse_quota(stack: Stack, log: AbuseLog, who: dict, runs: int) -> list[int]:
    """Launch runs + 1 tiny runs back to back: the quota must count the queued ones' estimates."""
    from labs.models import Run

    with http_for(stack, who) as http:
        for _ in range(runs + 1):
            response = log.http("quota_reservation", _post_launch(http, "sentiment-lora"))
            if response.status_code == 400:
                row = log.row("quota_reservation")
                row["refusal"] = "for your queued and running runs" in response.text
    return list(Run.objects.filter(owner=who["user"]).order_by("pk").values_list("pk", flat=True))


def abuse_fewshot(stack: Stack, log: AbuseLog, who: dict) -> None:
    from labs.models import Run

    with http_for(stack, who) as http:
        response = log.http("fewshot_prompt_tokens", _post_launch(
            http, "fewshot-vs-finetune", upload=("long.jsonl", _jsonl(_long_rows(ABUSE_FEWSHOT_ROWS)))))
    row = log.row("fewshot_prompt_tokens")
    named = "Few-shot prompt (12 examples in the prompt, no training): Its prompts would put about" in response.text
    queued = Run.objects.filter(owner=who["user"])
    row.update(bytes_stored=_uploads_bytes(who["user"]), worker_s=_run_seconds(queued),
               metered=response.status_code == 400 and named and not queued.exists(),
               how="12 long examples in every test prompt: refused by the per-run token budget" if named else
               f"launch answered {response.status_code}")


def abuse_upload_churn(stack: Stack, log: AbuseLog, who: dict) -> None:
    """Launch then cancel with the same file (stored once), then with new files until the budget refuses."""
    from labs.models import DatasetUpload, Run

    row = log.row("upload_churn")
    same = _jsonl(_long_rows(ABUSE_CHURN_ROWS, tag="churn 0 "))
    with http_for(stack, who) as http:
        for i in range(6):
            content = same if i < 3 else _jsonl(_long_rows(ABUSE_CHURN_ROWS, tag=f"churn {i} "))
            response = log.http("upload_churn", _post_launch(http, "sentiment-lora", upload=(f"churn-{i}.jsonl", content)))
            if response.status_code == 302:
                run = Run.objects.filter(owner=who["user"]).latest("pk")
                log.http("upload_churn", http.post(f"/labs/runs/{run.pk}/cancel/", data=_csrf(http)))
            elif response.status_code == 400:
                row["refused_at"] = i
                break
    uploads = DatasetUpload.objects.filter(owner=who["user"]).count()
    listing = _sql_reading(stack, who, "/labs/sentiment-lora/launch/", ("examples",))
    row.update(bytes_stored=_uploads_bytes(who["user"]), uploads_stored=uploads,
               worker_s=_run_seconds(Run.objects.filter(owner=who["user"])), launch_form_reads_examples=len(listing),
               metered=uploads <= 2 and "refused_at" in row and not listing,
               how=f"6 launches+cancels: the same file 3 times -> 1 row; new files refused from launch {row.get('refused_at')} "
                   f"(budget); the launch form lists {uploads} uploads without reading their examples")


def abuse_signup(stack: Stack, log: AbuseLog, tries: int = 5) -> None:
    import httpx
    from django.contrib.auth import get_user_model

    with httpx.Client(base_url=f"http://{stack.address}", headers={"Referer": f"http://{stack.address}/"}, timeout=60) as http:
        for i in range(tries):
            http.cookies.delete("sessionid")
            http.get("/accounts/signup/")
            log.http("signup_throttle", http.post("/accounts/signup/", data={
                "username": f"abuse-signup-{i}", "password1": ABUSE_PASSWORD, "password2": ABUSE_PASSWORD, **_csrf(http)}))
    made = get_user_model().objects.filter(username__startswith="abuse-signup-").count()
    row = log.row("signup_throttle")
    limit = int(stack.env["TUNELAB_SIGNUPS_PER_ADDRESS"])
    row.update(accounts_made=made, metered=made <= limit and row["statuses"].get("429", 0) == tries - limit,
               how=f"{tries} sign-ups from one address: {made} accounts (limit {limit}), the rest 429")


def abuse_hostile_input(stack: Stack, log: AbuseLog, who: dict, token: str) -> None:
    """Oversized numbers and text PostgreSQL cannot store: each must be a 400 naming the field."""
    from labs.models import Run

    long = "9" * 5000
    good = _long_rows(12)
    uploads = {"nul.jsonl": _jsonl(good) + b'{"text": "a \\u0000 b", "label": "neutral"}\n',
               "surrogate.jsonl": _jsonl(good) + b'{"text": "lone \\ud800 half", "label": "neutral"}\n',
               "long.jsonl": _jsonl(good) + b'{"text": "fine", "label": ' + long.encode() + b"}\n",
               "nul.csv": b"text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in good).encode() + b"a \x00 b,neutral\n"}
    named = 0
    with http_for(stack, who) as http:
        for name, content in uploads.items():
            response = log.http("hostile_input", _post_launch(http, "sentiment-lora", upload=(name, content)), name)
            named += response.status_code == 400 and name in response.text
        response = log.http("hostile_input", _post_launch(http, "sentiment-lora", epochs=long), "epochs")
        named += response.status_code == 400
        for body in ('{"run": N, "texts": ["fine"]}', "-N"):
            response = log.http("hostile_input", http.post("/api/classify", content=body.replace("N", long),
                                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}), "api")
            named += response.status_code == 400 and response.json()["error"]["code"] == "number_too_long"
    row = log.row("hostile_input")
    row.update(bytes_stored=_uploads_bytes(who["user"]), named_400=named,
               metered=named == row["tries"] and not Run.objects.filter(owner=who["user"]).exists(),
               how="NUL, lone surrogate and 5,000-digit numbers in uploads, the form and the API: each a 400 naming it")


def abuse_serving(stack: Stack, log: AbuseLog, token: str, run_ids: list[int]) -> None:
    """Every run at once on /api/classify: one model loads at a time and each load costs texts."""
    import httpx

    async def main():
        async with httpx.AsyncClient(base_url=f"http://{stack.address}", timeout=120,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            return await asyncio.gather(*(http.post("/api/classify", json={"run": pk, "texts": ["Broke in a day."]})
                                          for pk in run_ids))

    rss = _web_rss(stack)
    responses = asyncio.run(main())
    for response in responses:
        log.http("serving_cache", response)
    loaded = sum(r.status_code == 200 for r in responses)
    row = log.row("serving_cache")
    row.update(models_loaded=loaded, web_rss_growth_mb=round((_web_rss(stack) - rss) / 2**20),
               metered=loaded < len(run_ids) and all(r.status_code in (200, 429, 503) for r in responses),
               how=f"{len(run_ids)} different runs at once: {loaded} loaded, the others refused (one load at a time, "
                   f"{stack.env['TUNELAB_MODEL_LOAD_TEXTS']} texts a load of {stack.env['TUNELAB_TEXTS_PER_MINUTE']} a minute)")


def _web_rss(stack: Stack) -> int:
    """Resident bytes of the web server's processes (the loaded models live there)."""
    import psutil

    parent = psutil.Process(stack.pids()["web"])
    return sum(p.memory_info().rss for p in (parent, *parent.children(recursive=True)))


def abuse_heavy_json(stack: Stack, log: AbuseLog, who: dict, token: str, run_ids: list[int]) -> None:
    """The runs' predictions made heavy (2 MB each): the run list and /v1/models must not read them."""
    from labs.models import Run

    heavy = [{"text": "x" * 200, "label": "positive", "pred": "positive", "probs": [0.9, 0.05, 0.05]}] * 8000
    Run.objects.filter(pk__in=run_ids).update(predictions=heavy)
    stored = len(json.dumps(heavy)) * len(run_ids)
    with http_for(stack, who) as http:
        timings = {}
        for url, headers in (("/labs/runs/", {}), ("/v1/models", {"Authorization": f"Bearer {token}"})):
            started = time.perf_counter()
            log.http("heavy_json", http.get(url, headers=headers), url)
            timings[url] = round((time.perf_counter() - started) * 1000)
    reads = (_sql_reading(stack, who, "/labs/runs/", Run.HEAVY_FIELDS)
             + _sql_reading(stack, who, "/v1/models", Run.HEAVY_FIELDS, HTTP_AUTHORIZATION=f"Bearer {token}"))
    row = log.row("heavy_json")
    row.update(bytes_stored=stored, page_ms=timings, queries_reading_heavy_columns=len(reads),
               metered=not reads and all(s == "200" for s in row["statuses"]),
               how=f"{stored / 1e6:.0f} MB of predictions on the learner's runs; the run list and /v1/models read none of it")


def abuse_exports(stack: Stack, log: AbuseLog, who: dict, run_ids: list[int]) -> None:
    """Builds past the daily limit, a Qwen run (refused before a model loads), a failed build asked
    again at once, the disk budget between builds, and expiry by the real hourly cleanup task."""
    from config.celery import app
    from labs import exports
    from labs.models import Run

    first, second, *rest = [Run.objects.get(pk=pk) for pk in run_ids]
    row = log.row("gguf_exports")
    refusals = {}

    def ask(http, run, quant):
        response = log.http("gguf_exports", http.post(f"/labs/runs/{run.pk}/gguf/", data={"quant": quant, **_csrf(http)},
                                                     headers={"HX-Request": "true"}), f"{run.pk} {quant}")
        return response

    def on_disk() -> int:
        return sum(p.stat().st_size for p in Path(stack.var / "runs").glob("run-*/gguf/*.zip"))

    peak, worker_s = 0, 0.0
    with http_for(stack, who) as http:
        http.get("/labs/")
        for run, quant in ((first, "q8_0"), (second, "f16")):
            started = time.monotonic()
            ask(http, run, quant)
            wait_until(lambda run=run, quant=quant: not exports.gguf_export_state(run=run, quant=quant).in_progress,
                       300, f"the {quant} bundle")
            worker_s += time.monotonic() - started
            peak = max(peak, on_disk())
        refusals["past the daily limit"] = ask(http, first, "q4_0").status_code
        exports._write_state(second, "q4_0", "failed", message="The export failed: (the bench says so)")
        refusals["failed build asked again at once"] = ask(http, second, "q4_0").status_code
        qwen = rest[0] if rest else first
        Run.objects.filter(pk=qwen.pk).update(config={**qwen.config, "base_model": "qwen2.5-0.5b-instruct"})
        qwen.refresh_from_db()
        refusals["Qwen run (no model loaded)"] = ask(http, qwen, "q8_0").status_code
        qwen_state = exports.gguf_export_state(run=qwen, quant="q8_0").state
    bundles = len(list(Path(stack.var / "runs").glob("run-*/gguf/*.zip")))
    for bundle in Path(stack.var / "runs").glob("run-*/gguf/*.zip"):  # built 8 days ago: past TUNELAB_EXPORT_KEEP
        os.utime(bundle, (time.time() - 8 * 86_400,) * 2)
    app.send_task("labs.tasks.clean_exports")  # routed to the export queue, as beat sends it hourly
    wait_until(lambda: on_disk() == 0, 60, "the cleanup to remove expired bundles")
    expected = {"past the daily limit": 429, "failed build asked again at once": 429, "Qwen run (no model loaded)": 400}
    row.update(refused=refusals, bytes_stored=peak, bundles_after_builds=bundles, bytes_after_expiry=on_disk(),
               worker_s=round(worker_s, 1),
               metered=refusals == expected and qwen_state == "none" and bundles == 1 and on_disk() == 0,
               how="2 builds a day (a third refused 429), a failed build not retried at once (429), a Qwen run refused "
                   "400 from its config before anything queued; one bundle kept under the 1 MB disk budget; expired "
                   "bundles removed by the export queue's cleanup")


def abuse_baselines(stack: Stack, log: AbuseLog, who: dict, run_id: int) -> None:
    """The prompting baselines with k=12: the API rows reserve their tokens before any call."""
    from inference.models import BaselineResult

    calls = len(stack.fake.requests)
    started = time.monotonic()
    with http_for(stack, who) as http:
        http.get(f"/labs/runs/{run_id}/results/")
        log.http("baseline_api_tokens", http.post(f"/inference/runs/{run_id}/baselines/", data={"k": 12, **_csrf(http)}))
    done = ("succeeded", "failed", "skipped")
    wait_until(lambda: BaselineResult.objects.filter(run_id=run_id).exists() and not BaselineResult.objects.filter(
        run_id=run_id).exclude(status__in=done).exists(), 600, "the baselines")
    rows = {r.method: r for r in BaselineResult.objects.filter(run_id=run_id)}
    api = [r for method, r in rows.items() if "api" in method]
    row = log.row("baseline_api_tokens")
    row.update(worker_s=round(time.monotonic() - started, 1), api_calls=len(stack.fake.requests) - calls,
               statuses_by_method={m: r.status for m, r in rows.items()},
               metered=bool(api) and all(r.status == "skipped" and "TUNELAB_BASELINE_API_TOKENS_PER_DAY" in r.message
                                         for r in api) and len(stack.fake.requests) == calls,
               how="API rows need more tokens than the 2,000 a day left: skipped before any call (the local rows ran)")


def abuse_websockets(stack: Stack, log: AbuseLog, who: dict) -> None:
    """More streams than allowed, a sync flood, then logging out with a stream open."""
    import contextlib
    from datetime import timedelta

    import httpx
    import websockets
    from django.utils import timezone

    from labs.events import event_append
    from labs.models import Run
    from labs.services import build_config

    # A run held queued (marked dispatched, so no worker takes it): nothing but the bench writes its events.
    run = Run.objects.create(owner=who["user"], config=build_config(dict(TINY)), status=Run.Status.QUEUED,
                             dispatched_at=timezone.now() + timedelta(hours=1))
    event_append(run_id=run.pk, type="status", payload={"status": "queued", "message": "Queued."}, notify=False)
    cap = int(stack.env["TUNELAB_WS_PER_USER"])
    row = log.row("websockets")

    def connect(cookie):
        return websockets.connect(f"ws://{stack.address}/ws/labs/runs/{run.pk}/?after=0", origin=f"http://{stack.address}",
                                  additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=20)

    async def outcome(socket) -> str:
        try:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            return "open" if message.get("seq") else str(message)
        except websockets.exceptions.ConnectionClosed as exc:
            return f"ws {exc.rcvd.code if exc.rcvd else 'closed'}"

    async def close_code(socket) -> str:
        """How the stream ended, reading past what it still had to send (10 s at most)."""
        try:
            while True:
                await asyncio.wait_for(socket.recv(), timeout=10)
        except websockets.exceptions.ConnectionClosed as exc:
            return f"ws {exc.rcvd.code if exc.rcvd else 'closed'}"
        except TimeoutError:
            return "still open"

    async def scenario():
        async with contextlib.AsyncExitStack() as stack_:
            sockets = [await stack_.enter_async_context(connect(who["cookie"])) for _ in range(cap + 2)]
            opened = [await outcome(s) for s in sockets]
            # The sync flood: events written without a live notification, only a sync reads them.
            socket, appended, received = sockets[0], 5, 0
            for i in range(appended):
                await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": f"{i}"}, notify=False)
                await socket.send(json.dumps({"type": "sync"}))
                await asyncio.sleep(0.1)
            with contextlib.suppress(TimeoutError):
                while True:
                    await asyncio.wait_for(socket.recv(), timeout=1.0)
                    received += 1
        # Logging out with a stream open (a session of its own).
        async with connect(session) as socket:
            await outcome(socket)
            async with httpx.AsyncClient(base_url=f"http://{stack.address}", cookies={"sessionid": session},
                                         headers={"Referer": f"http://{stack.address}/"}) as http:
                await http.get("/accounts/login/")
                await http.post("/accounts/logout/", data={"csrfmiddlewaretoken": http.cookies.get("csrftoken", "")})
            after_logout = await close_code(socket)
        return opened, appended, received, after_logout

    session = learner(who["user"].username, stack)["cookie"]
    opened, appended, received, after_logout = asyncio.run(asyncio.wait_for(scenario(), 120))
    for status in (*opened, after_logout):
        log.saw("websockets", status)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.CANCELLED, finished_at=timezone.now())
    row.update(open_streams=opened.count("open"), sync_rereads=f"{received} of {appended} syncs", after_logout=after_logout,
               metered=opened.count("open") == cap and opened.count("ws 4429") == 2 and received < appended
               and after_logout == "ws 4403",
               how=f"{cap + 2} streams: {cap} open, the rest closed 4429; {appended} syncs in 0.5 s read "
                   f"{received} event(s); logging out closed the open stream ({after_logout})")


def section_abuse(stack: Stack, runs: int = ABUSE_RUNS) -> dict:
    """A learner tries every path issue 21 found unmetered (configure_abuse set the limits)."""
    from inference.models import ApiToken
    from labs.models import Run

    log = AbuseLog()
    who = learner("abuse", stack)
    run_ids = abuse_quota(stack, log, who, runs)
    # While its runs train: the paths that need none.
    abuse_fewshot(stack, log, learner("abuse-fewshot", stack))
    abuse_upload_churn(stack, log, learner("abuse-churn", stack))
    abuse_signup(stack, log)
    hostile = learner("abuse-hostile", stack)
    abuse_hostile_input(stack, log, hostile, ApiToken.issue(user=hostile["user"], name="abuse")[1])
    wait_until(lambda: finished(run_ids), 600, "the learner's runs")
    quota = log.row("quota_reservation")
    admitted = Run.objects.filter(pk__in=run_ids)
    quota.update(runs_admitted=admitted.count(), worker_s=_run_seconds(admitted),
                 metered=admitted.count() == runs and quota.get("refusal", False),
                 how=f"{runs + 1} launches of ~100 s estimated each against {100 * runs + 50} s a day: the last refused "
                     "while the others were still queued")
    succeeded = list(admitted.filter(status=Run.Status.SUCCEEDED).values_list("pk", flat=True))
    if len(succeeded) < 2:
        raise RuntimeError(f"only {len(succeeded)} of the learner's runs succeeded: "
                           f"{list(admitted.values_list('status', 'error'))}")
    token = ApiToken.issue(user=who["user"], name="abuse")[1]
    abuse_serving(stack, log, token, succeeded)
    abuse_heavy_json(stack, log, who, token, succeeded)
    abuse_baselines(stack, log, who, succeeded[0])
    abuse_exports(stack, log, who, succeeded)
    abuse_websockets(stack, log, learner("abuse", stack))
    unmetered = [path for path, row in log.rows.items() if not row["metered"]]
    for path, row in log.rows.items():
        print(f"  abuse {path:22} {json.dumps(row)}", flush=True)
    print(f"  abuse unmetered paths: {len(unmetered)}\n  abuse 5xx: {len(log.server_errors)}", flush=True)
    return {"paths": log.rows, "unmetered_paths": len(unmetered), "unmetered": unmetered,
            "server_errors": len(log.server_errors), "server_error_list": log.server_errors[:10]}


# --- main ------------------------------------------------------------------------------------


def run_sections(only: set[str], smoke: bool = False) -> dict:
    results: dict[str, dict] = {}
    single = [s for s in SINGLE_STACK if s in only]
    sizes = SMOKE if smoke else {}
    if single:
        stack = Stack(gpu_workers=1, web_processes=SMOKE_PROCESSES if smoke else 1)
        stack.prepare()
        stack.start()
        try:
            for name in single:
                started = time.monotonic()
                results[name] = _guard(lambda name=name: globals()[f"section_{name}"](stack, **sizes.get(name, {})))
                print(f"{name:15} {json.dumps(results[name])}  ({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            stack.stop()
    if "fuzz" in only:
        results["fuzz"] = _guard(section_fuzz)
        print(f"{'fuzz':15} {json.dumps(results['fuzz'])}", flush=True)
    if "fairness" in only and single:
        # A second stack needs a second database: this process's ORM is bound to the first.
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run([sys.executable, __file__, "--only", "fairness", "--json", str(out)], check=False)
        results["fairness"] = json.loads(out.read_text() or "{}").get("fairness", {"error": "no result"})
        out.unlink()
    elif "fairness" in only:
        stack = Stack(gpu_workers=2)
        stack.prepare()
        stack.start()
        try:
            results["fairness"] = _guard(lambda: section_fairness(stack))
            print(f"{'fairness':15} {json.dumps(results['fairness'])}", flush=True)
        finally:
            stack.stop()
    bound = bool(single) or "fairness" in only
    for name in OWN_STACKS:
        if name in only:
            results[name] = _own_stack(name, bound=bound, smoke=smoke)
            bound = True
    return results


def _own_stack(name: str, *, bound: bool, smoke: bool = False) -> dict:
    """A section on a stack of its own (OWN_STACKS), in a child process when this one's ORM is
    bound to another stack's database. configure_<name>, where there is one, sets the stack's
    environment once its database exists and before it starts."""
    sizes = SMOKE.get(name, {}) if smoke else {}
    if bound:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run([sys.executable, __file__, "--only", name, "--json", str(out), *(["--smoke"] if smoke else [])],
                       check=False)
        result = json.loads(out.read_text() or "{}").get(name, {"error": "no result"})
        out.unlink()
        return result
    spec = OWN_STACKS[name]
    stack = Stack(gpu_workers=spec["gpu_workers"])
    stack.env.update(spec["env"])
    try:
        stack.prepare()
        if f"configure_{name}" in globals():
            globals()[f"configure_{name}"](stack, **sizes)
        stack.start()
        result = _guard(lambda: globals()[f"section_{name}"](stack, **sizes))
        print(f"{name:15} {json.dumps(result)}", flush=True)
        return result
    finally:
        stack.stop()
        if getattr(stack, "fake", None) is not None:
            stack.fake.stop()


def _guard(section) -> dict:
    """A section that breaks is reported as such; the others still run."""
    try:
        return section()
    except Exception as exc:  # a bench reports, it does not stop at the first failure
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def main(argv=None) -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help=f"seconds, not figures: {', '.join(SMOKE)} at toy sizes")
    args = parser.parse_args(argv)
    if args.only:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
    else:
        only = set(SMOKE) if args.smoke else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    results = run_sections(only, smoke=args.smoke)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in row for row in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
