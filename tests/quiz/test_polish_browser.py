"""What a first visit trips over on the quiz pages (issue 25), in a real browser at desktop and
phone widths: boxes are measured, not eyeballed."""

import re

import pytest

from quiz.models import Answer, PracticeCard
from quiz.services.attempts import answer_save, attempt_grade, attempt_start
from tests.conftest import boxes_overlap, log_in_browser

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)


def test_the_lab_link_and_the_practice_rating_do_not_overlap(live_server, page, transactional_db, client, owner,
                                                            make_question, screenshot):
    question = make_question("numeric", lab="sentiment-lora", unit="x", numeric_answer=4.0)
    attempt = attempt_start(user=owner, questions=[question], title="Quiz: LoRA")
    answer_save(answer=attempt.answers.get(), text="4")
    attempt_grade(attempt=attempt)
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/quiz/attempts/{attempt.pk}/results/")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        link = page.locator("#answer-1 footer a").filter(has_text="Try it in the lab").bounding_box()
        rating = page.locator("#answer-1 footer .rating small").bounding_box()
        assert not boxes_overlap(link, rating), (width, link, rating)
    page.locator("#answer-1 details summary").click()
    assert "4×" in page.locator("#answer-1 details").inner_text()  # a ratio, not "4 x"
    card = page.locator("#answer-1").inner_text()
    assert "Correct: 4×." in card and "Answer with a number (how many times, e.g. 4 for 4×)." in card
    assert "(x)" not in card and "4 x" not in card
    screenshot(page, "polish-quiz-results")


def test_question_number_boxes_sit_inside_the_card(live_server, page, transactional_db, client, owner, make_question):
    questions = [make_question("numeric", unit="x") for _ in range(3)]
    attempt = attempt_start(user=owner, questions=questions, title="Quiz: LoRA")
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/quiz/attempts/{attempt.pk}/1/")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        card = page.locator("main article").first.bounding_box()
        first = page.locator(".attempt-steps .step").first.bounding_box()
        assert first["x"] >= card["x"] - 1, (width, first, card)
    assert page.locator("label[for=answer-number]").inner_text() == "Your answer (how many times, e.g. 4 for 4×)"
    assert "Answer with a number" not in page.locator("main").inner_text()  # said once, at the field


def test_a_partly_answered_quiz_warns_before_it_is_submitted(live_server, page, transactional_db, client, owner,
                                                             make_question, screenshot):
    questions = [make_question("numeric") for _ in range(4)]
    attempt = attempt_start(user=owner, questions=questions, title="Quiz: LoRA")
    answer_save(answer=attempt.answers.get(position=1), text="64")
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/quiz/attempts/{attempt.pk}/4/")
    page.click("#submit-quiz")  # the last question's "Submit quiz", with 3 of 4 empty
    page.wait_for_url(re.compile(rf"/quiz/attempts/{attempt.pk}/$"))
    warning = page.locator("#unanswered-warning")
    assert "3 of 4 questions are not answered" in warning.inner_text()
    attempt.refresh_from_db()
    assert attempt.is_open  # nothing was submitted yet
    screenshot(page, "polish-quiz-unanswered")
    page.click("#submit-quiz")  # the overview's button, under the warning: submit anyway
    page.wait_for_url(re.compile(rf"/quiz/attempts/{attempt.pk}/results/$"))
    # Unanswered questions are not failures to drill: no practice card for them.
    assert PracticeCard.objects.filter(user=owner).count() == 1
    assert Answer.objects.filter(attempt=attempt, score=0, review__isnull=True).count() == 3
    assert page.locator(".result.unanswered").count() == 3


@pytest.mark.django_db
def test_a_submit_that_skipped_the_warning_is_not_graded(owner_client, owner, make_question):
    questions = [make_question("single") for _ in range(2)]
    attempt = attempt_start(user=owner, questions=questions, title="Quiz")
    response = owner_client.post(f"/quiz/attempts/{attempt.pk}/submit/")
    assert response["Location"] == f"/quiz/attempts/{attempt.pk}/"
    attempt.refresh_from_db()
    assert attempt.is_open
    overview = owner_client.get(f"/quiz/attempts/{attempt.pk}/").content.decode()
    assert "2 of 2 questions are not answered" in overview and 'name="unanswered_ok" value="2"' in overview


def test_question_filters_apply_when_chosen_and_leave_the_first_phone_screen_to_results(
        live_server, page, transactional_db, owner, make_question, screenshot):
    make_question("single", difficulty="advanced", title="An advanced one")
    make_question("open", difficulty="intermediate", title="An intermediate one")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/quiz/")
    count = page.locator("#result-count").bounding_box()
    assert count["y"] + count["height"] <= 844  # the results start in the first screen
    assert not page.locator("#id_difficulty").is_visible()  # folded on a phone
    screenshot(page, "polish-question-filters")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/quiz/")
    assert page.locator("#id_difficulty").is_visible()  # open on a laptop
    page.select_option("#id_difficulty", "advanced")  # no Search click
    page.wait_for_url(re.compile(r"difficulty=advanced"))
    assert page.locator(".question-list").inner_text().strip().startswith("An advanced one")
    assert "An intermediate one" not in page.locator(".question-list").inner_text()
