"""POST /api/classify and the OpenAI-compatible /v1 endpoints, through Django's test client."""

import json

import pytest

from inference.models import ApiToken
from labs.models import Run


def post(client, path, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_classify_returns_a_label_probabilities_and_latency_per_text(client, run, bearer):
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["Love it.", "Broke at once."]}, **bearer)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == f"run-{run.pk}"
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert prediction["label"] in ("positive", "negative", "neutral")
        assert set(prediction["probs"]) == {"positive", "negative", "neutral"}
        assert sum(prediction["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert prediction["truncated"] is False
    assert body["latency_ms"] > 0
    assert response["X-RateLimit-Limit"] == "600"
    assert response["X-RateLimit-Remaining"] == "598"  # two texts counted


def test_a_second_request_reuses_the_loaded_model(client, run, bearer):
    from inference.serving import classifiers

    post(client, "/api/classify", {"run": run.pk, "texts": ["One."]}, **bearer)
    post(client, "/api/classify", {"model": f"run-{run.pk}", "texts": ["Two."]}, **bearer)
    assert classifiers.loads == 1


def test_a_base_model_classifies_zero_shot(client, bearer, db):
    response = post(client, "/api/classify", {"model": "tiny-test", "texts": ["Fine."]}, **bearer)
    assert response.status_code == 200, response.content
    assert response.json()["labels"] == ["positive", "negative", "neutral"]


@pytest.mark.parametrize("texts", [[""], ["fine", "   "], [], "  "])
def test_an_empty_text_is_a_400_with_a_message(client, run, bearer, texts):
    response = post(client, "/api/classify", {"run": run.pk, "texts": texts}, **bearer)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "texts"
    # A string is not a list of one (issue 25): it is refused for its type before its content.
    assert "empty" in error["message"] or (isinstance(texts, str) and "list of strings" in error["message"])


def test_too_many_texts_is_a_413_naming_the_limit(client, run, bearer, settings):
    settings.API_MAX_TEXTS = 3
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["a", "b", "c", "d"]}, **bearer)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["limit"] == 3 and "the limit is 3" in error["message"]


def test_a_text_over_the_limit_is_truncated_and_flagged(client, run, bearer):
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["short", "very long " * 1000]}, **bearer)
    assert [p["truncated"] for p in response.json()["predictions"]] == [False, True]


def test_a_body_that_is_not_json_is_a_400(client, run, bearer):
    response = client.post("/api/classify", data="texts=hello", content_type="application/x-www-form-urlencoded", **bearer)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("state", ["unknown", "running", "failed", "fewshot", "other users"])
def test_a_run_that_cannot_serve_is_a_404_on_classify_and_v1(client, make_run, owner, other_user, bearer, state):
    run_id = {
        "unknown": lambda: 999999,
        "running": lambda: make_run(owner, status=Run.Status.RUNNING).pk,
        "failed": lambda: make_run(owner, status=Run.Status.FAILED).pk,
        "fewshot": lambda: make_run(owner, mode=Run.Mode.FEWSHOT).pk,
        "other users": lambda: make_run(other_user).pk,
    }[state]()
    response = post(client, "/api/classify", {"run": run_id, "texts": ["Nice."]}, **bearer)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    response = post(client, "/v1/chat/completions",
                    {"model": f"run-{run_id}", "messages": [{"role": "user", "content": "Nice."}]}, **bearer)
    assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"


def test_staff_may_serve_any_run(client, run, staff_user):
    _, raw = ApiToken.issue(user=staff_user, name="staff")
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["Nice."]}, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


def test_an_unknown_base_model_is_a_404(client, bearer, db):
    response = post(client, "/api/classify", {"model": "gpt-17", "texts": ["Nice."]}, **bearer)
    assert response.status_code == 404 and "gpt-17" in response.json()["error"]["message"]


# --- tokens and the rate limit --------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer tl_not-a-real-token"])
def test_a_missing_or_wrong_token_is_a_401(client, run, header):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["Nice."]}, **headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_revoked_token_is_a_401(client, run, token, bearer):
    token[0].revoke()
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["Nice."]}, **bearer)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_a_session_login_is_not_an_api_token(owner_client, run):
    response = post(owner_client, "/api/classify", {"run": run.pk, "texts": ["Nice."]})
    assert response.status_code == 401


def test_only_the_hash_of_a_token_is_stored(token):
    row, raw = token
    assert raw.startswith("tl_") and len(raw) > 40
    stored = ApiToken.objects.filter(pk=row.pk).values()[0]
    assert raw not in json.dumps(stored, default=str)
    assert row.display_prefix == raw[:10]


def test_the_rate_limit_counts_texts_per_learner_across_tokens_and_answers_429(client, run, bearer, owner, other_user,
                                                                              settings):
    settings.CLASSIFY_TEXTS_PER_MINUTE = 5
    settings.MODEL_LOAD_TEXTS = 0  # texts per request are tested here; loads in test_model_loads
    statuses = [post(client, "/api/classify", {"run": run.pk, "texts": ["Nice.", "Fine."]}, **bearer).status_code
                for _ in range(2)]
    refused = post(client, "/api/classify", {"run": run.pk, "texts": ["Nice.", "Fine."]}, **bearer)
    assert statuses == [200, 200]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "5 texts per minute per learner" in error["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    # A second token of the same learner shares the allowance: one text is left, not five.
    _, second = ApiToken.issue(user=owner, name="second")
    assert post(client, "/api/classify", {"run": run.pk, "texts": ["a", "b"]},
                HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 429
    assert post(client, "/api/classify", {"run": run.pk, "texts": ["a"]},
                HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 200
    # Another learner has their own.
    _, theirs = ApiToken.issue(user=other_user, name="theirs")
    assert post(client, "/v1/models", {}, HTTP_AUTHORIZATION=f"Bearer {theirs}").status_code == 405
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {theirs}").status_code == 200


def test_the_rate_limit_fails_closed_with_a_json_503_when_redis_is_down(client, run, bearer, settings):
    from scripts.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = post(client, "/api/classify", {"run": run.pk, "texts": ["Nice."]}, **bearer)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"


def test_the_rate_limit_window_slides_and_a_refused_charge_costs_nothing():
    from ops import limits

    key = "test:sliding"
    first = limits.take(key, 3, limit=4, window_s=1.0)
    refused = limits.take(key, 2, limit=4, window_s=1.0)
    assert (first.charged, refused.charged, refused.used) == (3, 0, 3)
    assert refused.retry_after_s == 1
    assert limits.take(key, 1, limit=4, window_s=1.0).charged == 1
    import time

    time.sleep(1.1)
    assert limits.take(key, 4, limit=4, window_s=1.0).charged == 4  # the first charges are a window old


# --- OpenAI-compatible --------------------------------------------------------------------------


def test_v1_models_lists_my_finished_runs_and_the_base_models(client, make_run, owner, other_user, bearer):
    mine = make_run(owner)
    make_run(owner, status=Run.Status.RUNNING)
    theirs = make_run(other_user)
    response = client.get("/v1/models", **bearer)
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert f"run-{mine.pk}" in ids and f"run-{theirs.pk}" not in ids
    assert "smollm2-135m-instruct" in ids
    assert len([i for i in ids if i.startswith("run-")]) == 1


def test_a_base_model_without_weights_is_not_listed_and_says_how_to_provide_it(client, bearer, monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("TUNELAB_QWEN_PATH", str(tmp_path / "no-weights-here"))
    ids = [m["id"] for m in client.get("/v1/models", **bearer).json()["data"]]
    assert "smollm2-135m-instruct" in ids and "qwen2.5-0.5b-instruct" not in ids
    response = post(client, "/api/classify", {"model": "qwen2.5-0.5b-instruct", "texts": ["Fine."]}, **bearer)
    assert response.status_code == 503
    assert "hf download Qwen/Qwen2.5-0.5B-Instruct" in response.json()["error"]["message"]


def test_v1_chat_completions_answers_the_label_with_usage(client, run, bearer):
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "an earlier turn"},
                {"role": "assistant", "content": "positive"}, {"role": "user", "content": [{"type": "text", "text": "Broke."}]}]
    response = post(client, "/v1/chat/completions", {"model": f"run-{run.pk}", "messages": messages}, **bearer)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == f"run-{run.pk}"
    assert body["choices"][0]["message"]["content"] in ("positive", "negative", "neutral")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 20 and usage["completion_tokens"] == 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "tiny-test", "messages": []}, "messages"),
    ({"model": "tiny-test", "messages": [{"role": "system", "content": "x"}]}, "messages"),
    ({"model": "tiny-test", "messages": [{"role": "user", "content": "  "}]}, "texts"),
])
def test_v1_bad_requests_are_400s_in_the_openai_error_shape(client, bearer, body, param, db):
    response = post(client, "/v1/chat/completions", body, **bearer)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["param"] == param


def test_v1_needs_a_token_too(client, db):
    response = client.get("/v1/models")
    assert response.status_code == 401 and "error" in response.json()
