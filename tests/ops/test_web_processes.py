"""Several web processes behind one port: `make run`'s web server (uvicorn --workers, the command
scripts/runstack.py runs) serves pages and websockets from each process, a viewer on any process gets
every event whoever published it (the Redis channel layer), and the limits hold as under Daphne.
Real uvicorn processes, the test Redis and the test database."""

import asyncio
import json
import shlex

import httpx
import psutil
import pytest
import websockets.exceptions  # the submodule itself: `websockets` only loads it lazily, on a first connect

from labs.events import event_append
from scripts.runstack import web_command
from tests.labs.conftest import make_run, session_cookie
from tests.ops import test_safe_defaults as daphne_checks
from tests.servers import ROOT, web_processes

pytestmark = pytest.mark.django_db(transaction=True)
# The body limits of test_safe_defaults' Daphne, so its checks run unchanged against this server.
SERVER_ENV = dict(TUNELAB_WS_PER_USER="40", OMP_NUM_THREADS="1", TUNELAB_API_MAX_BODY_BYTES="20000",
                  TUNELAB_MAX_BODY_BYTES="50000")


@pytest.fixture(scope="module")
def web(tmp_path_factory, django_db_setup, django_db_blocker):
    with web_processes(tmp_path_factory.mktemp("web"), processes=2, **SERVER_ENV) as served:
        yield served


def connect(address, cookie, run_id, origin=None):
    return websockets.connect(f"ws://{address}/ws/labs/runs/{run_id}/?after=0", origin=origin or f"http://{address}",
                              additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=20)


async def recv(socket, timeout=15) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout=timeout))


def serving_pid(socket, pids) -> int:
    """The web process holding the server end of this client's connection."""
    local_port = socket.transport.get_extra_info("sockname")[1]
    for pid in pids:
        if any(c.raddr and c.raddr.port == local_port for c in psutil.Process(pid).net_connections(kind="tcp")):
            return pid
    raise AssertionError(f"no web process holds the connection from port {local_port}")


def test_every_process_serves_and_a_viewer_on_each_gets_events_from_a_worker_and_from_a_web_process(web, client, owner):
    address, pids = web
    assert len(pids) == 2
    run = make_run(owner)
    cookie = session_cookie(client, owner)

    async def scenario():
        sockets, by_pid = [], {}
        try:
            # The kernel hands each new connection to whichever process accepts first: open
            # viewers until both processes hold some.
            while len(by_pid) < 2 and len(sockets) < 30:
                batch = await asyncio.gather(*(connect(address, cookie, run.pk).__aenter__() for _ in range(4)))
                for socket in batch:
                    assert (await recv(socket))["seq"] == 1  # the replay from the database
                    by_pid.setdefault(serving_pid(socket, pids), []).append(socket)
                sockets += batch
            assert set(by_pid) == set(pids), f"{len(sockets)} viewers all landed on one process"
            # Published by another process, as a Celery worker does: persist, then the channel layer.
            await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": "from a worker"})
            # Published by whichever web process takes the cancel: the viewers on the other one must get it too.
            async with httpx.AsyncClient(base_url=f"http://{address}", cookies={"sessionid": cookie},
                                         headers={"Referer": f"http://{address}/"}) as http:
                await http.get("/labs/")
                cancel = await http.post(f"/labs/runs/{run.pk}/cancel/",
                                         data={"csrfmiddlewaretoken": http.cookies["csrftoken"]})
                assert cancel.status_code < 400, cancel.text[-500:]
            received = {pid: [] for pid in pids}
            for pid, held in by_pid.items():
                for socket in held:
                    events = [await recv(socket), await recv(socket)]
                    received[pid].append([(e["seq"], e.get("status") or e.get("message")) for e in events])
            return by_pid, received
        finally:
            for socket in sockets:
                await socket.close()

    by_pid, received = asyncio.run(scenario())
    for pid, seen in received.items():
        assert len(seen) == len(by_pid[pid])
        for events in seen:
            assert events == [(2, "from a worker"), (3, "cancelled")], (pid, events)


@pytest.mark.parametrize("check", [
    daphne_checks.test_an_api_body_over_the_limit_is_refused_from_its_content_length_with_json_413,
    daphne_checks.test_a_chunked_api_body_is_cut_off_once_it_streams_past_the_limit,
    daphne_checks.test_a_page_body_over_the_site_limit_is_a_plain_413,
    daphne_checks.test_the_served_site_shows_no_debug_page_and_api_errors_are_json,
    daphne_checks.test_a_malformed_multipart_body_on_the_api_is_answered_by_the_app_in_json,
], ids=lambda check: check.__name__.removeprefix("test_"))
def test_the_body_limits_and_safe_defaults_hold_as_under_daphne(web, check):
    check(web[0])


def test_a_socket_from_another_origin_is_refused(web, client, owner):
    address, _ = web
    run = make_run(owner)
    cookie = session_cookie(client, owner)

    async def scenario():
        async with connect(address, cookie, run.pk, origin="http://evil.example.org"):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(scenario())
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("trusted, https_seen", [("", False), ("127.0.0.1", True)])
def test_forwarded_headers_are_believed_only_from_trusted_proxies(tmp_path, trusted, https_seen):
    # With HTTPS on, a plain-http request is redirected; a trusted proxy's X-Forwarded-Proto: https is not.
    with web_processes(tmp_path, processes=1, DJANGO_HTTPS="true", TUNELAB_TRUSTED_PROXIES=trusted) as (address, _):
        plain = httpx.get(f"http://{address}/quiz/")
        forwarded = httpx.get(f"http://{address}/quiz/", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert plain.status_code == 301
    assert (forwarded.status_code != 301) is https_seen, forwarded.headers



def test_the_procfile_starts_the_same_web_server_as_make_run():
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web: "))
    argv = shlex.split(line.removeprefix("web: ").replace("${TUNELAB_WEB_PROCESSES:-$(nproc)}", "7"))
    assert argv == web_command("python", host="127.0.0.1", port=8000, processes=7, trusted_proxies="")
