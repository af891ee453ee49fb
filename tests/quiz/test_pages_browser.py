"""Quiz pages in a real browser at desktop and phone widths: the filter bar, kind labels,
shuffled choices, wording. Every test saves screenshots into var/screenshots/."""

import itertools
import re

import pytest

from tests.conftest import boxes_overlap, log_in_browser

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", [1280, 390])
def test_the_filter_bar_is_readable_without_overlaps(live_server, page, transactional_db, client, owner,
                                                     make_question, width, screenshot):
    for kind in ("single", "multi", "open", "numeric"):
        make_question(kind)
    log_in_browser(page, client, owner, live_server.url)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/quiz/?kind=single&difficulty=intermediate&topic=lora")
    controls = page.locator("#question-filters select, #question-filters input[type=search], #filter-submit")
    assert controls.count() == 7  # search, button, topic, difficulty, kind, lab, practice
    boxes = [controls.nth(i).bounding_box() for i in range(controls.count())]
    for a, b in itertools.combinations(boxes, 2):
        assert not boxes_overlap(a, b), (a, b)
    for select in page.locator("#question-filters select").all():
        # Wide enough to read the current choice ("Multiple choice", "Any practice status").
        assert select.bounding_box()["width"] >= 150
        assert select.evaluate("s => s.scrollWidth <= s.clientWidth + 1")
    button = page.locator("#filter-submit").bounding_box()
    assert button["height"] < 70 and button["width"] < 200  # a button, not a blob
    assert page.locator("#id_kind").input_value() == "single"

    # The counts by kind read as people say them, not as the database stores them.
    page.click("text=Counts by topic, difficulty and kind")
    chips = page.locator("#kind-counts").inner_text()
    assert "Single choice (1)" in chips and "Multiple choice (1)" in chips and "Open answer (1)" in chips
    assert not re.search(r"\b(multi|open|single) \(", chips)
    screenshot(page, "quiz-questions")


def _choice_texts(page) -> list[str]:
    return [label.inner_text().strip() for label in page.locator("#answer-form fieldset label").all()]


def test_choices_are_shuffled_per_attempt_stable_on_reload_and_graded_by_id(live_server, page, transactional_db,
                                                                             client, owner, make_question, screenshot):
    from quiz.services import attempt_start

    question = make_question("single", choices=[("right", True), ("wrong a", False), ("wrong b", False),
                                                ("wrong c", False)])
    log_in_browser(page, client, owner, live_server.url)
    orders = []
    for _ in range(6):
        attempt = attempt_start(user=owner, questions=[question], title="One question")
        page.goto(f"{live_server.url}/quiz/attempts/{attempt.pk}/1/")
        order = _choice_texts(page)
        page.reload()
        assert _choice_texts(page) == order  # seeded by attempt and question: stable on reload
        orders.append(order)
    assert sorted(orders[0]) == ["right", "wrong a", "wrong b", "wrong c"]
    assert len({order.index("right") for order in orders}) > 1  # the right answer is not always A
    assert "Pick one" in page.locator("#answer-form legend").inner_text()  # here there is something to pick
    screenshot(page, "quiz-attempt-question")

    # The learner picks by text, wherever it landed: graded by choice id, so it is right.
    page.get_by_label("right", exact=True).check()
    page.locator("#save-status").get_by_text("Saved").wait_for()
    page.click("#submit-quiz")
    page.wait_for_url(re.compile(rf"/quiz/attempts/{attempt.pk}/results/$"))
    assert page.locator("#score").inner_text() == "100%"
    assert page.locator(".grading-method").inner_text() == "graded automatically"
    screenshot(page, "quiz-results")


def test_a_wrong_pick_says_where_the_explanations_are(live_server, page, transactional_db, client, owner,
                                                       make_question):
    from quiz.services import attempt_start

    question = make_question("single")
    attempt = attempt_start(user=owner, questions=[question], title="One question")
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/quiz/attempts/{attempt.pk}/1/")
    page.get_by_label("wrong", exact=True).check()
    page.locator("#save-status").get_by_text("Saved").wait_for()
    page.click("#submit-quiz")
    feedback = page.locator(".feedback")
    feedback.wait_for()
    # The explanations are printed above the feedback, under each choice: never "see below".
    assert "below" not in feedback.inner_text()
    assert page.locator(".choices.revealed small").first.bounding_box()["y"] < feedback.bounding_box()["y"]


def test_the_question_page_does_not_ask_to_pick_when_nothing_can_be_picked(live_server, page, transactional_db,
                                                                          make_question, screenshot):
    question = make_question("single")
    page.goto(f"{live_server.url}{question.get_absolute_url()}")
    assert page.locator("input[type=radio]").count() == 0
    assert "Pick one" not in page.locator("main").inner_text()
    assert page.locator(".choice-note").inner_text() == "Exactly one of these is right."
    screenshot(page, "quiz-question")


def test_the_quiz_builder_mixes_the_ticked_kinds(live_server, page, transactional_db, client, owner, make_question,
                                                screenshot):
    for _ in range(8):
        make_question("open")
    for kind in ("single", "multi", "numeric"):
        make_question(kind)
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/quiz/quizzes/")
    screenshot(page, "quiz-builder")
    for value in ("open", "single", "multi", "numeric"):
        page.check(f"input[name=kinds][value={value}]")
    page.fill("input[name=length]", "5")
    page.click("text=Start quiz")
    page.wait_for_url(re.compile(r"/quiz/attempts/\d+/1/$"))
    from quiz.models import Attempt

    kinds = [a.question.kind for a in Attempt.objects.get(user=owner).answers.select_related("question")]
    assert len(kinds) == 5
    assert set(kinds) == {"open", "single", "multi", "numeric"}  # each ticked kind, the fifth from any
