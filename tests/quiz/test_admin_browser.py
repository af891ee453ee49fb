"""Curators in the real admin: the preview follows their typing, a save without edits records
no change (browsers send textareas with CRLF line ends)."""

import pytest

from quiz.models import QuestionRevision
from tests.conftest import log_in_browser

pytestmark = pytest.mark.browser


def test_the_preview_updates_as_the_curator_types_and_crlf_is_stored_as_lf(live_server, page, transactional_db,
                                                                           client, staff_user, make_question,
                                                                           screenshot):
    question = make_question("single", prompt="Line one.\n\nLine **two**.", hint="First.\nSecond.",
                             answer="A\n\nB")
    choice = question.choices.first()
    choice.explanation = "Because\nof two lines."
    choice.save()
    log_in_browser(page, client, staff_user, live_server.url)
    page.goto(f"{live_server.url}/admin/quiz/question/{question.pk}/change/")
    preview = page.locator("#quiz-preview")
    assert "two" in preview.locator("strong").first.inner_text()

    # Live: typing re-renders through the site's renderer, sanitizer included, without saving.
    page.fill("#id_prompt", "Which **rank** wins?<script>window.pwned = 1</script>")
    page.wait_for_function("document.getElementById('quiz-preview').innerText.includes('Which rank wins?')")
    assert preview.locator("strong").first.inner_text() == "rank"
    assert page.evaluate("window.pwned === undefined")
    assert preview.locator("script").count() == 0
    screenshot(page, "admin-question")
    page.fill("#id_prompt", "Line one.\n\nLine **two**.")  # back to the stored text

    before = QuestionRevision.objects.filter(question=question).count()
    page.click("input[name=_continue]")
    page.wait_for_url(f"{live_server.url}/admin/quiz/question/{question.pk}/change/")
    question.refresh_from_db()
    assert "\r" not in question.prompt + question.hint + question.answer
    assert "\r" not in question.choices.get(pk=choice.pk).explanation
    assert QuestionRevision.objects.filter(question=question).count() == before  # nothing changed, nothing recorded


def test_a_learner_cannot_use_the_preview_endpoint(client, owner):
    client.force_login(owner)
    response = client.post("/admin/quiz/question/preview/", {"prompt": "x"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
