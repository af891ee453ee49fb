"""Real servers for integration tests: Daphne (HTTP + websockets), the production web server
(uvicorn with several processes, as scripts/runstack.py starts it) and Celery workers.

Each runs as a subprocess on 127.0.0.1 and a free port, against the test database file, and is
stopped by the fixture that started it.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from scripts.redis_server import free_port  # one definition (make run's); the tests and benches import it from here

ROOT = Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict:
    """The environment of a server under test: same Redis, and the test database file."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="config.settings")
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    elif db["ENGINE"].endswith("postgresql"):  # `make test-postgres`: the test database, not DATABASE_URL's
        env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env.update(extra)
    return env


def _stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port}:\n{log_path.read_text()[-3000:]}")


@contextmanager
def daphne_server(tmp_path: Path, **env):
    port = free_port()
    log_path = tmp_path / f"daphne-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT, env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_port(port, process, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)


@contextmanager
def web_processes(tmp_path: Path, processes: int = 2, **env):
    """`make run`'s web server: scripts/runstack.py's own command, `processes` uvicorn processes on
    one port. Yields (address, pids of the processes that serve) once every one of them is up."""
    from scripts.runstack import web_command

    port = free_port()
    log_path = tmp_path / f"web-{port}.log"
    trusted = env.pop("TUNELAB_TRUSTED_PROXIES", "")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            web_command(sys.executable, host="127.0.0.1", port=port, processes=processes, trusted_proxies=trusted),
            cwd=ROOT, env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_port(port, process, log_path)
        # One process serves by itself; several are children of a parent that only supervises. Each
        # names its pid once its application is loaded.
        deadline = time.monotonic() + 60
        while len(pids := re.findall(r"Started server process \[(\d+)\]", log_path.read_text())) < processes:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{len(pids)} of {processes} web processes started:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", [int(pid) for pid in pids]
    finally:
        _stop(process)


@contextmanager
def celery_worker(tmp_path: Path, queues: str = "gpu,default", concurrency: int = 1, **env):
    """A real worker process; yields (process, name) once it answers a control ping."""
    from config.celery import app

    name = f"test-{uuid.uuid4().hex[:8]}@127.0.0.1"
    log_path = tmp_path / f"worker-{name.split('@')[0]}.log"
    # A fresh child per task where scripts/runstack.py gives one (gpu, export), not on `default`
    # alone: there each dispatcher/reaper tick would cost the parent a fork (~60% of a core).
    fresh_child = ["--max-tasks-per-child", "1"] if queues != "default" else []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", str(concurrency),
             *fresh_child, "-n", name, "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{log_path.read_text()[-3000:]}")
            if app.control.ping(destination=[name], timeout=0.5):
                break
        else:
            raise RuntimeError(f"worker {name} never answered:\n{log_path.read_text()[-3000:]}")
        process.log_path = log_path
        yield process, name
    finally:
        _stop(process, timeout=20)
