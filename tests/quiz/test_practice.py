from datetime import UTC, timedelta

import pytest
from django.utils import timezone
from fsrs import Card, Rating, State

from quiz.models import PracticeCard, Review
from quiz.services import SCHEDULER, answer_save, attempt_grade, attempt_start, card_override, card_review


def graded_single(owner, make_question, *, right: bool):
    question = make_question("single")
    attempt = attempt_start(user=owner, questions=[question], title="One")
    choice = question.choices.filter(correct=right).first()
    answer_save(answer=attempt.answers.get(), selected=[choice.id])
    attempt_grade(attempt=attempt)
    return question, PracticeCard.objects.get(user=owner, question=question)


def test_a_full_marks_answer_rates_the_card_easy_and_schedules_it_days_ahead(owner, make_question):
    question, card = graded_single(owner, make_question, right=True)
    review = card.reviews.get()
    assert review.rating == Rating.Easy and review.score == 1.0
    assert card.state == State.Review and card.reps == 1
    assert card.due > timezone.now() + timedelta(days=1)
    # The stored JSON is fsrs's own format, and the columns mirror it.
    restored = Card.from_dict(card.data)
    assert restored.due == card.due and restored.state == State.Review and restored.stability == card.stability


def test_a_wrong_answer_rates_the_card_again_and_brings_it_back_in_minutes(owner, make_question):
    question, card = graded_single(owner, make_question, right=False)
    assert card.reviews.get().rating == Rating.Again
    assert card.state == State.Learning
    assert card.due < timezone.now() + timedelta(minutes=15)


def test_overriding_a_rating_reapplies_the_review_from_the_card_before_it(owner, make_question):
    question, card = graded_single(owner, make_question, right=True)
    review = card.reviews.get()
    card_override(review=review, rating=Rating.Again)
    card.refresh_from_db()
    review.refresh_from_db()
    assert (review.rating, review.derived_rating) == (Rating.Again, Rating.Easy)
    assert card.state == State.Learning and card.due < timezone.now() + timedelta(minutes=15)
    assert card.reps == 1  # still one review, not two

    card_override(review=review, rating=Rating.Good)
    card.refresh_from_db()
    expected, _ = SCHEDULER.review_card(Card.from_dict(review.card_before), Rating.Good,
                                        review_datetime=review.reviewed_at.astimezone(UTC))
    assert card.data == expected.to_dict()
    assert Review.objects.get(pk=review.pk).derived_rating == Rating.Easy  # the grade's rating is remembered


def test_only_the_latest_review_of_a_card_can_be_overridden(owner, make_question):
    question, card = graded_single(owner, make_question, right=True)
    first = card.reviews.get()
    card_review(user=owner, question=question, rating=Rating.Good, now=timezone.now() + timedelta(days=5))
    with pytest.raises(ValueError, match="only its latest review"):
        card_override(review=first, rating=Rating.Again)


def test_the_results_page_overrides_the_rating(owner_client, owner, make_question):
    question, card = graded_single(owner, make_question, right=True)
    review = card.reviews.get()
    response = owner_client.post(f"/quiz/reviews/{review.pk}/rate/", {"rating": "1"}, follow=True)
    assert response.status_code == 200
    assert "Rated Again" in response.content.decode()
    assert Review.objects.get(pk=review.pk).rating == Rating.Again


def test_the_practice_queue_shows_one_due_card_reveals_then_rates(owner_client, owner, make_question):
    first, second = make_question("open", title="First due"), make_question("open", title="Second due")
    card_review(user=owner, question=first, rating=Rating.Again, now=timezone.now() - timedelta(hours=2))
    card_review(user=owner, question=second, rating=Rating.Again, now=timezone.now() - timedelta(hours=1))
    page = owner_client.get("/quiz/practice/").content.decode()
    assert "First due" in page and "Second due" not in page
    assert "2 due now" in page
    assert 'name="rating"' not in page  # reveal first, then rate
    revealed = owner_client.get("/quiz/practice/?reveal=answer").content.decode()
    assert "Two small matrices" in revealed and 'name="rating" value="3"' in revealed
    fragment = owner_client.get("/quiz/practice/?reveal=answer", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<section id="reveal"') and "<html" not in fragment

    card = PracticeCard.objects.get(user=owner, question=first)
    response = owner_client.post(f"/quiz/practice/{card.pk}/rate/", {"rating": "4"})
    assert response.status_code == 302 and response["Location"] == "/quiz/practice/"
    card.refresh_from_db()
    assert card.reps == 2 and card.due > timezone.now() + timedelta(hours=20)
    assert "Second due" in owner_client.get("/quiz/practice/").content.decode()


def test_the_practice_page_says_when_nothing_is_due(owner_client, owner, make_question):
    question = make_question("open")
    card_review(user=owner, question=question, rating=Rating.Good)  # due again in 10 minutes
    page = owner_client.get("/quiz/practice/").content.decode()
    assert "Nothing is due right now" in page and "Next card due at" in page


def test_a_question_can_be_added_to_the_practice_queue(owner_client, owner, make_question):
    question = make_question("open", title="Add me")
    owner_client.post(f"/quiz/q/{question.slug}/practise/")
    card = PracticeCard.objects.get(user=owner, question=question)
    assert card.is_new and card.due <= timezone.now()
    assert "Add me" in owner_client.get("/quiz/practice/").content.decode()


def test_the_progress_page_counts_accuracy_due_and_mastered_per_topic(owner_client, owner, make_question):
    mastered = make_question("open", topics=["rag"])
    learning = make_question("open", topics=["rag", "cost"])
    make_question("open", topics=["rag"])  # never seen
    card_review(user=owner, question=learning, rating=Rating.Again)
    card = card_review(user=owner, question=mastered, rating=Rating.Easy).card
    card.state, card.stability = State.Review, 30.0  # as after a few weeks of good reviews
    card.save()
    graded_single(owner, make_question, right=True)  # lora/peft: accuracy 100%

    page = owner_client.get("/quiz/progress/").content.decode()
    rag_row = page[page.index('<tr data-topic="rag">'):]
    rag_row = rag_row[:rag_row.index("</tr>")]
    cells = [c.split("<")[0] for c in rag_row.split("<td>")[1:]]
    assert cells[:3] == ["RAG", "3", "2"] and cells[4:] == ["1", "1"]  # questions, seen, due today, mastered
    lora_row = page[page.index('<tr data-topic="lora">'):]
    assert "100%" in lora_row[:lora_row.index("</tr>")]
    assert 'class="seg mastered" style="width: 33%"' in page  # the server-rendered chart
    assert "stability of at least 21 days" in page


@pytest.mark.parametrize("url", ["/quiz/practice/", "/quiz/progress/", "/quiz/quizzes/"])
def test_practice_progress_and_quizzes_need_an_account(client, db, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
