"""Start the whole stack in the foreground and keep it up: Redis (embedded), the web server
(uvicorn, several processes), Celery workers and beat.

`make run` calls this. It is a small supervisor: a process that dies is started again (the
embedded Redis reloads its append-only file, so queued tasks survive a crash). Ctrl-C (or
SIGTERM) stops the stack in dependency order: web first (no new launches), then the workers
(each running run stops after its current step, checkpoints and goes back to the queue), then
beat, then Redis last, because the workers need it until they are done.

Environment: TUNELAB_HOST / TUNELAB_PORT (web), TUNELAB_WEB_PROCESSES (web processes sharing that
port, default one per core), TUNELAB_TRUSTED_PROXIES (addresses whose X-Forwarded-For/-Proto the
web server believes; empty = none), TUNELAB_REDIS_PORT (embedded Redis; REDIS_URL
set = use that server, start none), TUNELAB_GPU_WORKERS (gpu worker processes, default 1; the
dispatcher's TUNELAB_GPU_SLOTS follows it), TUNELAB_SHUTDOWN_GRACE (seconds the workers get to
checkpoint, default 90). The running processes' ids are kept in var/runstack.json.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlcore.paths import var_dir  # noqa: E402
from scripts.redis_server import RedisServer, port_is_free  # noqa: E402

HOST = os.environ.get("TUNELAB_HOST", "127.0.0.1")
PORT = int(os.environ.get("TUNELAB_PORT", "8000"))
GPU_WORKERS = int(os.environ.get("TUNELAB_GPU_WORKERS", "1"))
# One per core this process may run on (a container's CPU set, not the host's count): a sync
# Django view holds its process's one view thread, so processes are what add throughput.
WEB_PROCESSES = int(os.environ.get("TUNELAB_WEB_PROCESSES") or len(os.sched_getaffinity(0)))
TRUSTED_PROXIES = os.environ.get("TUNELAB_TRUSTED_PROXIES", "").strip()
# A browser sends the run and ping sockets a few bytes ("sync"); nothing legitimate comes near this.
WS_MAX_MESSAGE_BYTES = 64 * 1024
# An idle keep-alive connection is closed after this. uvicorn's 5 s default is shorter than a
# learner spends on a page: a request sent on a connection just as the server closes it fails (seen as
# connection errors under the 200-learner burst); 75 s is nginx's own default.
KEEP_ALIVE_S = 75
SHUTDOWN_GRACE_S = float(os.environ.get("TUNELAB_SHUTDOWN_GRACE", "90"))
RESTART_DELAY_S = 1.0
# Stop order: each stage gets SIGTERM together and its grace period before SIGKILL.
STAGES = (("web", 15.0), ("workers", SHUTDOWN_GRACE_S), ("beat", 10.0))


def web_command(python: str, *, host: str = HOST, port: int = PORT, processes: int = WEB_PROCESSES,
                trusted_proxies: str = TRUSTED_PROXIES) -> list[str]:
    """uvicorn serving HTTP and websockets from `processes` processes on one socket: its parent binds
    the port, starts the workers, and replaces any that dies. Request bodies stream to the app, so
    ops.middleware.BodySizeLimit refuses an oversized one while it arrives; websocket origins are
    checked by the app (config/asgi.py). Proxy headers are believed only from `trusted_proxies`:
    by default a client cannot choose the address the sign-up and login throttles count."""
    argv = [python, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port),
            "--workers", str(processes), "--lifespan", "off", "--ws-max-size", str(WS_MAX_MESSAGE_BYTES),
            "--timeout-keep-alive", str(KEEP_ALIVE_S), "--timeout-graceful-shutdown", "10", "--no-server-header",
            "--no-access-log"]
    if trusted_proxies:
        return [*argv, "--proxy-headers", "--forwarded-allow-ips", trusted_proxies]
    return [*argv, "--no-proxy-headers"]


def commands(python: str, var: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (stage, argv)."""
    web = web_command(python)
    if os.environ.get("TUNELAB_DEV", "").strip().lower() in ("1", "true", "yes", "on"):
        # `make dev`: Daphne's runserver, which reloads on code changes (with DJANGO_DEBUG=true).
        web = [python, "manage.py", "runserver", f"{HOST}:{PORT}"]
    procs = {"web": ("web", web)}
    # One worker process per GPU, one job at a time each, and a fresh child per job, so a
    # crashed or leaking training run cannot poison the next.
    for i in range(1, GPU_WORKERS + 1):
        procs[f"gpu{i}"] = ("workers", [python, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "-c", "1",
                                        "--max-tasks-per-child", "1", "-n", f"gpu{i}@%h", "--loglevel", "INFO"])
    procs["default"] = ("workers", [python, "-m", "celery", "-A", "config", "worker", "-Q", "default", "-c", "2",
                                    "-n", "default@%h", "--loglevel", "INFO"])
    # GGUF exports on their own queue and process, one at a time (each merges a whole model), so
    # they never hold up the reaper and dispatcher on `default`; a fresh child per export frees its memory.
    procs["export"] = ("workers", [python, "-m", "celery", "-A", "config", "worker", "-Q", "export", "-c", "1",
                                   "--max-tasks-per-child", "1", "-n", "export@%h", "--loglevel", "INFO"])
    procs["beat"] = ("beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                              "-s", str(var / "celerybeat-schedule")])
    return procs


class Stack:
    def __init__(self, var: Path, env: dict, redis: RedisServer | None):
        self.var, self.env, self.redis = var, env, redis
        self.commands = commands(sys.executable, var)
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self, name: str) -> None:
        # New process groups: Ctrl-C reaches only this supervisor, which then stops the
        # children in order instead of all of them racing to exit.
        self.children[name] = subprocess.Popen(self.commands[name][1], cwd=ROOT, env=self.env, start_new_session=True)
        self.write_pids()

    def write_pids(self) -> None:
        pids = {name: child.pid for name, child in self.children.items()}
        if self.redis is not None and self.redis.process is not None:
            pids["redis"] = self.redis.process.pid
        tmp = self.var / "runstack.json.tmp"
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.var / "runstack.json")

    def supervise_once(self) -> None:
        """Restart whatever died: Redis first (everything else needs it), then the others. Not while
        stopping: a process that exits then is being stopped, not crashing."""
        if self.stopping:
            return
        if self.redis is not None and not self.redis.alive:
            print("redis exited; restarting it (it reloads its append-only file).", file=sys.stderr)
            try:
                self.redis.start()
            except RuntimeError as exc:  # e.g. its port is still held: try again next round
                print(f"redis did not restart: {exc}", file=sys.stderr)
                return
            self.write_pids()
        for name, child in list(self.children.items()):
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; restarting it.", file=sys.stderr)
                self.start(name)

    def stop(self) -> None:
        for stage, grace in STAGES:
            group = [c for name, c in self.children.items() if self.commands[name][0] == stage and c.poll() is None]
            for child in group:
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in group:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)  # a killed run resumes from its checkpoint
                    child.wait()
        if self.redis is not None:
            self.redis.stop()
        (self.var / "runstack.json").unlink(missing_ok=True)


def main() -> int:
    var = var_dir()
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TUNELAB_GPU_SLOTS", str(GPU_WORKERS))
    if not port_is_free(HOST, PORT):
        print(f"Port {PORT} on {HOST} is already in use: is tunelab already running? "
              f"Stop it, or set TUNELAB_PORT to another port.", file=sys.stderr)
        return 2

    redis = None
    if not env.get("REDIS_URL"):
        redis_port = int(env.get("TUNELAB_REDIS_PORT", "6390"))
        if not port_is_free("127.0.0.1", redis_port):
            print(f"Port {redis_port} for the embedded Redis is in use: set TUNELAB_REDIS_PORT to a free "
                  f"port, or REDIS_URL to use an existing server.", file=sys.stderr)
            return 2
        redis = RedisServer(port=redis_port, data_dir=var / "redis")
        redis.start()
        env["REDIS_URL"] = redis.url
        print(f"redis    {redis.url} (embedded, append-only file in {redis.data_dir})")

    stack = Stack(var, env, redis)

    def request_stop(*_):
        stack.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for name in stack.commands:
            stack.start(name)
        processes = "autoreload" if stack.commands["web"][1][1] == "manage.py" else f"{WEB_PROCESSES} process(es)"
        print(f"web      http://{HOST}:{PORT}/  ({processes}; health: http://{HOST}:{PORT}/healthz)")
        print("Press Ctrl-C to stop.")
        while not stack.stopping:
            time.sleep(RESTART_DELAY_S)
            stack.supervise_once()
    finally:
        stack.stopping = True
        stack.stop()
        print("stopped.")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    sys.exit(main())
