"""The pages a class loads most (fault_bench quiz_burst: the question list, a question in an
attempt, its autosave and its answer) cost a fixed number of queries, whatever the bank, the quiz
length or the learner's practice cards; the list's filter form is rendered once per web process for
the same filters and still shows each learner's own; the ASGI handler serves a sync page in one hop
to the sync thread and keeps an async view on the event loop."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from quiz.models import Attempt
from quiz.services import card_add

pytestmark = pytest.mark.django_db

# session, user, then the page's own: questions count, the page of questions, the learner's cards on
# it, the bank's version (the filter counts' cache key)
LIST_QUERIES = 6
# session, user, attempt, answers with their questions, the question's choices
QUESTION_QUERIES = 5
# session, user, attempt, the answer with its question, the UPDATE
SAVE_QUERIES = 5


def queries_of(client, method: str, url: str, data=None, **extra) -> list[str]:
    response = getattr(client, method)(url, data or {}, **extra)  # a first request fills the per-process caches
    assert response.status_code in (200, 302), response.content.decode()[:500]
    with CaptureQueriesContext(connection) as queries:
        getattr(client, method)(url, data or {}, **extra)
    return [q["sql"][:150] for q in queries.captured_queries]


def start_quiz(client, length: int) -> Attempt:
    response = client.post("/quiz/quizzes/build/", {"length": length})
    assert response.status_code == 302, response.content.decode()[:500]
    return Attempt.objects.latest("id")


@pytest.mark.parametrize("questions", [3, 30])
def test_the_question_list_costs_the_same_queries_for_any_bank_and_cards(owner_client, owner, make_question, questions):
    made = [make_question("single", topics=["lora", "peft", "qlora"]) for _ in range(questions)]
    for question in made[::2]:
        card_add(user=owner, question=question)
    sql = queries_of(owner_client, "get", "/quiz/")
    assert len(sql) == LIST_QUERIES, sql


@pytest.mark.parametrize("length", [2, 10])
def test_a_question_in_an_attempt_costs_the_same_queries_for_any_quiz_length(owner_client, make_question, length):
    for _ in range(length):
        make_question("single")
    attempt = start_quiz(owner_client, length)
    sql = queries_of(owner_client, "get", f"/quiz/attempts/{attempt.pk}/2/")
    assert len(sql) == QUESTION_QUERIES, sql


@pytest.mark.parametrize("kind", ["open", "single"])
def test_an_autosave_reads_the_attempt_and_question_once(owner_client, make_question, kind):
    for _ in range(3):
        make_question(kind)
    attempt = start_quiz(owner_client, 3)
    data = {"text": "A and B"} if kind == "open" else {"choice": ["1"]}
    sql = queries_of(owner_client, "post", f"/quiz/attempts/{attempt.pk}/1/autosave/", data, HTTP_HX_REQUEST="true")
    # A single-choice answer also reads its question's choice ids, to keep only valid ones.
    assert len(sql) == SAVE_QUERIES + (kind == "single"), sql


def test_an_answer_saved_with_next_costs_a_fixed_number_of_queries(owner_client, make_question):
    for _ in range(4):
        make_question("open")
    attempt = start_quiz(owner_client, 4)
    sql = queries_of(owner_client, "post", f"/quiz/attempts/{attempt.pk}/1/", {"text": "final", "go": "next"})
    assert len(sql) == SAVE_QUERIES, sql


def test_the_cached_filter_form_shows_each_visitors_own_filters(client, owner, make_question):
    make_question("single", difficulty="advanced")
    anonymous = client.get("/quiz/").content.decode()
    assert "My practice" not in anonymous and '<option value="advanced" selected>' not in anonymous
    picked = client.get("/quiz/?difficulty=advanced").content.decode()
    assert '<option value="advanced" selected>' in picked
    assert '<option value="advanced" selected>' not in client.get("/quiz/").content.decode()
    client.force_login(owner)
    mine = client.get("/quiz/").content.decode()
    assert "My practice" in mine and '<option value="advanced" selected>' not in mine


def test_the_asgi_handler_serves_sync_pages_in_one_hop_and_async_views_on_the_loop():
    from config import asgi

    assert isinstance(asgi.django_asgi_app, asgi.OneHopASGIHandler)
    assert asgi._serves_sync_view("/quiz/") and asgi._serves_sync_view("/no/such/page/")
    assert not asgi._serves_sync_view("/playground/")  # an async view: awaiting a model load holds no thread
