"""Quiz attempts: start, save answers, submit and grade (LLM judge or self-assessment)."""

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from quiz import judge
from quiz.grading import NotANumber, grade_choices, grade_numeric, parse_number, rating_for_score
from quiz.models import Answer, Attempt, JudgeCall, Question, Quiz, Review
from quiz.services.cards import card_override, card_review
from quiz.vocab import Kind, topic_label

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 10_000
MAX_QUIZ_LENGTH = 30


class AttemptClosed(Exception):
    """The attempt was submitted or ran out of time: answers can no longer change."""


@transaction.atomic
def attempt_start(*, user, questions: list[Question], title: str, quiz: Quiz | None = None,
                  time_limit_minutes: int | None = None, options: dict | None = None) -> Attempt:
    if not questions:
        raise ValueError("a quiz needs at least one question")
    now = timezone.now()
    attempt = Attempt.objects.create(
        user=user, quiz=quiz, title=title, options=options or {}, time_limit_minutes=time_limit_minutes,
        started_at=now, deadline=now + timedelta(minutes=time_limit_minutes) if time_limit_minutes else None)
    Answer.objects.bulk_create(Answer(attempt=attempt, question=q, position=i) for i, q in enumerate(questions, 1))
    return attempt


def attempt_build(*, user, topics: list[str], difficulties: list[str], kinds: list[str], length: int,
                  time_limit_minutes: int | None = None) -> Attempt:
    """A quiz built from filters: a random pick of published questions (empty filter = any)."""
    questions = Question.objects.published()
    if topics:
        topic_q = Q()
        for topic in topics:
            topic_q |= Q(topics__icontains=f'"{topic}"')
        questions = questions.filter(topic_q)
    if difficulties:
        questions = questions.filter(difficulty__in=difficulties)
    if kinds:
        questions = questions.filter(kind__in=kinds)
    picked = _mixed_pick(questions, max(1, min(length, MAX_QUIZ_LENGTH)))
    if not picked:
        raise ValueError("No published question matches these filters.")
    title = "Quiz: " + (", ".join(topic_label(t) for t in topics) if topics else "all topics")
    options = {"topics": topics, "difficulties": difficulties, "kinds": kinds, "length": length}
    return attempt_start(user=user, questions=picked, title=title, time_limit_minutes=time_limit_minutes, options=options)


def _mixed_pick(questions, length: int) -> list[Question]:
    """`length` random questions spread evenly over the kinds present (round-robin), then shuffled.

    A plain random pick mirrors the bank, which is mostly open questions: ticking all four kinds
    gave four open questions and one single. Kinds with too few questions leave their share to the others.
    """
    by_kind: dict[str, list[int]] = {}
    for pk, kind in questions.values_list("id", "kind"):
        by_kind.setdefault(kind, []).append(pk)
    pools = [random.sample(ids, len(ids)) for ids in by_kind.values()]
    random.shuffle(pools)
    ids: list[int] = []
    while len(ids) < length and any(pools):
        for pool in pools:
            if pool and len(ids) < length:
                ids.append(pool.pop())
    random.shuffle(ids)
    found = Question.objects.in_bulk(ids)
    return [found[pk] for pk in ids]


def attempt_start_curated(*, user, quiz: Quiz) -> Attempt:
    questions = quiz.published_questions()
    if not questions:
        raise ValueError("This quiz has no published question yet.")
    return attempt_start(user=user, questions=questions, title=quiz.title, quiz=quiz,
                         time_limit_minutes=quiz.time_limit_minutes)


def answer_save(*, answer: Answer, text: str | None = None, selected: list | None = None) -> str:
    """Save what the learner typed or ticked; returns a warning to show (e.g. not a number), or ''."""
    attempt = answer.attempt
    if not attempt.is_open or attempt.is_expired():
        raise AttemptClosed("This quiz is closed: it was submitted or its time ran out.")
    question = answer.question
    warning = ""
    if question.is_choice:
        valid = set(question.choices.values_list("id", flat=True))
        picked = []
        for raw in selected or []:
            try:
                value = int(raw)
            except (TypeError, ValueError):
                continue
            if value in valid and value not in picked:
                picked.append(value)
        answer.selected = picked[:1] if question.kind == Kind.SINGLE else sorted(picked)
    else:
        answer.text = (text or "")[:MAX_ANSWER_CHARS]
        if question.kind == Kind.NUMERIC and answer.text.strip():
            try:
                parse_number(answer.text)
            except NotANumber as exc:
                warning = f"{exc} It scores 0 unless you fix it."
    answer.saved_at = timezone.now()
    answer.save(update_fields=["text", "selected", "saved_at"])
    return warning


@dataclass
class _JudgeJob:
    answer: Answer
    kwargs: dict
    result: judge.JudgeResult | None = None


def attempt_grade(*, attempt: Attempt) -> Attempt:
    """Submit and grade: choices and numbers automatically, open answers by the LLM judge when one
    is configured (within the user's hourly quota), otherwise by the learner's self-assessment.

    Judge calls run before the write transaction: SQLite's write lock is never held across HTTP.
    """
    if not attempt.is_open:
        return attempt
    answers = list(attempt.answers.select_related("question").prefetch_related("question__choices"))
    open_answers = [a for a in answers if a.question.kind == Kind.OPEN and a.text.strip()]
    jobs, fallback_note = [], {}
    if open_answers and judge.judge_configured():
        reservation = judge.judge_reserve(user=attempt.user, wanted=len(open_answers))  # before any call
        for answer in open_answers:
            if len(jobs) < reservation.granted:
                question = answer.question
                jobs.append(_JudgeJob(answer, {"question": f"{question.title}\n\n{question.prompt}", "rubric": question.rubric,
                                               "model_answer": question.answer, "learner_answer": answer.text}))
            else:
                fallback_note[answer.pk] = reservation.refusal
        try:
            _run_judge_jobs(jobs)
        finally:
            judge.judge_settle(reservation, used=sum(job.result is not None for job in jobs))
    else:
        for answer in open_answers:
            fallback_note[answer.pk] = "Compare with the model answer and tick the rubric points you covered."
    return _attempt_record_grades(attempt=attempt, answers=answers, jobs=jobs, fallback_note=fallback_note)


def _run_judge_jobs(jobs: list[_JudgeJob]) -> None:
    if not jobs:
        return
    # The calls are independent and I/O-bound: run them side by side so a quiz does not wait N timeouts.
    with ThreadPoolExecutor(max_workers=min(4, len(jobs))) as pool:
        for job, result in zip(jobs, pool.map(lambda j: judge.judge_answer(**j.kwargs), jobs), strict=True):
            job.result = result


_FALLBACK_REASON = {
    "timeout": "The judge did not answer in time",
    "api_error": "The judge is unavailable right now",
    "malformed": "The judge's reply could not be read",
}


@transaction.atomic
def _attempt_record_grades(*, attempt: Attempt, answers: list[Answer], jobs: list[_JudgeJob], fallback_note: dict) -> Attempt:
    attempt = Attempt.objects.select_for_update().get(pk=attempt.pk)
    if not attempt.is_open:  # a concurrent submit won the race
        return attempt
    now = timezone.now()
    for job in jobs:
        result = job.result
        JudgeCall.objects.create(user=attempt.user, answer=job.answer, outcome=result.outcome, model=result.model,
                                 prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                 latency_ms=result.latency_ms, detail=result.detail)
        if result.verdict is None:
            log.warning("judge fell back to self-grading for answer %s: %s %s", job.answer.pk, result.outcome, result.detail)
            fallback_note[job.answer.pk] = (f"{_FALLBACK_REASON.get(result.outcome, 'The judge failed')}: "
                                            "compare with the model answer and tick the rubric points you covered.")
    verdicts = {job.answer.pk: job.result.verdict for job in jobs if job.result.verdict is not None}
    for answer in answers:
        _grade_one(answer, verdicts.get(answer.pk), fallback_note.get(answer.pk, ""), now)
        # An empty answer scores 0 in the quiz but is no mistake to drill: it makes no practice card
        # (8 questions left empty had put 13 cards "due now" on the home page).
        if answer.score is not None and answer.is_answered:
            card_review(user=attempt.user, question=answer.question, rating=rating_for_score(answer.score),
                        answer=answer, score=answer.score, now=now)
    attempt.submitted_at = now
    _attempt_refresh(attempt, answers)
    return attempt


NOT_ANSWERED = "No answer given."


def _grade_one(answer: Answer, verdict: judge.Verdict | None, note: str, now: datetime) -> None:
    question = answer.question
    answer.graded_at = now
    if not answer.is_answered:
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, 0.0, NOT_ANSWERED
    elif question.is_choice:
        choices = list(question.choices.all())
        grade = grade_choices(question.kind, {c.id for c in choices if c.correct}, {c.id for c in choices}, answer.selected)
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, grade.score, grade.feedback
    elif question.kind == Kind.NUMERIC:
        grade = grade_numeric(answer.text, question.numeric_answer, question.tolerance or 0.0, question.unit)
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, grade.score, grade.feedback
    elif verdict is not None:
        answer.method, answer.score, answer.feedback = Answer.Method.JUDGE, verdict.score, verdict.feedback
        answer.points = verdict.points
    else:
        answer.method, answer.score, answer.note = Answer.Method.SELF_PENDING, None, note[:300]
        answer.graded_at = None
    answer.save(update_fields=["method", "score", "feedback", "points", "note", "graded_at"])


def _attempt_refresh(attempt: Attempt, answers: list[Answer]) -> None:
    scores = [a.score for a in answers if a.score is not None]
    attempt.score = sum(scores) / len(scores) if scores else None
    pending = any(a.method == Answer.Method.SELF_PENDING for a in answers)
    attempt.state = Attempt.State.SUBMITTED if pending else Attempt.State.GRADED
    attempt.save(update_fields=["submitted_at", "state", "score"])


@transaction.atomic
def answer_self_assess(*, answer: Answer, covered: list[int]) -> Answer:
    """The learner ticks the rubric points their answer covered; score = ticked / all."""
    if answer.method not in (Answer.Method.SELF_PENDING, Answer.Method.SELF):
        raise ValueError("This answer is not graded by self-assessment.")
    size = len(answer.question.rubric)
    ticked = {int(i) for i in covered if str(i).isdigit() and 0 <= int(i) < size}
    answer.points = [{"index": i, "covered": i in ticked, "comment": ""} for i in range(size)]
    answer.score = len(ticked) / size if size else 0.0
    answer.method, answer.graded_at = Answer.Method.SELF, timezone.now()
    answer.feedback = f"Self-assessed: {len(ticked)} of {size} rubric points covered."
    answer.save(update_fields=["points", "score", "method", "graded_at", "feedback"])
    previous = Review.objects.filter(answer=answer).first()
    rating = rating_for_score(answer.score)
    if previous is not None:  # re-assessing replaces the review this answer produced
        card_override(review=previous, rating=rating, derived=True)
    else:
        card_review(user=answer.attempt.user, question=answer.question, rating=rating, answer=answer, score=answer.score)
    attempt = answer.attempt
    _attempt_refresh(attempt, list(attempt.answers.all()))
    return answer
