import pytest
from fsrs import Rating

from quiz.grading import NotANumber, grade_choices, grade_numeric, parse_number, rating_for_score
from quiz.models import Answer, Attempt, PracticeCard
from quiz.services import answer_save, answer_self_assess, attempt_grade, attempt_start


@pytest.mark.parametrize(("typed", "value"), [
    ("64", 64.0), (" 64 ", 64.0), ("64.0", 64.0), ("-0.5", -0.5), (".25", 0.25), ("1,234", 1234.0),
    ("1,234,567.5", 1234567.5), ("1e3", 1000.0), ("2.5E-4", 0.00025), ("\u22123", -3.0),
])
def test_numbers_are_parsed_the_way_people_type_them(typed, value):
    assert parse_number(typed) == pytest.approx(value)


@pytest.mark.parametrize(("typed", "message"), [
    ("sixty-four", "is not a number"), ("64 GB", "is not a number"), ("1,5", "use a dot for decimals"),
    ("12,34", "use a dot for decimals"), ("", "No answer given"), ("nan", "is not a number"), ("1e999", "too large"),
])
def test_non_numbers_get_a_clear_message(typed, message):
    with pytest.raises(NotANumber, match=message):
        parse_number(typed)


def test_numeric_answers_within_the_tolerance_get_full_marks():
    assert grade_numeric("64", 64.0, 0.0).score == 1.0
    assert grade_numeric("0.3", 0.1 + 0.2, 0.0).score == 1.0  # float rounding is not a wrong answer
    assert grade_numeric("1.11", 1.0986, 0.01).score == 0.0
    assert grade_numeric("1.10", 1.0986, 0.01).score == 1.0
    assert grade_numeric("4", 4.0, 0.0, unit="x").feedback == "Correct: 4×."  # a ratio, not "4 x"
    assert grade_numeric("3", 4.0, 0.0, unit="GB").feedback == "You answered 3; the answer is 4 GB."
    wrong = grade_numeric("65", 64.0, 0.5, "examples")
    assert wrong.score == 0.0 and "the answer is 64 examples" in wrong.feedback
    assert "is not a number" in grade_numeric("lots", 64.0, 0.0).feedback


def test_single_choice_is_all_or_nothing():
    assert grade_choices("single", {1}, {1, 2, 3}, [1]).score == 1.0
    assert grade_choices("single", {1}, {1, 2, 3}, [2]).score == 0.0
    assert grade_choices("single", {1}, {1, 2, 3}, [1, 2]).score == 0.0  # a tampered form with two picks
    assert grade_choices("single", {1}, {1, 2, 3}, []).feedback == "No answer given."


def test_multi_choice_gives_partial_credit_for_right_minus_wrong_floored_at_zero():
    correct, everything = {1, 2, 3}, {1, 2, 3, 4, 5}
    assert grade_choices("multi", correct, everything, [1, 2, 3]).score == 1.0
    assert grade_choices("multi", correct, everything, [1, 2]).score == pytest.approx(2 / 3)
    assert grade_choices("multi", correct, everything, [1, 2, 4]).score == pytest.approx(1 / 3)
    assert grade_choices("multi", correct, everything, [1, 4, 5]).score == 0.0
    assert grade_choices("multi", correct, everything, [1, 2, 3, 4]).score == pytest.approx(2 / 3)
    assert grade_choices("multi", correct, everything, [1, 99]).score == pytest.approx(1 / 3)  # unknown ids ignored


@pytest.mark.parametrize(("score", "rating"), [
    (0.0, Rating.Again), (0.49, Rating.Again), (0.5, Rating.Hard), (0.74, Rating.Hard), (0.75, Rating.Good),
    (0.99, Rating.Good), (1.0, Rating.Easy),
])
def test_the_grade_sets_the_fsrs_rating(score, rating):
    assert rating_for_score(score) == rating


def test_a_quiz_with_every_kind_is_graded_and_updates_the_cards(owner, make_question, settings):
    settings.LLM_API_KEY = ""  # no judge: open answers go to self-assessment
    single, multi = make_question("single"), make_question("multi")
    numeric, open_q, blank = make_question("numeric"), make_question("open"), make_question("open")
    attempt = attempt_start(user=owner, questions=[single, multi, numeric, open_q, blank], title="Everything")
    answers = {a.question_id: a for a in attempt.answers.all()}
    right = single.choices.get(correct=True)
    answer_save(answer=answers[single.id], selected=[right.id])
    answer_save(answer=answers[multi.id], selected=[c.id for c in multi.choices.all()[:3]])  # 2 right, 1 wrong
    assert "not a number" in answer_save(answer=answers[numeric.id], text="about 60")
    answer_save(answer=answers[numeric.id], text="6.4e1")
    answer_save(answer=answers[open_q.id], text="A and B, scaled by alpha over r.")

    attempt_grade(attempt=attempt)
    attempt.refresh_from_db()
    graded = {a.question_id: a for a in attempt.answers.all()}
    assert graded[single.id].score == 1.0
    assert graded[multi.id].score == pytest.approx(0.5)
    assert graded[numeric.id].score == 1.0
    assert graded[blank.id].score == 0.0 and graded[blank.id].feedback == "No answer given."
    assert graded[open_q.id].method == Answer.Method.SELF_PENDING and graded[open_q.id].score is None
    assert attempt.state == Attempt.State.SUBMITTED
    assert attempt.score == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert PracticeCard.objects.filter(user=owner).count() == 3  # not the blank one: nothing to drill (issue 25)

    answer_self_assess(answer=graded[open_q.id], covered=["0", "2", "7", "x"])  # out of range and junk are ignored
    attempt.refresh_from_db()
    graded_open = Answer.objects.get(pk=graded[open_q.id].pk)
    assert graded_open.score == pytest.approx(2 / 3) and graded_open.method == Answer.Method.SELF
    assert [p["covered"] for p in graded_open.points] == [True, False, True]
    assert attempt.state == Attempt.State.GRADED
    assert attempt.score == pytest.approx((1 + 0.5 + 1 + 0 + 2 / 3) / 5)
    assert PracticeCard.objects.get(user=owner, question=open_q).reviews.get().rating == Rating.Hard


def test_grading_twice_changes_nothing(owner, make_question):
    question = make_question("single")
    attempt = attempt_start(user=owner, questions=[question], title="Once")
    answer_save(answer=attempt.answers.get(), selected=[question.choices.first().id])  # an empty one makes no card
    attempt_grade(attempt=attempt)
    attempt_grade(attempt=Attempt.objects.get(pk=attempt.pk))
    assert PracticeCard.objects.get(user=owner).reviews.count() == 1
