"""Live streams are metered: a few per learner, "sync" re-reads rate-limited, and logging out closes them.
A real Daphne server, the test Redis (channel layer and the slot counter) and the test database."""

import asyncio
import json

import httpx
import pytest
import websockets.exceptions  # the submodule itself: `websockets` only loads it lazily, on a first connect
from django.test import Client

from labs.events import event_append
from tests.labs.conftest import make_run, session_cookie
from tests.servers import daphne_server

pytestmark = pytest.mark.django_db(transaction=True)
SERVER_ENV = dict(TUNELAB_WS_PER_USER="2", TUNELAB_WS_SYNC_INTERVAL="3", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def live(tmp_path_factory, django_db_setup, django_db_blocker):
    import httpx

    with daphne_server(tmp_path_factory.mktemp("streams"), **SERVER_ENV) as address:
        # One page first: the server's first request loads the rest of the app, and a socket
        # opened during that once came back as a connection reset on a busy machine.
        httpx.get(f"http://{address}/healthz", timeout=60)
        yield address


def connect(address, cookie, run_id):
    return websockets.connect(f"ws://{address}/ws/labs/runs/{run_id}/?after=0", origin=f"http://{address}",
                              additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=20)


async def recv(socket, timeout=10) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout=timeout))


async def first_event_once_a_slot_is_free(address, cookie, run_id, within_s=10) -> dict:
    """Open a stream the way the page does after a 4429: retry with a pause. A closed socket's
    slot is given back by the server's disconnect handler, which may run just after the client's
    close handshake has returned (a CI run saw the reopened stream refused)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        async with connect(address, cookie, run_id) as socket:
            try:
                return await recv(socket)
            except websockets.exceptions.ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != 4429 or asyncio.get_running_loop().time() > deadline:
                    raise
        await asyncio.sleep(0.2)


async def close_code(socket, timeout=10) -> int:
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(socket.recv(), timeout=timeout)
    return closed.value.rcvd.code


def test_a_learner_holds_at_most_ws_per_user_streams(live, client, owner, other_user):
    run, theirs = make_run(owner), make_run(other_user)
    cookie, other_cookie = session_cookie(client, owner), session_cookie(Client(), other_user)

    async def scenario():
        async with connect(live, cookie, run.pk) as first, connect(live, cookie, run.pk) as second:
            assert (await recv(first))["seq"] == 1 and (await recv(second))["seq"] == 1
            async with connect(live, cookie, run.pk) as third:
                refused = await close_code(third)
            async with connect(live, other_cookie, theirs.pk) as other:  # another learner is not affected
                assert (await recv(other))["seq"] == 1
        # Closed streams give their slots back.
        return refused, (await first_event_once_a_slot_is_free(live, cookie, run.pk))["seq"]

    assert asyncio.run(scenario()) == (4429, 1)


def test_sync_rereads_at_most_once_per_interval(live, client, owner):
    run = make_run(owner)
    cookie = session_cookie(client, owner)

    async def scenario():
        async with connect(live, cookie, run.pk) as socket:
            await recv(socket)
            # Events written without a live notification: only a "sync" makes the stream read them.
            await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": "a"}, notify=False)
            await socket.send(json.dumps({"type": "sync"}))
            first = (await recv(socket))["seq"]
            await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": "b"}, notify=False)
            for _ in range(20):
                await socket.send(json.dumps({"type": "sync"}))
            with pytest.raises(TimeoutError):
                await recv(socket, timeout=1.5)  # inside the interval: no re-read
            await asyncio.sleep(1.5)
            await socket.send(json.dumps({"type": "sync"}))
            return first, (await recv(socket))["seq"]

    assert asyncio.run(scenario()) == (2, 3)


def test_logging_out_closes_that_sessions_streams_only(live, client, owner):
    run = make_run(owner)
    cookie, other_session = session_cookie(client, owner), session_cookie(Client(), owner)

    async def scenario():
        async with connect(live, cookie, run.pk) as socket, connect(live, other_session, run.pk) as elsewhere:
            await recv(socket)
            await recv(elsewhere)
            async with httpx.AsyncClient(base_url=f"http://{live}", cookies={"sessionid": cookie},
                                         headers={"Referer": f"http://{live}/"}) as http:
                await http.get("/accounts/login/")
                response = await http.post("/accounts/logout/", data={"csrfmiddlewaretoken": http.cookies["csrftoken"]})
                assert response.status_code == 302
            code = await close_code(socket)
            await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": "still mine"})
            return code, (await recv(elsewhere))["message"]

    assert asyncio.run(scenario()) == (4403, "still mine")
