"""Read-only quiz queries: what pages and exports show. Nothing here writes; work that writes
lives in quiz.services."""

from datetime import datetime, timedelta

from django.db.models import Avg, Count, Q
from django.utils import timezone

from quiz.models import Answer, Attempt, PracticeCard, Question, Quiz
from quiz.vocab import TOPICS, topic_label

# Fields of a question that the bank files hold, besides its slug and choices.
QUESTION_FIELDS = ("title", "kind", "difficulty", "topics", "very_often", "lab", "status", "hint", "rubric",
                   "prompt", "answer", "numeric_answer", "tolerance", "unit", "follow_ups")


# --- the bank ----------------------------------------------------------------------------------

def question_canonical(question: Question) -> dict:
    """The DB row in the same shape as QuestionData.canonical(), to compare and to export."""
    data = {"slug": question.slug, **{name: getattr(question, name) for name in QUESTION_FIELDS}}
    data["topics"], data["rubric"] = list(question.topics), list(question.rubric)
    data["follow_ups"] = list(question.follow_ups or [])
    data["choices"] = [{"text": c.text, "correct": c.correct, "explanation": c.explanation}
                       for c in question.choices.all()]
    return data


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


# --- practice and progress -----------------------------------------------------------------------

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
    # The next card even when it falls after midnight: "nothing is due" must always say when.
    upcoming = cards.filter(due__gt=now).order_by("due").first()
    return {
        "due_now": cards.due_by(now).count(),
        "due_today": cards.due_by(end_of_day()).count(),
        "due_tomorrow": cards.due_by(end_of_day(1)).count(),
        "next_due": upcoming.due if upcoming else None,
        "next_due_today": bool(upcoming) and upcoming.due <= end_of_day(),
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


# --- what other apps' pages show ---------------------------------------------------------------


def lab_questions(lab) -> list[dict]:
    """The questions a lab answers (its page, through the lab_questions template tag): those the
    lab file names, then every published question whose `lab:` is the lab. A named question not
    (yet) in the bank is listed by its slug, without a link."""
    rows = Question.objects.published().filter(Q(lab=lab.slug) | Q(slug__in=lab.questions))
    found = {q.slug: {"slug": q.slug, "title": q.title, "url": q.get_absolute_url()} for q in rows}
    named = [found.get(slug, {"slug": slug, "title": slug.replace("-", " ").capitalize(), "url": ""}) for slug in lab.questions]
    others = sorted((q for slug, q in found.items() if slug not in lab.questions), key=lambda q: q["title"])
    return named + others


def latest_attempts(*, user) -> tuple[Attempt | None, Attempt | None]:
    """(the learner's last finished quiz attempt, their open one): the home page's quiz card."""
    last = (Attempt.objects.filter(user=user).exclude(state=Attempt.State.IN_PROGRESS)
            .order_by("-submitted_at", "-id").first())
    open_ = Attempt.objects.filter(user=user, state=Attempt.State.IN_PROGRESS).order_by("-started_at").first()
    return last, open_
