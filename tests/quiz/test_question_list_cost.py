"""The question list is the page a class loads most (fault_bench quiz_burst): its filter counts are
kept per web process, keyed on the bank's version, so they cost one query and are never stale."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from quiz.models import Question
from quiz.vocab import Status

pytestmark = pytest.mark.django_db


def chips(client) -> str:
    response = client.get("/quiz/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_counts_follow_every_publish_edit_and_removal(client, make_question):
    first = make_question("open", topics=["lora"])
    make_question("single", topics=["lora"])
    assert "Single choice (1)" in chips(client) and "Open answer (1)" in chips(client)
    make_question("single", topics=["lora"])  # published: the count changes
    assert "Single choice (2)" in chips(client)
    first.kind = "numeric"  # edited: updated_at changes, the count does not
    first.numeric_answer, first.tolerance = 1.0, 0.0
    first.save()
    page = chips(client)
    assert "Open answer (" not in page and "Numeric (1)" in page
    Question.objects.filter(pk=first.pk).update(status=Status.DRAFT)  # unpublished in bulk: the count changes
    assert "Numeric (" not in chips(client)


def test_a_second_look_at_the_list_reads_no_question_topics(client, make_question):
    for _ in range(3):
        make_question("open")
    chips(client)
    with CaptureQueriesContext(connection) as queries:
        chips(client)
    topic_reads = [q["sql"] for q in queries.captured_queries if '"quiz_question"."topics" AS' in q["sql"]]
    assert topic_reads == [] and len(queries) <= 4, [q["sql"][:120] for q in queries.captured_queries]
