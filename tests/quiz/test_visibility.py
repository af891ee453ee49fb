"""Anonymous visitors browse and reveal; only published questions reach learners anywhere."""

from datetime import timedelta

import pytest
from django.utils import timezone
from fsrs import Rating

from quiz.models import Attempt, PracticeCard
from quiz.services import card_review


def test_a_visitor_lists_and_searches_published_questions(client, make_question):
    make_question("open", title="LoRA rank explained", very_often=True)
    make_question("open", title="RAG or fine-tune", topics=["rag"], difficulty="scenario",
                  answer="Use retrieval for fresh facts.")
    page = client.get("/quiz/").content.decode()
    assert "LoRA rank explained" in page and "RAG or fine-tune" in page and "2 questions match" in page
    assert "RAG or fine-tune" in client.get("/quiz/?q=retrieval").content.decode()  # searches the answer too
    assert "LoRA rank explained" not in client.get("/quiz/?q=retrieval").content.decode()
    assert "LoRA rank explained" not in client.get("/quiz/?topic=rag").content.decode()
    assert "RAG or fine-tune" not in client.get("/quiz/?difficulty=intermediate").content.decode()
    assert "RAG or fine-tune" not in client.get("/quiz/?very_often=on").content.decode()
    assert "1 question matches" in client.get("/quiz/?very_often=on").content.decode()


def test_a_lab_page_can_link_to_its_questions(client, make_question):
    make_question("open", title="Rank question", lab="rank-sweep")
    make_question("open", title="Other question", lab="data-size")
    page = client.get("/quiz/?lab=rank-sweep").content.decode()
    assert "Rank question" in page and "Other question" not in page


def test_topic_filter_does_not_confuse_lora_with_qlora(client, make_question):
    make_question("open", title="Only QLoRA", topics=["qlora"])
    assert "Only QLoRA" not in client.get("/quiz/?topic=lora").content.decode()
    assert "Only QLoRA" in client.get("/quiz/?topic=qlora").content.decode()


def test_my_practice_status_filters_new_due_and_mastered(owner_client, owner, make_question):
    new, due, mastered = make_question("open", title="Never seen"), make_question("open", title="Due one"), \
        make_question("open", title="Known well")
    card_review(user=owner, question=due, rating=Rating.Again)
    card = card_review(user=owner, question=mastered, rating=Rating.Easy).card
    PracticeCard.objects.filter(pk=card.pk).update(stability=40.0, due=timezone.now() + timedelta(days=40))
    assert "Never seen" in owner_client.get("/quiz/?practice=new").content.decode()
    assert "Due one" not in owner_client.get("/quiz/?practice=new").content.decode()
    page = owner_client.get("/quiz/?practice=due").content.decode()
    assert "Due one" in page and "Known well" not in page and new.title not in page
    page = owner_client.get("/quiz/?practice=mastered").content.decode()
    assert "Known well" in page and "Due one" not in page


def test_a_visitor_reveals_the_hint_then_the_answer_without_javascript(client, make_question):
    question = make_question("single", lab="rank-sweep")
    url = f"/quiz/q/{question.slug}/"
    page = client.get(url).content.decode()
    assert "What does <strong>LoRA</strong> train?" in page
    assert 'href="?reveal=hint"' in page and "Think about ranks." not in page
    assert 'href="/labs/rank-sweep/"' in page and "Try it in the lab" in page
    hint = client.get(url + "?reveal=hint").content.decode()
    assert "Think about ranks." in hint and "Two small matrices" not in hint
    answer = client.get(url + "?reveal=answer").content.decode()
    assert "Two small matrices" in answer and "why right" in answer and "What a good answer covers" in answer


def test_htmx_reveal_returns_only_the_fragment(client, make_question):
    question = make_question("open")
    response = client.get(f"/quiz/q/{question.slug}/?reveal=hint", HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="reveal"') and "Think about ranks." in body and "<nav" not in body
    assert 'hx-get="?reveal=answer"' in body
    assert "HX-Request" in response["Vary"]
    # The back button may ask htmx to restore a page it no longer caches: that needs the whole page.
    restore = client.get(f"/quiz/q/{question.slug}/?reveal=hint", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<nav" in restore.content.decode() and "Think about ranks." in restore.content.decode()


@pytest.mark.parametrize("status", ["draft", "review"])
def test_unpublished_questions_reach_no_learner(owner_client, owner, make_question, status):
    hidden = make_question("single", status=status, title="Secret draft question")
    make_question("single", title="Public question")
    assert "Secret draft question" not in owner_client.get("/quiz/").content.decode()
    assert "Secret draft question" not in owner_client.get("/quiz/?q=Secret").content.decode()
    assert owner_client.get(f"/quiz/q/{hidden.slug}/").status_code == 404
    assert owner_client.post(f"/quiz/q/{hidden.slug}/practise/").status_code == 404
    owner_client.post("/quiz/quizzes/build/", {"length": 10})
    assert [a.question.title for a in Attempt.objects.get().answers.all()] == ["Public question"]
    card_review(user=owner, question=hidden, rating=Rating.Again)  # a card from before it was unpublished
    assert "Secret draft question" not in owner_client.get("/quiz/practice/").content.decode()
    assert "Secret draft question" not in owner_client.get("/quiz/practice/?reveal=answer").content.decode()


def test_starting_a_quiz_needs_an_account(client, make_question):
    make_question("open")
    response = client.post("/quiz/quizzes/build/", {"length": 5})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Attempt.objects.exists()
