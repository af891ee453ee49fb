"""A mock interview end to end in a real browser, at desktop and phone widths, with the local
OpenAI-compatible stand-in as judge and interviewer and without any LLM; plus the progress page's
charts. Screenshots go to var/screenshots/ (interview-*, progress-over-time-*)."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from quiz.judge import FOLLOW_UP_PROMPT
from quiz.models import Interview, InterviewAnswer, PracticeCard
from tests.conftest import log_in_browser
from tests.fakes.openai_server import SLEEP

pytestmark = pytest.mark.browser

LLM_FOLLOW_UP = "You mentioned the frozen base: how much optimizer memory does that save?"


def make_bank(make_question):
    for i in range(5):
        make_question("open", difficulty="beginner", slug=f"interview-q{i}", title=f"Interview question {i}",
                      topics=["lora"] if i < 3 else ["evaluation"], lab="rank-sweep" if i == 3 else "",
                      follow_ups=[f"Bank follow-up {i}: why that choice?"])


def judge_reply(request):
    system, user = request["messages"][0]["content"], json.loads(request["messages"][1]["content"])
    if system == FOLLOW_UP_PROMPT:
        return {"follow_up": LLM_FOLLOW_UP}
    if "slow judge" in user["learner_answer"]:
        return SLEEP  # this one is not graded until a retry
    return {"points": [{"index": i, "covered": i != 1, "comment": f"judge reason {i}"} for i in range(3)],
            "feedback": "Covers the mechanics, misses the frozen base."}


def answer_and_wait(page, text):
    page.wait_for_load_state("load")  # htmx binds its autosave trigger once the page has loaded
    page.fill("#interview-text", text)
    page.locator("#save-status").get_by_text("Saved").wait_for()  # htmx autosave landed


def current_position(page) -> int:
    return int(page.locator(".interview-progress li.current").inner_text())


@pytest.mark.parametrize("width, with_judge", [(1280, False), (390, False), (1280, True), (390, True)])
def test_a_learner_takes_a_mock_interview_and_reads_the_report(live_server, page, transactional_db, client, owner,
                                                               make_question, fake_openai, settings, screenshot,
                                                               width, with_judge):
    make_bank(make_question)
    if with_judge:
        settings.LLM_API_KEY, settings.LLM_API_BASE_URL, settings.LLM_MODEL = "test-key", fake_openai.base_url, "judge"
        settings.LLM_TIMEOUT_S, settings.JUDGE_RATE_PER_HOUR = 0.5, 60
        fake_openai.responder = judge_reply
    else:
        settings.LLM_API_KEY = ""
    name = f"interview-{'judge' if with_judge else 'self'}"
    log_in_browser(page, client, owner, live_server.url)
    page.set_viewport_size({"width": width, "height": 900})

    # Start from the quizzes page.
    page.goto(f"{live_server.url}/quiz/quizzes/")
    page.click("text=Start a mock interview")
    page.check("input[name=level][value=beginner]")
    page.check("input[name=length][value='5']")
    page.check("input[name=seconds_per_question][value='120']")
    screenshot(page, f"{name}-home")
    page.click("text=Start the interview")
    page.wait_for_url(re.compile(r"/quiz/interviews/\d+/$"))
    interview = Interview.objects.get(user=owner)
    assert current_position(page) == 1
    assert re.fullmatch(r"[12]:\d\d", page.locator(".timer-value").inner_text())

    # An empty answer is refused next to the box.
    page.click("#submit-answer")
    assert page.locator("#answer-error").inner_text().startswith("Your answer is empty")

    # Typed text and the clock survive leaving and coming back; a pause hides the question and stops the clock.
    answer_and_wait(page, "A and B are trained; the base stays frozen.")
    page.goto(f"{live_server.url}/quiz/interviews/{interview.pk}/")
    assert page.locator("#interview-text").input_value() == "A and B are trained; the base stays frozen."
    page.click("#pause")
    page.locator("#paused").wait_for()
    assert page.locator("#interview-form").count() == 0
    stopped = page.locator(".timer-value").inner_text()
    page.reload()
    assert page.locator(".timer-value").inner_text() == stopped
    page.click("#resume")
    page.locator("#interview-form").wait_for()
    screenshot(page, f"{name}-question")

    # The answer brings one follow-up: the LLM interviewer's own (labelled), or the bank's.
    page.click("#submit-answer")
    follow_up = page.locator("#follow-up")
    follow_up.wait_for()
    if with_judge:
        assert "asked by the LLM interviewer" in follow_up.inner_text() and LLM_FOLLOW_UP in follow_up.inner_text()
    else:
        assert "from the question bank" in follow_up.inner_text() and "Bank follow-up" in follow_up.inner_text()
    screenshot(page, f"{name}-follow-up")
    answer_and_wait(page, "Two Adam moments per frozen weight are never allocated.")
    page.click("#submit-answer")

    # Question 2: skipped.
    page.locator(".interview-progress li.current", has_text="2").wait_for()
    page.click("#skip")

    # Question 3: the countdown reaches zero and sends what is typed.
    page.locator(".interview-progress li.current", has_text="3").wait_for()
    answer_and_wait(page, "Out of time, but this much counts." + (" slow judge" if with_judge else ""))
    InterviewAnswer.objects.filter(interview=interview, position=3).update(
        clock_started_at=timezone.now() - timedelta(seconds=118))
    page.reload()
    page.locator(".interview-progress li.current", has_text="4").wait_for(timeout=15_000)
    third = InterviewAnswer.objects.get(interview=interview, position=3)
    assert third.timed_out and third.text.startswith("Out of time") and third.follow_up == ""

    # Questions 4 and 5 (each with its follow-up), then the report.
    for position in (4, 5):
        page.locator(".interview-progress li.current", has_text=str(position)).wait_for()
        answer_and_wait(page, f"My answer to question {position}.")
        page.click("#submit-answer")
        page.locator("#follow-up").wait_for()
        answer_and_wait(page, "A short follow-up answer.")
        page.click("#submit-answer")
    page.wait_for_url(re.compile(rf"/quiz/interviews/{interview.pk}/report/$"))

    assert page.locator("#answer-2 .badge", has_text="skipped").count() == 1
    assert page.locator("#answer-3 .badge", has_text="time ran out").count() == 1
    assert page.locator("#answer-1").get_by_text("What a strong candidate says").count() == 1
    if with_judge:
        # Four answers judged per rubric point with reasons; the slow one is kept, not graded, retried.
        assert page.locator("#answer-1 .rubric-verdict li.missed").inner_text().startswith("✗")
        assert "judge reason 1" in page.locator("#answer-1 .rubric-verdict").inner_text()
        assert "not graded" in page.locator("#answer-3 .score-badge").inner_text()
        assert "did not answer in time" in page.locator("#answer-3").inner_text()
        assert page.locator("#not-graded").inner_text() == "1 not graded"
        screenshot(page, f"{name}-report-pending")
        fake_openai.responder = lambda request: {"points": [{"index": i, "covered": True, "comment": "ok"}
                                                            for i in range(3)], "feedback": "Complete."}
        page.click("#regrade button")
        page.locator(".message.success", has_text="The judge graded 1 answer").wait_for()
        assert page.locator("#answer-3 .score-badge").inner_text() == "100%"
        interview.refresh_from_db()
        assert interview.score == pytest.approx((2 / 3 + 0 + 1 + 2 / 3 + 2 / 3) / 5)
    else:
        # Self-grading: tick rubric points on each answer; the score and topics follow.
        for position in (1, 3, 4, 5):
            form = page.locator(f"#answer-{position} form.self-grade")
            form.locator("input[name=covered]").nth(0).check()
            if position in (1, 3):
                form.locator("input[name=covered]").nth(2).check()
            form.locator("button[type=submit]").click()
            page.locator(f"#answer-{position} .grading-method", has_text="self-assessed").wait_for()
        interview.refresh_from_db()
        assert interview.score == pytest.approx((2 / 3 + 0 + 2 / 3 + 1 / 3 + 1 / 3) / 5)
    assert page.locator("#interview-score").inner_text() == f"{round(100 * interview.score)}%"
    weakest = page.locator("#weakest .weak-topic")
    assert weakest.count() == 2
    assert weakest.nth(0).get_attribute("data-topic") in ("lora", "evaluation")
    assert page.locator("#weakest").get_by_text("Run the lab: rank-sweep").count() >= 1
    # The skipped answer scored 0: its card is due again within minutes.
    skipped = InterviewAnswer.objects.get(interview=interview, position=2)
    assert PracticeCard.objects.get(user=owner, question=skipped.question).due <= timezone.now() + timedelta(minutes=15)
    screenshot(page, f"{name}-report")

    # The report prints without the site's navigation and forms.
    page.emulate_media(media="print")
    assert not page.locator("body > header").is_visible() and not page.locator("#print").is_visible()
    page.emulate_media(media="screen")

    # It can be revisited from the interview page's list.
    page.goto(f"{live_server.url}/quiz/interviews/")
    page.locator("#past-interviews a").first.click()
    page.wait_for_url(re.compile(rf"/quiz/interviews/{interview.pk}/report/$"))


@pytest.mark.parametrize("width", [1280, 390])
def test_the_progress_page_draws_four_charts_with_summaries(live_server, page, transactional_db, client, owner,
                                                            make_question, screenshot, width):
    from fsrs import Rating

    from labs.models import Run
    from quiz.services.cards import card_review

    now = timezone.now()
    for i, topic in enumerate(("lora", "evaluation", "quantization", "data")):
        for days in (18, 9, 2):
            question = make_question("open", topics=[topic], slug=f"p-{topic}-{days}")
            card_review(user=owner, question=question, rating=Rating.Good if i % 2 else Rating.Hard,
                        now=now - timedelta(days=days + i))
    for days, score in ((12, 0.35), (6, 0.55), (1, 0.72)):
        Interview.objects.create(user=owner, level="full", state="finished", score=score, finished_at=now - timedelta(days=days))
    for days in (0, 0, 3, 11):
        run = Run.objects.create(owner=owner, config={}, status="succeeded")
        Run.objects.filter(pk=run.pk).update(created_at=now - timedelta(days=days))
    log_in_browser(page, client, owner, live_server.url)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/quiz/progress/")
    for figure in ("#mastery-over-time", "#due-ahead", "#interview-scores", "#runs-over-time"):
        chart = page.locator(f"{figure} .chart")
        chart.locator("canvas").wait_for()
        assert chart.get_attribute("data-drawn") == "1"
        box = chart.bounding_box()
        assert 200 <= box["width"] <= width  # fits the screen
        assert page.locator(f"{figure} .chart-summary").inner_text().strip()
    assert "the latest 72%" in page.locator("#interview-scores .chart-summary").inner_text()
    assert page.locator("#mastery-over-time .u-legend").inner_text().count("%") >= 0
    screenshot(page, "progress-over-time")
