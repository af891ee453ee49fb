"""Bounded growth: a run records at most RUN_MAX_STEP_EVENTS step events whatever its length,
and for the largest run the limits allow (every step limit reached, the largest upload, the
longest examples) the websocket replay, the results page and the compare page of 12 such runs
stay under 1 MB."""

import asyncio
import json
import time

import pytest
import websockets
from django.conf import settings
from django.utils import timezone

from labs.models import Run, RunEvent
from labs.worker import RunRecorder
from tests.labs.conftest import SERVER_ENV, make_run, session_cookie
from tests.servers import daphne_server

MB = 1_000_000


def test_a_long_run_records_a_bounded_number_of_steps_every_validation_and_the_last_step(owner):
    run = make_run(owner, status=Run.Status.RUNNING)
    recorder = RunRecorder(run.pk)
    total = settings.RUN_MAX_STEPS
    for step in range(1, total + 1):
        recorder.report({"type": "step", "step": step, "total_steps": total, "loss": 1.0 / step})
        if step % (total // settings.RUN_MAX_EVALS) == 0:
            recorder.report({"type": "eval", "step": step, "loss": 0.5, "accuracy": 0.9, "macro_f1": 0.9})
    steps = [e.payload["step"] for e in run.events.filter(type="step").order_by("seq")]
    assert len(steps) <= settings.RUN_MAX_STEP_EVENTS + 1
    assert steps[0] == 1 and steps[-1] == total and steps == sorted(set(steps))
    assert run.events.filter(type="eval").count() == settings.RUN_MAX_EVALS

    # A resumed attempt (a new recorder) redoes steps after the checkpoint: none is recorded twice.
    again = RunRecorder(run.pk)
    for step in range(total - 50, total + 1):
        again.report({"type": "step", "step": step, "total_steps": total, "loss": 0.1})
    assert run.events.filter(type="step").count() == len(steps)


def biggest_run(owner, *, label="") -> Run:
    """A finished run as large as the limits allow, written straight to the database."""
    total = settings.RUN_MAX_STEPS
    stride = -(-total // settings.RUN_MAX_STEP_EVENTS)
    steps = sorted({1, total, *range(stride, total + 1, stride)})
    review = "This blender is loud, but it crushes ice in seconds and the jar is easy to clean. " * 5  # ~430 chars
    predictions = [{"text": review, "label": "positive", "predicted": "negative", "correct": False,
                    "probs": {"positive": 0.31, "negative": 0.52, "neutral": 0.17}} for _ in range(1150)]
    per_class = {label: {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 380}
                 for label in ("positive", "negative", "neutral")}
    test = {"accuracy": 0.8, "macro_f1": 0.75, "labels": list(per_class), "per_class": per_class,
            "confusion_matrix": [[300, 50, 30], [40, 310, 30], [20, 30, 330]]}
    run = make_run(owner, status=Run.Status.SUCCEEDED, label=label, started_at=timezone.now(), finished_at=timezone.now(),
                   metrics={"test": test, "zero_shot": test, "validation": [], "train": {"steps": total}},
                   predictions=predictions,
                   token_view=[{"id": 1234, "token": " word", "supervised": i > 8185} for i in range(8192)])
    events = [("step", {"step": s, "total_steps": total, "epoch": s / 20, "loss": 1 / s, "lr": 1e-3, "grad_norm": 0.5,
                        "samples_per_s": 12.5, "tokens_per_s": 3000.0, "elapsed_s": s * 1.5, "eta_s": 100.0}) for s in steps]
    events += [("eval", {"step": s, "loss": 0.4, "accuracy": 0.8, "macro_f1": 0.75})
               for s in range(total // settings.RUN_MAX_EVALS, total + 1, total // settings.RUN_MAX_EVALS)]
    events += [("log", {"message": "Loading smollm2-135m-instruct and adding LoRA (r=256, alpha=512)." * 2})] * 30
    events += [("status", {"status": "succeeded", "message": "Succeeded: test accuracy 0.800.", "error": ""})]
    RunEvent.objects.bulk_create([RunEvent(run=run, seq=2 + i, type=kind, payload=payload)
                                  for i, (kind, payload) in enumerate(events)])
    Run.objects.filter(pk=run.pk).update(last_seq=1 + len(events))
    return run


def timed_get(client, url):
    started = time.perf_counter()
    response = client.get(url)
    return response, time.perf_counter() - started


def test_the_biggest_runs_pages_stay_under_a_megabyte(owner_client, owner, capsys):
    runs = [biggest_run(owner, label=f"r = {i}") for i in range(12)]
    pk = runs[0].pk
    owner_client.get(f"/labs/runs/{pk}/")  # warm up: template compilation is not the page's cost
    sizes = {}
    for name, url in [("run", f"/labs/runs/{pk}/"), ("results", f"/labs/runs/{pk}/results/"),
                      ("results p12", f"/labs/runs/{pk}/results/?page=12"),
                      ("compare 12", "/labs/compare/?ids=" + ",".join(str(r.pk) for r in runs))]:
        response, seconds = timed_get(owner_client, url)
        assert response.status_code == 200, url
        sizes[name] = (len(response.content), seconds)
        assert len(response.content) < MB, (name, len(response.content))
    page = owner_client.get(f"/labs/runs/{pk}/results/?page=12").content.decode()
    assert "1101–1150 of 1150" in page and 'rel="prev"' in page and "more tokens" in page
    embedded = json.loads(page.split('id="results-curves" type="application/json">')[1].split("</script>")[0])
    assert len(embedded["train"]) <= settings.RUN_MAX_STEP_EVENTS + 1
    with capsys.disabled():
        print("\n" + "\n".join(f"  {name}: {size / 1000:.0f} kB in {s * 1000:.0f} ms" for name, (size, s) in sizes.items()))


@pytest.mark.django_db(transaction=True)
def test_the_websocket_replay_of_the_biggest_run_is_under_a_megabyte(tmp_path, client, owner):
    run = biggest_run(owner)
    cookie = session_cookie(client, owner)

    async def replay(address):
        total, count = 0, 0
        url = f"ws://{address}/ws/labs/runs/{run.pk}/?after=0"
        async with websockets.connect(url, additional_headers={"Cookie": f"sessionid={cookie}"},
                                      origin=f"http://{address}", max_size=4 * MB) as socket:
            started = time.perf_counter()
            while True:
                message = await asyncio.wait_for(socket.recv(), timeout=30)
                if json.loads(message)["type"] == "end":
                    return total, count, time.perf_counter() - started
                total, count = total + len(message), count + 1

    with daphne_server(tmp_path, **SERVER_ENV) as address:
        size, count, seconds = asyncio.run(replay(address))
    assert count == run.events.count() and size < MB
    print(f"replay: {count} events, {size / 1000:.0f} kB in {seconds * 1000:.0f} ms")
