"""Model loads in a web process are limited and metered: at most MODEL_LOADS_AT_ONCE at a time
(requests for run-1, run-2, run-3... in parallel loaded every one at once, each a whole model's
memory while merging), a request past that gets a JSON 503 with Retry-After, and each load
costs the learner MODEL_LOAD_TEXTS of their texts per minute."""

import json
import threading

import pytest

from inference.serving import ClassifierCache, LoadsBusy, classifiers


def test_a_second_model_does_not_load_while_the_first_is_loading():
    cache = ClassifierCache(4, max_loads=1, load_wait_s=0.2)
    release, started = threading.Event(), threading.Event()

    def slow_load():
        started.set()
        release.wait(10)
        return "model-1"

    first = threading.Thread(target=lambda: cache.get("run-1", slow_load))
    first.start()
    assert started.wait(10)
    with pytest.raises(LoadsBusy) as busy:
        cache.get("run-2", lambda: "model-2")
    assert busy.value.retry_after_s >= 1 and "Retry in" in str(busy.value)
    release.set()
    first.join(10)
    assert cache.get("run-2", lambda: "model-2").classifier == "model-2"  # the slot is free again
    assert cache.loads == 2 and cache.active_loads == 0


def test_a_waiting_request_gets_the_slot_when_it_frees_within_the_wait():
    cache = ClassifierCache(4, max_loads=1, load_wait_s=5)
    release = threading.Event()
    with cache.load_slot():
        threading.Timer(0.2, release.set).start()
        waiter = threading.Thread(target=lambda: cache.get("run-2", lambda: "model-2"))
        waiter.start()
        release.wait(5)
    waiter.join(10)
    assert cache.keys() == ["run-2"]


def test_before_load_runs_once_per_real_load_and_a_refusal_loads_nothing():
    cache = ClassifierCache(4, max_loads=1)
    charged = []
    cache.get("run-1", lambda: "m", before_load=lambda: charged.append(1))
    cache.get("run-1", lambda: "m", before_load=lambda: charged.append(1))  # cached: not charged again
    assert charged == [1]

    def refuse():
        raise RuntimeError("over the limit")

    with pytest.raises(RuntimeError):
        cache.get("run-2", lambda: pytest.fail("must not load"), before_load=refuse)
    assert cache.keys() == ["run-1"] and cache.active_loads == 0


def post(client, body, bearer):
    return client.post("/api/classify", data=json.dumps(body), content_type="application/json", **bearer)


def test_the_api_answers_503_with_retry_after_while_the_load_slots_are_taken(client, run, bearer, settings):
    settings.MODEL_LOAD_WAIT_S = 0.1
    with classifiers.load_slot():  # another request is loading a model
        response = post(client, {"run": run.pk, "texts": ["Nice."]}, bearer)
    assert response.status_code == 503 and response["Content-Type"].startswith("application/json")
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "model_loads_busy"
    assert post(client, {"run": run.pk, "texts": ["Nice."]}, bearer).status_code == 200  # free again: it loads


def test_a_load_costs_texts_a_cached_model_does_not(client, make_run, owner, bearer, settings):
    settings.MODEL_LOAD_TEXTS, settings.CLASSIFY_TEXTS_PER_MINUTE = 50, 80
    first, second = make_run(owner), make_run(owner)
    assert post(client, {"run": first.pk, "texts": ["One."]}, bearer).status_code == 200  # 1 + 50 for the load
    for _ in range(3):
        assert post(client, {"run": first.pk, "texts": ["Again."]}, bearer).status_code == 200  # cached: 1 each
    response = post(client, {"run": second.pk, "texts": ["Two."]}, bearer)  # 55 used: a second load does not fit
    assert response.status_code == 429 and "loading a model that is not in memory costs 50" in response.json()["error"]["message"]
    assert int(response["Retry-After"]) >= 1
    assert classifiers.loads == 1


def test_the_playground_says_so_in_place_when_the_load_slots_are_taken(client, owner, run, settings):
    settings.MODEL_LOAD_WAIT_S = 0.1
    client.force_login(owner)
    with classifiers.load_slot():
        response = client.post("/playground/", {"target": f"run-{run.pk}", "text": "Nice."}, HTTP_HX_REQUEST="true")
    assert response.status_code == 503 and int(response["Retry-After"]) >= 1
    assert "loading other models right now" in response.content.decode()
