"""Start the whole stack in the foreground: Redis (embedded), Daphne, Celery workers and beat.

`make run` calls this. Ctrl-C (or SIGTERM) stops every child cleanly. When REDIS_URL is set,
no Redis is started and every process uses that server instead.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.redis_server import RedisServer, port_is_free  # noqa: E402

HOST = os.environ.get("TUNELAB_HOST", "127.0.0.1")
PORT = int(os.environ.get("TUNELAB_PORT", "8000"))


def main() -> int:
    var = Path(os.environ.get("TUNELAB_VAR_DIR", ROOT / "var"))
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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
        print(f"redis    {redis.url} (embedded, data in {redis.data_dir})")

    python = sys.executable
    commands = {
        "web": [python, "-m", "daphne", "-b", HOST, "-p", str(PORT), "config.asgi:application"],
        # One worker per GPU in production; here the gpu queue takes one job at a time and a
        # fresh process per job, so a crashed or leaking training run cannot poison the next.
        "gpu": [python, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "-c", "1",
                "--max-tasks-per-child", "1", "-n", "gpu@%h", "--loglevel", "INFO"],
        "default": [python, "-m", "celery", "-A", "config", "worker", "-Q", "default", "-c", "2",
                    "-n", "default@%h", "--loglevel", "INFO"],
        "beat": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                 "-s", str(var / "celerybeat-schedule")],
    }
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, cmd in commands.items():
            # New process groups: Ctrl-C reaches only this supervisor, which then stops the
            # children in order instead of all of them racing to exit.
            children[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        print(f"web      http://{HOST}:{PORT}/  (health: http://{HOST}:{PORT}/healthz)")
        print("Press Ctrl-C to stop.")
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}; stopping the stack.", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()
        print("stopped.")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    sys.exit(main())
