"""Runs through the real stack: HTTP launch on Daphne -> Redis -> a Celery gpu worker process ->
RunEvent rows + channel layer -> websockets and a real browser."""

import asyncio
import io
import json
import time
import zipfile

import pytest
import websockets

from labs.models import Run
from tests.labs.conftest import SERVER_ENV, logged_in_http, purge_queues, session_cookie
from tests.labs.test_launch import form_data
from tests.servers import celery_worker, daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, django_db_setup, django_db_blocker):
    tmp = tmp_path_factory.mktemp("labs-stack")
    purge_queues()
    with celery_worker(tmp, queues="gpu", **SERVER_ENV) as worker, daphne_server(tmp, **SERVER_ENV) as address:
        yield address, worker


@pytest.fixture
def live(stack, labs):
    return stack[0]


def launch(http, lab="sentiment-lora", **overrides) -> int:
    data = {**form_data(**overrides), "csrfmiddlewaretoken": http.cookies["csrftoken"]}
    response = http.post(f"/labs/{lab}/launch/", data=data)
    assert response.status_code == 302, response.text[-2000:]
    return int(response.headers["location"].rstrip("/").split("/")[-1])


async def read_stream(address, cookie, pk, after=0):
    """Every message until the server's "end"; fails if the stream stalls."""
    headers = {"Cookie": f"sessionid={cookie}"}
    url = f"ws://{address}/ws/labs/runs/{pk}/?after={after}"
    received = []
    async with websockets.connect(url, additional_headers=headers, origin=f"http://{address}") as socket:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
            if message["type"] == "end":
                return received, message
            received.append(message)


def wait_for(predicate, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_launched_run_streams_every_event_in_order_then_shows_its_results(live, client, owner, other_user):
    with logged_in_http(client, owner, live) as http:
        pk = launch(http)
        cookie = http.cookies["sessionid"]
        events, end = asyncio.run(read_stream(live, cookie, pk))

        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)) and end["seq"] == seqs[-1]
        statuses = [e["status"] for e in events if e["type"] == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        steps = [e for e in events if e["type"] == "step"]
        assert [s["step"] for s in steps] == [1, 2] and all(s["total_steps"] == 2 for s in steps)
        assert {"loss", "lr", "elapsed_s", "eta_s", "samples_per_s"} <= set(steps[0])
        assert [e["type"] for e in events].index("eval") > [e["type"] for e in events].index("step")

        run = Run.objects.get(pk=pk)
        assert run.status == Run.Status.SUCCEEDED and run.worker_host and run.heartbeat_at and run.celery_task_id
        assert run.config["base_model"] == "tiny-test" and run.metrics["zero_shot"]["accuracy"] is not None
        results = http.get(f"/labs/runs/{pk}/results/").text
        assert f"{run.metrics['test']['accuracy']:.3f}" in results and "Zero-shot baseline" in results
        # A page opened after the run finished shows the full history (the replay) and the results.
        page = http.get(f"/labs/runs/{pk}/").text
        assert 'data-status="succeeded"' in page and 'id="results-metrics"' in page

        # Reconnecting with the last sequence number seen gets exactly the missing events.
        replay, _ = asyncio.run(read_stream(live, cookie, pk, after=seqs[-4]))
        assert replay == events[-3:]
        assert asyncio.run(read_stream(live, cookie, pk, after=seqs[-1]))[0] == []

        download = http.get(f"/labs/runs/{pk}/download/")
        assert download.status_code == 200
        assert f"run-{pk}/adapter_config.json" in zipfile.ZipFile(io.BytesIO(download.content)).namelist()

    # Someone else: the socket is closed before any event, every page is a 404.
    stranger = session_cookie(client, other_user)
    with pytest.raises((websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)):
        asyncio.run(read_stream(live, stranger, pk))
    with logged_in_http(client, other_user, live) as http:
        for path in ("", "results/", "download/", "clone/"):
            assert http.get(f"/labs/runs/{pk}/{path}").status_code == 404, path
        assert http.post(f"/labs/runs/{pk}/cancel/", data={"csrfmiddlewaretoken": http.cookies["csrftoken"]}).status_code == 404
        assert http.get(f"/labs/compare/?ids={pk},{pk + 1000}").status_code == 404
        assert http.get(f"/labs/groups/{pk}/").status_code == 404


def test_cancel_stops_a_running_run_within_a_step_and_a_queued_one_at_once(live, client, owner):
    with logged_in_http(client, owner, live) as http:
        running = launch(http, epochs=100, eval_every=100_000)  # 200 steps: long enough to catch
        queued = launch(http)  # behind it: the worker takes one job at a time
        wait_for(lambda: Run.objects.get(pk=running).events.filter(type="step").exists(), what="the first step")
        token = {"csrfmiddlewaretoken": http.cookies["csrftoken"]}

        assert http.post(f"/labs/runs/{queued}/cancel/", data=token).status_code == 302
        assert Run.objects.get(pk=queued).status == Run.Status.CANCELLED  # at once, no worker involved

        assert http.post(f"/labs/runs/{running}/cancel/", data=token).status_code == 302
        run = wait_for(lambda: Run.objects.filter(pk=running, status=Run.Status.CANCELLED).first(), what="cancelled")
        request = run.events.get(type="log", payload__message__startswith="Cancel requested")
        assert run.events.filter(type="step", seq__gt=request.seq).count() <= 1
        assert run.events.filter(type="step").count() < 100
        assert run.metrics is None and run.finished_at

        events, _ = asyncio.run(read_stream(live, http.cookies["sessionid"], running))
        assert events[-1]["type"] == "status" and events[-1]["status"] == "cancelled"

        # The worker, free again, gets the cancelled run's task (or its revocation) and trains nothing.
        time.sleep(2)
        assert Run.objects.get(pk=queued).started_at is None


def test_an_idle_socket_stays_open_and_gets_the_next_event(live, client, owner):
    """Nothing to say for longer than the channel layer's 5 s blocking read must not kill the socket."""
    from labs.events import event_append
    from tests.labs.conftest import make_run

    run = make_run(owner)  # queued, never sent to the worker
    cookie = session_cookie(client, owner)

    async def idle_then_notified():
        url = f"ws://{live}/ws/labs/runs/{run.pk}/?after=0"
        async with websockets.connect(url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                      origin=f"http://{live}") as socket:
            first = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(socket.recv(), timeout=7)
            await asyncio.to_thread(event_append, run_id=run.pk, type="log", payload={"message": "still here"})
            return first, json.loads(await asyncio.wait_for(socket.recv(), timeout=10))

    first, second = asyncio.run(idle_then_notified())
    assert (first["seq"], second["seq"], second["message"]) == (1, 2, "still here")


@pytest.mark.browser
def test_a_learner_launches_the_default_lab_and_watches_it_train(live, client, owner, page):
    client.force_login(owner)
    host, port = live.split(":")
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": host, "path": "/"}])
    page.goto(f"http://{live}/labs/sentiment-lora/")
    page.click("#launch-link")
    page.select_option("#id_base_model", "tiny-test")
    small = {"train_limit": 24, "epochs": 1, "batch_size": 4, "max_length": 128, "learning_rate": 0.01, "eval_every": 3}
    for field, value in small.items():
        page.fill(f"#id_{field}", str(value))
    page.click("#launch-form button[type=submit]")
    page.wait_for_url("**/labs/runs/*/")

    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points) >= 6", timeout=120_000)
    page.wait_for_selector("#run-status[data-status=succeeded]", timeout=120_000)
    page.wait_for_selector("#run-results #results-metrics", timeout=30_000)
    assert page.locator("#loss-chart canvas").count() == 1
    assert "6 of 6 steps" in page.inner_text("#run-progress-text")  # and no ETA once it has ended (issue 25)
    assert "ETA" not in page.inner_text("#run-progress-text")
    assert page.locator("#cancel-form").count() == 0
    assert "Zero-shot baseline" in page.inner_text("#run-results")
    assert page.locator("#token-view .tok.supervised").count() >= 2
