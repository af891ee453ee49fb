"""Another learner's attempt, answer, review or card is a 404 on every endpoint."""

import pytest
from fsrs import Rating

from quiz.models import Answer
from quiz.services import answer_save, attempt_grade, attempt_start, card_review
from tests.conftest import PASSWORD


@pytest.fixture
def intruder_client(client, other_user):
    client.force_login(other_user)
    return client


@pytest.fixture
def owners_attempt(owner, make_question):
    question = make_question("open")
    attempt = attempt_start(user=owner, questions=[question], title="Mine")
    answer_save(answer=attempt.answers.get(), text="my private answer")
    return attempt


def test_another_users_attempt_is_a_404_everywhere(intruder_client, owners_attempt):
    pk = owners_attempt.pk
    for url in (f"/quiz/attempts/{pk}/", f"/quiz/attempts/{pk}/1/", f"/quiz/attempts/{pk}/results/"):
        assert intruder_client.get(url).status_code == 404, url
    for url in (f"/quiz/attempts/{pk}/1/", f"/quiz/attempts/{pk}/1/autosave/", f"/quiz/attempts/{pk}/submit/"):
        assert intruder_client.post(url, {"text": "overwritten", "go": "submit"}).status_code == 404, url
    answer = Answer.objects.get(attempt=owners_attempt)
    assert answer.text == "my private answer" and owners_attempt.answers.get().method == ""


def test_another_users_answer_review_and_card_are_404(intruder_client, owner, owners_attempt, make_question, settings):
    settings.LLM_API_KEY = ""
    attempt_grade(attempt=owners_attempt)
    answer = owners_attempt.answers.get()
    assert intruder_client.post(f"/quiz/answers/{answer.pk}/self-assess/", {"covered": ["0"]}).status_code == 404
    review = card_review(user=owner, question=make_question("open"), rating=Rating.Good)
    assert intruder_client.post(f"/quiz/reviews/{review.pk}/rate/", {"rating": "4"}).status_code == 404
    assert intruder_client.post(f"/quiz/practice/{review.card.pk}/rate/", {"rating": "4"}).status_code == 404
    review.refresh_from_db()
    assert review.rating == Rating.Good


def test_the_owner_sees_their_own_attempt(client, owner, owners_attempt):
    client.login(username="owner", password=PASSWORD)
    assert client.get(f"/quiz/attempts/{owners_attempt.pk}/1/").status_code == 200
