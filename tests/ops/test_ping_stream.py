"""The proof that web -> Redis -> worker -> channel layer -> browser works, with real processes."""

import asyncio
import json

import httpx
import pytest
import websockets.exceptions  # the submodule itself: `websockets` only loads it lazily, on a first connect

from ops.models import PingJob
from tests.servers import celery_worker, daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stack(tmp_path):
    with celery_worker(tmp_path, queues="gpu") as worker, daphne_server(tmp_path) as address:
        yield address, worker


def _session_cookie(client, user) -> str:
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _read_events(address, cookie, pk, after=0, until_end=True):
    headers = {"Cookie": f"sessionid={cookie}"}
    url = f"ws://{address}/ws/ping/{pk}/?after={after}"
    events = []
    async with websockets.connect(url, additional_headers=headers, origin=f"http://{address}") as socket:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
            if message["type"] == "end":
                return events
            events.append(message)


def test_a_ping_job_launched_over_http_streams_its_events_in_order(stack, client, staff_user):
    address, _worker = stack
    cookie = _session_cookie(client, staff_user)
    http = httpx.Client(base_url=f"http://{address}", cookies={"sessionid": cookie})
    page = http.get("/ops/diagnostics/")
    csrf = page.cookies.get("csrftoken") or http.cookies.get("csrftoken")
    response = http.post("/ops/ping/", data={"csrfmiddlewaretoken": csrf}, headers={"Referer": f"http://{address}/"})
    assert response.status_code == 302
    pk = int(response.headers["location"].rstrip("/").split("/")[-1])

    events = asyncio.run(_read_events(address, cookie, pk))

    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["step"] for e in events] == [1, 2, 3, 4, 5]
    job = PingJob.objects.get(pk=pk)
    assert job.status == PingJob.Status.SUCCEEDED
    assert job.worker_host

    # Reconnecting with a last sequence number replays exactly the missing events.
    replay = asyncio.run(_read_events(address, cookie, pk, after=3))
    assert [e["seq"] for e in replay] == [4, 5]

    # Health is green while the worker runs.
    health = http.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["celery"]["ok"] is True


def test_a_non_staff_socket_is_refused_before_any_event(stack, client, owner, staff_user):
    address, _worker = stack
    job = PingJob.objects.create(created_by=staff_user, events=[{"type": "progress", "step": 1, "total": 5}])
    cookie = _session_cookie(client, owner)

    async def attempt():
        headers = {"Cookie": f"sessionid={cookie}"}
        async with websockets.connect(f"ws://{address}/ws/ping/{job.pk}/", additional_headers=headers,
                                      origin=f"http://{address}") as socket:
            await asyncio.wait_for(socket.recv(), timeout=10)

    # Accepted, then closed with 4403 (not refused at the handshake, which browsers see as 1006
    # and retry forever), and not one event before the close.
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        asyncio.run(attempt())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_a_socket_from_a_foreign_origin_is_refused(stack, client, staff_user):
    address, _worker = stack
    job = PingJob.objects.create(created_by=staff_user)
    cookie = _session_cookie(client, staff_user)

    async def attempt():
        async with websockets.connect(f"ws://{address}/ws/ping/{job.pk}/", origin="http://evil.example",
                                      additional_headers={"Cookie": f"sessionid={cookie}"}) as socket:
            await asyncio.wait_for(socket.recv(), timeout=10)

    with pytest.raises((websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)):
        asyncio.run(attempt())
