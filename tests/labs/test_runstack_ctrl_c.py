"""Ctrl-C on `make run` (issue 25 item 9): the terminal sends SIGINT to its whole foreground
process group. Only runstack.py may be in it: Redis used to be, died first, and the log showed
"Connection to broker lost", "Connection refused" and "redis exited; restarting it" before the
stack stopped. Now it stops web -> workers -> beat -> Redis, with no false alarm in the log."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.labs.conftest import SERVER_ENV
from tests.labs.test_live_runs import wait_for
from tests.labs.test_queue_faults import alive, read_pids
from tests.servers import ROOT, free_port, subprocess_env

FALSE_ALARMS = ("Connection to broker lost", "Connection refused", "redis exited", "restarting it", "Traceback")


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_stack_in_order_without_false_alarms(tmp_path):
    var = tmp_path / "var"
    env = subprocess_env(**SERVER_ENV, TUNELAB_VAR_DIR=str(var), TUNELAB_PORT=str(free_port()),
                         TUNELAB_REDIS_PORT=str(free_port()), TUNELAB_SHUTDOWN_GRACE="30")
    env.pop("REDIS_URL")  # the stack's own embedded Redis
    log_path = tmp_path / "runstack.log"
    with open(log_path, "wb") as log:
        # Its own process group, like a shell's foreground job: killpg below is the terminal's Ctrl-C.
        stack = subprocess.Popen([sys.executable, "scripts/runstack.py"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pids = wait_for(lambda: (lambda p: p if {"web", "gpu1", "default", "beat", "redis"} <= set(p) else None)(
            read_pids(var)), timeout=60, what="runstack.json")
        wait_for(lambda: b"ready" in log_path.read_bytes(), timeout=90, what="the workers to be ready")
        os.killpg(stack.pid, signal.SIGINT)
        gone: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while len(gone) < len(pids) and time.monotonic() < deadline:
            for name, pid in pids.items():
                if name not in gone and not alive(pid):
                    gone[name] = time.monotonic()
            time.sleep(0.02)
        assert stack.wait(timeout=30) == 0
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    assert [alarm for alarm in FALSE_ALARMS if alarm in text] == [], text[-3000:]
    assert gone["web"] <= min(gone["gpu1"], gone["default"]) and max(gone["gpu1"], gone["default"]) <= gone["redis"], gone
    assert text.rstrip().endswith("stopped.")
