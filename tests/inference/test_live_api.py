"""The real `openai` client against this project's /v1 on a real Daphne server."""

import pytest

from inference.models import ApiToken
from tests.inference.conftest import SERVER_ENV
from tests.servers import daphne_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One Daphne for the module: it reads the test database file the tests write to."""
    with daphne_server(tmp_path_factory.mktemp("daphne"), **SERVER_ENV) as address:
        yield address


def test_the_openai_client_lists_models_and_classifies(server, make_run, owner, other_user):
    import openai

    run = make_run(owner)
    theirs = make_run(other_user)
    _, raw = ApiToken.issue(user=owner, name="client")
    client = openai.OpenAI(base_url=f"http://{server}/v1", api_key=raw, max_retries=0, timeout=60)

    ids = [model.id for model in client.models.list()]
    assert f"run-{run.pk}" in ids and f"run-{theirs.pk}" not in ids and "smollm2-135m-instruct" in ids
    assert client.models.retrieve(f"run-{run.pk}").id == f"run-{run.pk}"

    reply = client.chat.completions.create(model=f"run-{run.pk}", messages=[{"role": "user", "content": "Broke in a day."}])
    assert reply.choices[0].message.content in ("positive", "negative", "neutral")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 20 and reply.usage.completion_tokens == 1

    stream = client.chat.completions.create(model=f"run-{run.pk}", messages=[{"role": "user", "content": "Broke in a day."}],
                                            stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == reply.choices[0].message.content

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"run-{theirs.pk}", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://{server}/v1", api_key="tl_wrong", max_retries=0).models.list()


def test_concurrent_api_requests_are_served_and_batched(server, make_run, owner):
    """Eight clients at once against one server process: every answer is right (the same as
    alone), and the server does not fall over."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    run = make_run(owner)
    _, raw = ApiToken.issue(user=owner, name="load")
    headers = {"Authorization": f"Bearer {raw}"}
    texts = [f"Review number {i}: {'good' if i % 2 else 'bad'} product." for i in range(16)]
    with httpx.Client(base_url=f"http://{server}", headers=headers, timeout=60) as http:
        alone = http.post("/api/classify", json={"run": run.pk, "texts": texts}).json()["predictions"]

        def one(i):
            return http.post("/api/classify", json={"run": run.pk, "texts": [texts[i]]})

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(one, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    for i, response in enumerate(responses):
        got = response.json()["predictions"][0]
        assert got["label"] == alone[i]["label"]
        assert max(abs(got["probs"][k] - alone[i]["probs"][k]) for k in got["probs"]) < 1e-4


def test_the_prompting_baseline_can_evaluate_against_this_sites_own_v1(server, make_run, owner):
    """Any OpenAI-compatible endpoint works as a baseline target, this project's own included."""
    from inference import prompting
    from mlcore.data import load_bundled

    run = make_run(owner)
    _, raw = ApiToken.issue(user=owner, name="baseline")
    examples = load_bundled("reviews").test[:4]
    evaluation = prompting.evaluate_api(examples, ["positive", "negative", "neutral"], base_url=f"http://{server}/v1",
                                        api_key=raw, model=f"run-{run.pk}", timeout_s=60, concurrency=2)
    assert evaluation.n == 4 and evaluation.errors == 0 and evaluation.unparseable == 0
    assert evaluation.prompt_tokens > 4 * 20 and evaluation.completion_tokens == 4
