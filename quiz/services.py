"""Quiz work that spans models or has side effects: the bank sync, attempts, grading, FSRS cards."""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db import transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone
from fsrs import Card, Rating, Scheduler

from quiz import judge
from quiz.bank import CuratedQuiz, QuestionData, render_question_file
from quiz.grading import NotANumber, grade_choices, grade_numeric, parse_number, rating_for_score
from quiz.models import (
    Answer,
    Attempt,
    Choice,
    JudgeCall,
    PracticeCard,
    Question,
    QuestionRevision,
    Quiz,
    QuizItem,
    Review,
)
from quiz.vocab import TOPICS, Kind, topic_label

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 10_000
MAX_QUIZ_LENGTH = 30
# Fuzzing spreads reviews of cards learned together over neighbouring days (FSRS's default).
SCHEDULER = Scheduler(enable_fuzzing=True)
# The rating buttons preview the interval each rating gives; without fuzz so the buttons read in order.
PREVIEW_SCHEDULER = Scheduler(enable_fuzzing=False)


class AttemptClosed(Exception):
    """The attempt was submitted or ran out of time: answers can no longer change."""


# --- bank ----------------------------------------------------------------------------------------

QUESTION_FIELDS = ("title", "kind", "difficulty", "topics", "very_often", "lab", "status", "hint", "rubric",
                   "prompt", "answer", "numeric_answer", "tolerance", "unit")


def question_canonical(question: Question) -> dict:
    """The DB row in the same shape as QuestionData.canonical(), to compare and to export."""
    data = {"slug": question.slug, **{name: getattr(question, name) for name in QUESTION_FIELDS}}
    data["topics"], data["rubric"] = list(question.topics), list(question.rubric)
    data["choices"] = [{"text": c.text, "correct": c.correct, "explanation": c.explanation}
                       for c in question.choices.all()]
    return data


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_files: list[str] = field(default_factory=list)
    quizzes: dict[str, int] = field(default_factory=lambda: {"created": 0, "updated": 0, "unchanged": 0})


def _set_choices(question: Question, choices: list[dict]) -> None:
    # Update in place by position, so learners' past answers (choice ids) keep pointing at the same option.
    existing = list(question.choices.all())
    for position, choice in enumerate(choices):
        if position < len(existing):
            row = existing[position]
            row.position, row.text = position, choice["text"]
            row.correct, row.explanation = choice["correct"], choice["explanation"]
            row.save()
        else:
            Choice.objects.create(question=question, position=position, **choice)
    for row in existing[len(choices):]:
        row.delete()


@transaction.atomic
def bank_load(*, questions: list[QuestionData], curated: list[CuratedQuiz] | None = None) -> LoadReport:
    """Upsert the files into the DB in one transaction. Questions missing from the files are kept
    (learners' history points at them) and only reported."""
    report = LoadReport()
    existing = {q.slug: q for q in Question.objects.prefetch_related("choices")}
    for data in questions:
        wanted = data.canonical()
        question = existing.get(data.slug)
        if question is None:
            question = Question(slug=data.slug)
            _apply(question, wanted)
            question.save()
            _set_choices(question, wanted["choices"])
            report.created.append(data.slug)
            continue
        current = question_canonical(question)
        if current == wanted:
            report.unchanged.append(data.slug)
            continue
        changes = {name: [current[name], wanted[name]] for name in wanted if current[name] != wanted[name]}
        _apply(question, wanted)
        question.save()
        _set_choices(question, wanted["choices"])
        QuestionRevision.objects.create(question=question, source=QuestionRevision.Source.LOAD_BANK, changes=changes)
        report.updated.append(data.slug)
    in_files = {data.slug for data in questions}
    report.not_in_files = sorted(set(existing) - in_files)
    for quiz in curated or []:
        report.quizzes[_upsert_quiz(quiz)] += 1
    return report


def _apply(question: Question, data: dict) -> None:
    for name in QUESTION_FIELDS:
        setattr(question, name, data[name])


def _upsert_quiz(data: CuratedQuiz) -> str:
    quiz, created = Quiz.objects.get_or_create(slug=data.slug, defaults={"title": data.title})
    current = (quiz.title, quiz.description, quiz.time_limit_minutes,
               list(quiz.items.values_list("question__slug", flat=True)))
    wanted = (data.title, data.description, data.time_limit_minutes, data.questions)
    if not created and current == wanted:
        return "unchanged"
    quiz.title, quiz.description, quiz.time_limit_minutes = data.title, data.description, data.time_limit_minutes
    quiz.save()
    quiz.items.all().delete()
    ids = dict(Question.objects.filter(slug__in=data.questions).values_list("slug", "id"))
    QuizItem.objects.bulk_create(QuizItem(quiz=quiz, question_id=ids[slug], position=i) for i, slug in enumerate(data.questions))
    return "created" if created else "updated"


def bank_export(*, out_dir: Path) -> int:
    """Write every question (any status) back as files, overwriting a file with the same stem in place."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = {path.stem: path for path in out_dir.rglob("*.md")}
    count = 0
    for question in Question.objects.prefetch_related("choices").order_by("slug"):
        path = where.get(question.slug, out_dir / f"{question.slug}.md")
        text = render_question_file(question_canonical(question))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        count += 1
    return count


def curated_export() -> list[dict]:
    quizzes = []
    for quiz in Quiz.objects.prefetch_related("items__question").order_by("slug"):
        item = {"slug": quiz.slug, "title": quiz.title}
        if quiz.description:
            item["description"] = quiz.description
        if quiz.time_limit_minutes:
            item["time_limit_minutes"] = quiz.time_limit_minutes
        item["questions"] = [i.question.slug for i in quiz.items.all()]
        quizzes.append(item)
    return quizzes


# --- attempts ------------------------------------------------------------------------------------

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
    import random

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
        if answer.score is not None:
            card_review(user=attempt.user, question=answer.question, rating=rating_for_score(answer.score),
                        answer=answer, score=answer.score, now=now)
    attempt.submitted_at = now
    _attempt_refresh(attempt, answers)
    return attempt


def _grade_one(answer: Answer, verdict: judge.Verdict | None, note: str, now: datetime) -> None:
    question = answer.question
    answer.graded_at = now
    if question.is_choice:
        choices = list(question.choices.all())
        grade = grade_choices(question.kind, {c.id for c in choices if c.correct}, {c.id for c in choices}, answer.selected)
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, grade.score, grade.feedback
    elif question.kind == Kind.NUMERIC:
        grade = grade_numeric(answer.text, question.numeric_answer, question.tolerance or 0.0, question.unit)
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, grade.score, grade.feedback
    elif not answer.text.strip():
        answer.method, answer.score, answer.feedback = Answer.Method.AUTO, 0.0, "No answer given."
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


# --- spaced repetition -----------------------------------------------------------------------------

def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)  # fsrs insists on datetime.timezone.utc


def _store(card: PracticeCard, fsrs_card: Card) -> None:
    card.data = fsrs_card.to_dict()
    card.due, card.state, card.stability = fsrs_card.due, int(fsrs_card.state), fsrs_card.stability


@transaction.atomic
def card_review(*, user, question: Question, rating: Rating, answer: Answer | None = None,
                score: float | None = None, now: datetime | None = None) -> Review:
    """Apply one review to the learner's card for this question (created on first review)."""
    now = _utc(now or timezone.now())
    card = PracticeCard.objects.select_for_update().filter(user=user, question=question).first()
    if card is None:
        card = PracticeCard(user=user, question=question)
        before = Card(due=now).to_dict()
    else:
        before = card.data
    after, _ = SCHEDULER.review_card(Card.from_dict(before), Rating(rating), review_datetime=now)
    _store(card, after)
    card.reps += 1
    card.save()
    return Review.objects.create(card=card, answer=answer, rating=int(rating), score=score, reviewed_at=now,
                                 card_before=before, card_after=card.data)


def card_add(*, user, question: Question) -> PracticeCard:
    """Put a question in the learner's practice queue without a review: a new card, due now."""
    now = _utc(timezone.now())
    card, created = PracticeCard.objects.get_or_create(
        user=user, question=question, defaults={"data": {}, "due": now, "state": 1})
    if created:
        _store(card, Card(due=now))
        card.save(update_fields=["data", "due", "state", "stability"])
    return card


@transaction.atomic
def card_override(*, review: Review, rating: Rating, derived: bool = False) -> Review:
    """Replace a review's rating: re-apply it from the card state before that review, at the same time.

    Only the card's latest review can be changed; later reviews were computed from its result.
    """
    card = PracticeCard.objects.select_for_update().get(pk=review.card_id)
    latest = card.reviews.order_by("-reviewed_at", "-id").first()
    if latest is None or latest.pk != review.pk:
        raise ValueError("This card has been reviewed again since; only its latest review can be changed.")
    after, _ = SCHEDULER.review_card(Card.from_dict(review.card_before), Rating(rating), review_datetime=_utc(review.reviewed_at))
    _store(card, after)
    card.save(update_fields=["data", "due", "state", "stability"])
    if derived:
        review.derived_rating = None
        review.score = review.answer.score if review.answer_id else review.score
    elif review.derived_rating is None:
        review.derived_rating = review.rating
    review.rating, review.card_after = int(rating), card.data
    review.save(update_fields=["rating", "derived_rating", "score", "card_after"])
    review.card = card
    return review


def end_of_day(day_offset: int = 0) -> datetime:
    now = timezone.localtime()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=day_offset + 1)


def practice_next(*, user) -> PracticeCard | None:
    """The most overdue card whose time has come (learning steps reappear minutes later)."""
    return (PracticeCard.objects.for_learners().filter(user=user).due_by(timezone.now())
            .select_related("question").order_by("due", "id").first())


def practice_summary(*, user) -> dict:
    cards = PracticeCard.objects.for_learners().filter(user=user)
    now = timezone.now()
    upcoming = cards.filter(due__gt=now, due__lte=end_of_day()).order_by("due").first()
    return {
        "due_now": cards.due_by(now).count(),
        "due_today": cards.due_by(end_of_day()).count(),
        "due_tomorrow": cards.due_by(end_of_day(1)).count(),
        "next_due": upcoming.due if upcoming else None,
        "total": cards.count(),
        "mastered": cards.mastered().count(),
    }


def progress_by_topic(*, user) -> list[dict]:
    """Per topic: questions, cards seen, due today, mastered, and accuracy over graded quiz answers."""
    questions = list(Question.objects.published().values("id", "topics"))
    cards = {c["question_id"]: c for c in PracticeCard.objects.for_learners().filter(user=user).values(
        "question_id", "due", "state", "stability")}
    scores = {row["question_id"]: (row["avg"], row["n"]) for row in Answer.objects.filter(
        attempt__user=user, score__isnull=False).values("question_id").annotate(avg=Avg("score"), n=Count("id"))}
    due_limit, rows = end_of_day(), []
    for topic in TOPICS:
        ids = [q["id"] for q in questions if topic in q["topics"]]
        if not ids:
            continue
        seen = [cards[i] for i in ids if i in cards]
        mastered = sum(1 for c in seen if PracticeCard(state=c["state"], stability=c["stability"]).is_mastered)
        graded = [scores[i] for i in ids if i in scores]
        answered = sum(n for _, n in graded)
        accuracy = sum(avg * n for avg, n in graded) / answered if answered else None
        total = len(ids)
        rows.append({
            "topic": topic, "label": topic_label(topic), "questions": total, "seen": len(seen),
            "due": sum(1 for c in seen if c["due"] <= due_limit), "mastered": mastered, "answered": answered,
            "accuracy": accuracy,
            "pct_mastered": round(100 * mastered / total), "pct_learning": round(100 * (len(seen) - mastered) / total),
        })
    return rows
