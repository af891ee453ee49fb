"""Progress over time: mastery per topic from card reviews, cards due ahead, interview scores, lab runs."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from fsrs import Rating

from labs.models import Run
from quiz.models import Interview, PracticeCard
from quiz.services.cards import card_review
from quiz.services.progress import (
    HORIZON_DAYS,
    MAX_TOPIC_LINES,
    WINDOW_DAYS,
    cards_due_ahead,
    interview_scores,
    lab_runs_over_time,
    topic_mastery_over_time,
)
from quiz.vocab import TOPICS


def test_mastery_starts_at_the_first_review_rises_with_good_grades_and_falls_with_time(owner, make_question):
    now = timezone.now()
    lora = [make_question("open", topics=["lora"]) for _ in range(2)]
    evaluation = make_question("open", topics=["evaluation"])
    card_review(user=owner, question=lora[0], rating=Rating.Good, now=now - timedelta(days=20))
    card_review(user=owner, question=lora[1], rating=Rating.Again, now=now - timedelta(days=10))
    card_review(user=owner, question=evaluation, rating=Rating.Easy, now=now - timedelta(days=2))

    data = topic_mastery_over_time(user=owner, now=now)
    assert len(data["x"]) == WINDOW_DAYS and data["x"] == sorted(data["x"])
    lines = {s["label"]: s["values"] for s in data["series"]}
    assert list(lines) == ["LoRA", "Evaluation"]  # the topic with more practised questions first
    lora_line = lines["LoRA"]
    assert all(v is None for v in lora_line[:WINDOW_DAYS - 21])  # nothing practised before day -20
    first = lora_line[WINDOW_DAYS - 21]
    assert first is not None and first > 0.9  # the evening of a Good review: recall predicted high
    before_second = lora_line[WINDOW_DAYS - 12]
    assert before_second < first  # forgetting, with no practice in between
    # The Again on the second question (10 days ago, never practised since) pulls the topic down.
    assert lora_line[-1] < before_second
    assert all(v is None for v in lines["Evaluation"][:WINDOW_DAYS - 3]) and lines["Evaluation"][-1] > 0.9
    assert data["summary"][0].startswith(f"LoRA: {round(100 * lora_line[-1])}% today over 2 practised questions, ")


def test_mastery_draws_at_most_six_topics_and_says_how_many_more(owner, make_question):
    for topic in TOPICS[:MAX_TOPIC_LINES + 2]:
        card_review(user=owner, question=make_question("open", topics=[topic]), rating=Rating.Good)
    data = topic_mastery_over_time(user=owner)
    assert len(data["series"]) == MAX_TOPIC_LINES
    assert data["summary"][-1] == "2 more topics in the table below."


def test_a_learner_with_no_reviews_gets_an_empty_mastery_chart(owner, make_question):
    make_question("open")
    data = topic_mastery_over_time(user=owner)
    assert data["series"] == [] and data["summary"] == []


def test_cards_due_ahead_counts_overdue_today_and_stops_at_the_horizon(owner, make_question):
    now = timezone.now()
    for days in (-3, 0, 4, 4, HORIZON_DAYS + 2):
        question = make_question("open")
        PracticeCard.objects.create(user=owner, question=question, data={}, due=now + timedelta(days=days), state=2)
    hidden = make_question("open", status="draft")  # not published: not the learner's to practise
    PracticeCard.objects.create(user=owner, question=hidden, data={}, due=now, state=2)
    data = cards_due_ahead(user=owner, now=now)
    assert len(data["values"]) == HORIZON_DAYS
    assert data["values"][0] == 2 and data["values"][4] == 2 and sum(data["values"]) == 4
    assert data["summary"][0].startswith(f"4 cards due in the next {HORIZON_DAYS} days, 2 of them today")
    assert "Busiest day: today with 2." in data["summary"][0]  # a tie goes to the nearer day


def test_interview_scores_come_in_order_with_first_latest_and_best(owner, other_user):
    now = timezone.now()
    for days, score in ((5, 0.4), (1, 0.64), (3, 0.8)):
        Interview.objects.create(user=owner, level="full", state="finished", score=score, finished_at=now - timedelta(days=days))
    Interview.objects.create(user=owner, level="beginner")  # still open: not plotted
    Interview.objects.create(user=other_user, level="full", state="finished", score=1.0, finished_at=now)
    data = interview_scores(user=owner)
    assert data["values"] == [0.4, 0.8, 0.64] and data["x"] == sorted(data["x"])
    assert data["summary"] == ["3 mock interviews: the first scored 40%, the latest 64%, the best 80%."]


def test_lab_runs_are_counted_per_day_with_their_outcomes(owner, other_user):
    now = timezone.now()
    for days, status in ((0, "succeeded"), (0, "failed"), (6, "succeeded"), (WINDOW_DAYS + 5, "succeeded")):
        run = Run.objects.create(owner=owner, config={}, status=status)
        Run.objects.filter(pk=run.pk).update(created_at=now - timedelta(days=days))
    Run.objects.create(owner=other_user, config={}, status="succeeded")
    data = lab_runs_over_time(user=owner, now=now)
    assert data["values"][-1] == 2 and data["values"][-7] == 1 and sum(data["values"]) == 3
    assert data["summary"] == [f"3 lab runs launched in the last {WINDOW_DAYS} days (2 succeeded, 1 failed)."]


def test_the_progress_page_shows_each_chart_with_its_summary(owner_client, owner, make_question):
    card_review(user=owner, question=make_question("open", topics=["lora"]), rating=Rating.Good)
    response = owner_client.get(reverse("quiz:progress"))
    assert response.status_code == 200
    body = response.content.decode()
    for element in ('id="mastery-data"', 'id="due-data"', 'id="interview-data"', 'id="runs-data"',
                    'data-progress-chart="lines"', "LoRA: 100% today over 1 practised question.",
                    "No graded mock interview yet.", f"No lab run launched in the last {WINDOW_DAYS} days.",
                    "uplot-1.6.32.iife.min.js", "js/progress-charts.js"):
        assert element in body, element


@pytest.mark.parametrize("name", ["quiz:progress"])
def test_the_progress_page_needs_a_login(client, name):
    assert client.get(reverse(name)).status_code == 302
