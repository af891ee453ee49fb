"""The pages a class loads most (fault_bench quiz_burst: the question list, a question in an
attempt, its autosave and its answer) cost a fixed number of queries, whatever the bank, the quiz
length or the learner's practice cards; the list's filter form is rendered once per web process for
the same filters and still shows each learner's own; the ASGI handler serves a sync page in one hop
on a pool of long-lived threads that keep their database connections, and keeps an async view on
the event loop; the list's badges, built in Python, are each question's own and escaped."""

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

    assert isinstance(asgi.django_asgi_app, asgi.PooledSyncASGIHandler)
    assert asgi._serves_sync_view("/quiz/") and asgi._serves_sync_view("/no/such/page/")
    assert not asgi._serves_sync_view("/playground/")  # an async view: awaiting a model load holds no thread


@pytest.mark.django_db(transaction=True)  # (the pool's threads read the database through their own connections)
def test_sync_pages_are_served_by_long_lived_threads_that_keep_their_database_connection(make_question, settings):
    """Django's own handler gives every request a new thread, so a new database connection; the pool's
    threads open one and keep it (CONN_MAX_AGE), as a WSGI server's threads do."""
    import asyncio
    import threading

    import httpx
    from django.db.backends.signals import connection_created

    from config import asgi

    make_question("single", title="Pooled & kept")
    # Its own pool, of one thread: which of several threads takes a request is up to the scheduler.
    settings.WEB_SYNC_THREADS = 1
    handler = asgi.PooledSyncASGIHandler()
    opened = []

    def note(sender, connection, **kwargs):
        opened.append(threading.current_thread().name)

    async def five_pages():
        transport = httpx.ASGITransport(app=handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.get("/quiz/") for _ in range(5)]

    connection_created.connect(note)
    try:
        pages = asyncio.run(five_pages())
    finally:
        connection_created.disconnect(note)
        handler.shutdown()
    assert [page.status_code for page in pages] == [200] * 5
    assert all("Pooled &amp; kept" in page.text for page in pages)
    assert opened == ["web-sync_0"]  # one connection for the five pages (Django's handler: five)


def test_the_badges_are_the_questions_own_escaped_and_link_to_the_filtered_list(client, make_question):
    make_question("single", title="First", topics=["lora", "rag"], very_often=True, difficulty="advanced")
    make_question("open", title="Second", topics=["peft"], very_often=False)
    page = client.get("/quiz/").content.decode()
    first, second = (page.split(f"<strong>{title}</strong>")[1].split("</li>")[0] for title in ("First", "Second"))
    assert first.count('class="badge topic"') == 2 and second.count('class="badge topic"') == 1
    assert ('<a class="badge topic" href="/quiz/?topic=lora">LoRA</a> '
            '<a class="badge topic" href="/quiz/?topic=rag">RAG</a>') in first
    assert '<span class="badge">Single choice</span>\n<span class="badge">Advanced</span>' in first
    assert "asked very often" in first and "asked very often" not in second
    assert '<a class="badge topic" href="/quiz/?topic=peft">PEFT</a>' in second

    from quiz.models import Question
    from quiz.templatetags.quiz_tags import question_badges

    hostile = Question(kind="open", difficulty="beginner", topics=['"><script>x</script>'], very_often=False)
    html = str(question_badges(hostile))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_empty_build_form_is_rendered_once_per_process_and_one_sent_back_shows_what_was_sent(
        owner_client, make_question, monkeypatch):
    from django.forms import CheckboxSelectMultiple

    from quiz.forms import BuildQuizForm

    make_question("single", topics=["lora"])
    assert str(BuildQuizForm()["topics"]) in owner_client.get("/quiz/quizzes/").content.decode()
    renders = []
    render = CheckboxSelectMultiple.render
    monkeypatch.setattr(CheckboxSelectMultiple, "render", lambda *a, **k: renders.append(1) or render(*a, **k))
    page = owner_client.get("/quiz/quizzes/").content.decode()
    assert renders == [] and str(BuildQuizForm()["topics"]) in page  # from the cache, the same markup
    sent = {"length": 5, "topics": ["behavioral"]}  # nothing published matches: the form comes back (400)
    response = owner_client.post("/quiz/quizzes/build/", sent)
    assert response.status_code == 400 and renders
    assert str(BuildQuizForm(sent)["topics"]) in response.content.decode()
