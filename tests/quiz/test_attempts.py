import io
from datetime import timedelta

from django.core.management import call_command

from quiz.models import Answer, Attempt, Quiz, QuizItem
from quiz.services import attempt_start


def build(client, **data) -> Attempt:
    response = client.post("/quiz/quizzes/build/", {"length": 5, **data})
    assert response.status_code == 302, response.content.decode()[:2000]
    return Attempt.objects.latest("id")


def test_building_a_quiz_picks_published_questions_matching_the_filters(owner_client, owner, make_question):
    for _ in range(4):
        make_question("single", topics=["rag"], difficulty="beginner")
    make_question("single", topics=["rag"], difficulty="advanced")
    make_question("numeric", topics=["rag"], difficulty="beginner")
    make_question("single", topics=["qlora"], difficulty="beginner")
    attempt = build(owner_client, topics=["rag"], difficulties=["beginner"], kinds=["single"], length=3)
    questions = [a.question for a in attempt.answers.all()]
    assert len(questions) == 3
    assert all(q.kind == "single" and q.difficulty == "beginner" and "rag" in q.topics for q in questions)
    assert attempt.user == owner and attempt.deadline is None


def test_building_a_quiz_nothing_matches_explains_why(owner_client, make_question):
    make_question("open", topics=["rag"])
    response = owner_client.post("/quiz/quizzes/build/", {"length": 5, "topics": ["behavioral"]})
    assert response.status_code == 400
    assert "No published question matches" in response.content.decode()
    assert not Attempt.objects.exists()


def test_answers_autosave_through_htmx(owner_client, make_question):
    question = make_question("open")
    attempt = build(owner_client)
    response = owner_client.post(f"/quiz/attempts/{attempt.pk}/1/autosave/", {"text": "A and B"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Saved" in response.content.decode()
    assert Answer.objects.get(attempt=attempt, question=question).text == "A and B"


def test_a_numeric_autosave_warns_about_a_non_number(owner_client, make_question):
    make_question("numeric")
    attempt = build(owner_client)
    response = owner_client.post(f"/quiz/attempts/{attempt.pk}/1/autosave/", {"text": "sixty"}, HTTP_HX_REQUEST="true")
    assert "is not a number" in response.content.decode()


def test_without_javascript_save_and_next_posts_and_moves_on(owner_client, owner, make_question):
    first, second = make_question("single"), make_question("multi")
    attempt = attempt_start(user=owner, questions=[first, second], title="Two")
    right = first.choices.get(correct=True)
    page = owner_client.get(f"/quiz/attempts/{attempt.pk}/1/").content.decode()
    assert f'value="{right.id}"' in page and 'name="go" value="next"' in page
    response = owner_client.post(f"/quiz/attempts/{attempt.pk}/1/", {"choice": [right.id], "go": "next"})
    assert response["Location"] == f"/quiz/attempts/{attempt.pk}/2/"
    assert Answer.objects.get(attempt=attempt, position=1).selected == [right.id]
    # Reloading the page shows the saved choice: the attempt lives in the database.
    assert f'value="{right.id}" checked' in owner_client.get(f"/quiz/attempts/{attempt.pk}/1/").content.decode()


def test_an_unfinished_quiz_can_be_resumed(owner_client, make_question):
    for _ in range(3):
        make_question("open")
    attempt = build(owner_client, length=3)
    owner_client.post(f"/quiz/attempts/{attempt.pk}/1/", {"text": "first", "go": "next"})
    home = owner_client.get("/quiz/quizzes/").content.decode()
    assert "Unfinished" in home and f"/quiz/attempts/{attempt.pk}/" in home
    overview = owner_client.get(f"/quiz/attempts/{attempt.pk}/").content.decode()
    assert "1 of 3 questions answered" in overview
    assert f'href="/quiz/attempts/{attempt.pk}/2/" role="button" class="secondary">Continue' in overview


def test_submitting_grades_and_shows_the_results_with_model_answers_and_labs(owner_client, make_question, settings):
    settings.LLM_API_KEY = ""
    question = make_question("numeric", lab="data-size", answer="Multiply **everything**.")
    attempt = build(owner_client, length=1)
    owner_client.post(f"/quiz/attempts/{attempt.pk}/1/", {"text": "1,000", "go": "submit"})
    attempt.refresh_from_db()
    assert attempt.state == "graded" and attempt.score == 0.0
    page = owner_client.get(f"/quiz/attempts/{attempt.pk}/results/").content.decode()
    assert "0%" in page and "the answer is 64 examples" in page
    assert "Multiply <strong>everything</strong>." in page
    assert 'href="/labs/data-size/"' in page
    assert "due by the end of tomorrow" in page and 'href="/quiz/practice/"' in page
    assert question.title in page


def test_a_submitted_quiz_no_longer_accepts_answers(owner_client, make_question):
    make_question("open")
    attempt = build(owner_client, length=1)
    owner_client.post(f"/quiz/attempts/{attempt.pk}/submit/", {"unanswered_ok": "1"})  # after the empty-answer warning
    response = owner_client.post(f"/quiz/attempts/{attempt.pk}/1/autosave/", {"text": "late"}, HTTP_HX_REQUEST="true")
    assert "closed" in response.content.decode()
    assert owner_client.get(f"/quiz/attempts/{attempt.pk}/1/")["Location"] == f"/quiz/attempts/{attempt.pk}/results/"
    assert Answer.objects.get(attempt=attempt).text == ""


def test_a_quiz_past_its_time_limit_is_submitted_on_the_next_visit(owner_client, make_question):
    make_question("single")
    attempt = build(owner_client, length=1, time_limit_minutes=10)
    assert "Time left" in owner_client.get(f"/quiz/attempts/{attempt.pk}/1/").content.decode()
    Attempt.objects.filter(pk=attempt.pk).update(deadline=attempt.started_at - timedelta(seconds=1))
    response = owner_client.get(f"/quiz/attempts/{attempt.pk}/1/", follow=True)
    assert "Time is up" in response.content.decode()
    attempt.refresh_from_db()
    assert attempt.state == "graded"


def test_a_curated_quiz_skips_unpublished_questions(owner_client, make_question):
    published, draft = make_question("single"), make_question("single", status="draft")
    quiz = Quiz.objects.create(slug="curated", title="Curated one", time_limit_minutes=15)
    QuizItem.objects.create(quiz=quiz, question=draft, position=0)
    QuizItem.objects.create(quiz=quiz, question=published, position=1)
    assert "Curated one" in owner_client.get("/quiz/quizzes/").content.decode()
    owner_client.post("/quiz/quizzes/curated/start/")
    attempt = Attempt.objects.get()
    assert [a.question for a in attempt.answers.all()] == [published]
    assert attempt.quiz == quiz and attempt.deadline is not None


def test_the_seeded_curated_quizzes_can_be_taken(owner_client, db):
    call_command("load_bank", stdout=io.StringIO())
    quiz = Quiz.objects.first()
    response = owner_client.post(f"/quiz/quizzes/{quiz.slug}/start/")
    assert response.status_code == 302
    assert Attempt.objects.get().answers.count() == quiz.items.count()
