"""Prompting baselines: reply parsing, example selection, the API evaluation against a local
OpenAI-compatible server (the real `openai` client over HTTP), the stored comparison rows, the
management command, and the results page's button through a real Celery worker."""

import io
import time

import pytest
from django.core.management import call_command

from inference import prompting
from inference.baselines import API_ENV_HINT, baselines_compute, baselines_launch
from inference.models import BaselineResult
from mlcore.data import Example, load_bundled
from mlcore.prompt import chat_messages, pick_shots
from tests.fakes.openai_server import HTTP_500, FakeOpenAI, Reply
from tests.inference.conftest import SERVER_ENV

LABELS = ["positive", "negative", "neutral"]
Method, Status = BaselineResult.Method, BaselineResult.Status


@pytest.mark.parametrize("reply, label", [
    ("negative", "negative"), ("Positive.", "positive"), (" NEUTRAL\n", "neutral"),
    ("The sentiment is negative.", "negative"), ("Negative. It is not positive.", "negative"),
    ("positive or negative?", None), ("I cannot tell.", None), ("", None), (None, None),
])
def test_a_reply_is_parsed_to_the_label_it_names(reply, label):
    assert prompting.parse_label(reply, LABELS) == label


def gold_responder(examples, *, unparseable_text=None):
    """Answers each review with its true label; one review gets a reply naming no label."""
    gold = {e.text: e.label for e in examples}

    def respond(request):
        text = request["messages"][-1]["content"]
        return "I am not sure." if text == unparseable_text else gold[text].capitalize() + "."

    return respond


def test_the_api_baseline_scores_parsed_replies_and_reports_latency_tokens_and_cost(fake_openai):
    examples = load_bundled("reviews").test[:8]
    fake_openai.responder = gold_responder(examples, unparseable_text=examples[2].text)
    shots = pick_shots(load_bundled("reviews").train, LABELS, 3)
    evaluation = prompting.evaluate_api(examples, LABELS, shots=shots, base_url=fake_openai.base_url, api_key="k",
                                        model="fake-model", timeout_s=5, concurrency=2)
    assert evaluation.n == 8 and evaluation.unparseable == 1
    assert evaluation.accuracy == pytest.approx(7 / 8)
    assert evaluation.latency_p95_ms >= evaluation.latency_p50_ms > 0
    assert evaluation.prompt_tokens > 0 and evaluation.completion_tokens > 0
    cost = evaluation.cost_per_1000(0.15, 0.60)
    assert cost == pytest.approx((evaluation.prompt_tokens * 0.15 + evaluation.completion_tokens * 0.60) / 8 / 1e6 * 1000)
    assert evaluation.details["unparseable_samples"][0]["reply"] == "I am not sure."
    # The prompt: the project's system prompt, the k examples as earlier turns, then the review.
    messages = fake_openai.requests[0]["messages"]
    assert messages[0]["role"] == "system" and "positive, negative or neutral" in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 3 + ["user"]
    # The same turns as every k-shot prompt (labs' few-shot runs, the local baseline): mlcore.prompt's.
    assert messages == chat_messages(examples[0].text, LABELS, shots)
    assert fake_openai.requests[0]["temperature"] == 0


def test_failed_api_calls_count_as_wrong_and_a_bad_key_fails_fast():
    examples = [Example("Good.", "positive"), Example("Bad.", "negative")]
    with FakeOpenAI(lambda request: HTTP_500) as fake:
        evaluation = prompting.evaluate_api(examples, LABELS, base_url=fake.base_url, api_key="k", model="m",
                                            timeout_s=5, max_retries=0)
    assert evaluation.errors == 2 and evaluation.accuracy == 0
    bad_key = Reply(status=401, body={"error": {"message": "bad key", "type": "invalid_request_error"}})
    with FakeOpenAI(lambda request: bad_key) as fake:
        with pytest.raises(prompting.ApiConfigError):
            prompting.evaluate_api(examples, LABELS, base_url=fake.base_url, api_key="k", model="m", timeout_s=5, max_retries=0)
        assert len(fake.requests) == 1


@pytest.fixture
def api_on(settings, fake_openai):
    settings.LLM_API_KEY = "test-key"
    settings.LLM_API_BASE_URL = fake_openai.base_url
    settings.LLM_MODEL = "fake-model"
    fake_openai.responder = gold_responder(load_bundled("reviews").test)
    return fake_openai


def test_computing_the_baselines_stores_one_row_per_method(run, api_on):
    baselines_launch(run=run, k=3, limit=6, enqueue=False)
    rows = {row.method: row for row in baselines_compute(run_id=run.pk)}
    assert set(rows) == set(Method.values)
    assert {row.status for row in rows.values()} == {Status.SUCCEEDED}, {m: r.message for m, r in rows.items()}
    for row in rows.values():
        assert row.n == 6 and row.macro_f1 is not None and row.latency_p50_ms > 0
    assert rows[Method.ZERO_SHOT_API].accuracy == 1.0 and rows[Method.FEW_SHOT_API].k == 3
    assert rows[Method.FEW_SHOT_LOCAL].k == 3 and len(rows[Method.FEW_SHOT_LOCAL].details["shots"]) == 3
    assert rows[Method.FINETUNED].cost_per_1000 == 0 and rows[Method.FINETUNED].compute_s_per_1000 > 0
    assert rows[Method.FEW_SHOT_API].cost_per_1000 > rows[Method.ZERO_SHOT_API].cost_per_1000 > 0
    # The fake endpoint is on this machine: the data stays local.
    assert not rows[Method.ZERO_SHOT_API].is_external
    # The few-shot local prompt is longer, yet its prefix is cached: it reads more tokens per review.
    assert rows[Method.FEW_SHOT_LOCAL].prompt_tokens > rows[Method.ZERO_SHOT_LOCAL].prompt_tokens


def test_without_an_api_key_the_api_rows_say_how_to_enable_them(owner_client, run, settings):
    settings.LLM_API_KEY = ""
    baselines_launch(run=run, k=2, limit=4, enqueue=False)
    rows = {row.method: row for row in baselines_compute(run_id=run.pk)}
    assert rows[Method.ZERO_SHOT_API].status == Status.SKIPPED and "TUNELAB_LLM_API_KEY" in rows[Method.ZERO_SHOT_API].message
    assert rows[Method.ZERO_SHOT_LOCAL].status == Status.SUCCEEDED

    page = owner_client.get(f"/labs/runs/{run.pk}/results/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="baselines-table"' in html and API_ENV_HINT.split(" (")[0] in html
    assert 'data-method="finetuned"' in html and 'id="run-baselines"' in html


def test_the_management_command_runs_the_baselines(run, settings):
    settings.LLM_API_KEY = ""
    out = io.StringIO()
    call_command("run_baselines", "--run", str(run.pk), "--k", "2", "--limit", "4", stdout=out)
    assert "Fine-tuned" in out.getvalue() and "succeeded" in out.getvalue()
    assert BaselineResult.objects.filter(run=run, status=Status.SUCCEEDED).count() == 3


def test_another_users_run_has_no_baselines_for_me(owner_client, make_run, other_user):
    theirs = make_run(other_user)
    assert owner_client.post(f"/inference/runs/{theirs.pk}/baselines/", {"k": 2}).status_code == 404
    assert owner_client.get(f"/inference/runs/{theirs.pk}/baselines/").status_code == 404
    assert not BaselineResult.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_run_baselines_button_computes_them_in_a_celery_worker(tmp_path, client, make_run, owner):
    from tests.servers import celery_worker

    run = make_run(owner)
    client.force_login(owner)
    with FakeOpenAI(gold_responder(load_bundled("reviews").test)) as fake:
        env = {**SERVER_ENV, "TUNELAB_LLM_API_KEY": "k", "TUNELAB_LLM_BASE_URL": fake.base_url, "TUNELAB_LLM_MODEL": "fake"}
        with celery_worker(tmp_path, queues="default", **env):
            response = client.post(f"/inference/runs/{run.pk}/baselines/", {"k": 2})
            assert response.status_code == 302
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                statuses = set(BaselineResult.objects.filter(run=run).values_list("status", flat=True))
                if statuses and statuses <= {Status.SUCCEEDED, Status.FAILED, Status.SKIPPED}:
                    break
                time.sleep(0.5)
    rows = {row.method: row for row in BaselineResult.objects.filter(run=run)}
    assert {row.status for row in rows.values()} == {Status.SUCCEEDED}, {m: r.message for m, r in rows.items()}
    assert rows[Method.ZERO_SHOT_API].n == len(load_bundled("reviews").test)
    page = client.get(f"/labs/runs/{run.pk}/results/").content.decode()
    assert page.count("<tr data-method=") == 5
