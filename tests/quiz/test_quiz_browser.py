"""A learner takes a short quiz end to end in a real browser."""

import re

import pytest

from quiz.models import Answer, Attempt, PracticeCard
from tests.conftest import PASSWORD


@pytest.mark.browser
def test_a_learner_builds_takes_and_submits_a_five_question_quiz(live_server, page, transactional_db, owner,
                                                                  make_question, settings):
    settings.LLM_API_KEY = ""  # open answers are self-assessed
    for kind in ("single", "multi", "numeric", "open", "open"):
        make_question(kind)

    page.goto(f"{live_server.url}/accounts/login/?next=/quiz/quizzes/")
    page.fill("input[name=username]", owner.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/quiz/quizzes/")
    page.fill("input[name=length]", "5")
    page.click("text=Start quiz")
    page.wait_for_url(re.compile(r"/quiz/attempts/\d+/1/$"))
    attempt = Attempt.objects.get(user=owner)

    for n in range(1, 6):
        page.wait_for_url(re.compile(rf"/quiz/attempts/\d+/{n}/$"))
        if page.locator("textarea[name=text]").count():
            page.fill("textarea[name=text]", "A and B are trained, the base stays frozen.")
        elif page.locator("input[name=text]").count():
            page.fill("input[name=text]", "1,000")  # wrong (64 is right): rated Again, due again in minutes
        else:  # choices are shuffled per attempt: pick the right ones by their text
            boxes = page.locator("input[name=choice]")
            if boxes.nth(0).get_attribute("type") == "checkbox":
                page.get_by_label("right 1", exact=True).check()
                page.get_by_label("right 2", exact=True).check()
            else:
                page.get_by_label("right", exact=True).check()
        # htmx autosaves on change: the status line confirms it before we move on.
        page.locator("#save-status").get_by_text("Saved").wait_for()
        assert Answer.objects.get(attempt=attempt, position=n).is_answered
        page.click("button[value=submit]" if n == 5 else "button[value=next]")

    page.wait_for_url(re.compile(rf"/quiz/attempts/{attempt.pk}/results/$"))
    assert "2 waiting for your self-assessment" in page.content()
    # The right choices are rated Easy (days away); the wrong number is due again today.
    assert page.locator("#due-tomorrow").inner_text().startswith("1 card due by the end of tomorrow")

    for form in range(2):  # two of three rubric points each: rated Hard; htmx swaps the answer and the score
        pending = page.locator("form.self-assess").filter(has_text="Grade my answer").first
        pending.locator("input[name=covered]").nth(0).check()
        pending.locator("input[name=covered]").nth(2).check()
        pending.locator("button[type=submit]").click()
        page.locator("form.self-assess").filter(has_text="Update my self-assessment").nth(form).wait_for()

    page.get_by_text("of 5 graded questions").wait_for()
    attempt.refresh_from_db()
    assert attempt.state == "graded"
    assert attempt.score == pytest.approx((1 + 1 + 0 + 2 / 3 + 2 / 3) / 5)
    assert page.locator("#score").inner_text() == "67%"
    assert PracticeCard.objects.filter(user=owner).count() == 5
    assert page.locator("#due-tomorrow").inner_text().startswith("3 cards due by the end of tomorrow")
    page.click("text=Practise due cards")
    page.wait_for_url(f"{live_server.url}/quiz/practice/")
    assert page.locator("h1").inner_text() == "Practice"
