"""Progress over time, for the progress page: read-only, nothing here writes.

    topic_mastery_over_time  per topic and day: FSRS's predicted recall of the topic's questions
                             you had practised by then (quiz grades, interview grades and practice
                             ratings all review cards, so all three move it; forgetting lowers it)
    cards_due_ahead          cards due on each of the next 14 days
    interview_scores         each finished mock interview's score
    lab_runs_over_time       lab runs launched per day

Each returns the chart's data (x in Unix seconds at local midnight) and a plain-text summary, so
the page reads the same without JavaScript and a screen reader gets the numbers.
"""

from datetime import UTC, date, datetime, timedelta

from django.db.models import Count
from django.utils import timezone
from fsrs import Card

from labs.models import Run
from quiz.models import Interview, PracticeCard, Question, Review
from quiz.services.cards import SCHEDULER
from quiz.vocab import TOPICS, topic_label

WINDOW_DAYS = 30  # how far back the mastery and lab-run charts look
HORIZON_DAYS = 14  # how far ahead the due-cards chart looks
MAX_TOPIC_LINES = 6  # more lines than this are unreadable on a phone; the table lists the rest


def _days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(count)]


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day))


def _x(days: list[date]) -> list[int]:
    return [int(_midnight(d).timestamp()) for d in days]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{round(100 * value)}%"


def topic_mastery_over_time(*, user, now: datetime | None = None) -> dict:
    """For each of the last WINDOW_DAYS days (at the day's end, or now for today), per topic: the
    mean predicted recall over the topic's questions whose card had been reviewed by then."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = _days(today - timedelta(days=WINDOW_DAYS - 1), WINDOW_DAYS)
    moments = [min(now, _midnight(d + timedelta(days=1))) for d in days]
    topics_of = dict(Question.objects.published().values_list("id", "topics"))
    # Each card's history: (reviewed_at, card state after) in order; the state at a moment is the last one before it.
    history: dict[int, list[tuple[datetime, dict]]] = {}
    for question_id, reviewed_at, after in (Review.objects.filter(card__user=user, card__question_id__in=topics_of)
                                            .order_by("reviewed_at", "id")
                                            .values_list("card__question_id", "reviewed_at", "card_after")):
        history.setdefault(question_id, []).append((reviewed_at, after))
    practised = {t: [q for q in history if t in topics_of[q]] for t in TOPICS}
    shown = sorted((t for t in TOPICS if practised[t]), key=lambda t: (-len(practised[t]), TOPICS.index(t)))
    shown = shown[:MAX_TOPIC_LINES]
    series, summaries = [], []
    for topic in shown:
        values = []
        for moment in moments:
            recalls = [_recall(history[q], moment) for q in practised[topic]]
            recalls = [r for r in recalls if r is not None]
            values.append(round(sum(recalls) / len(recalls), 4) if recalls else None)
        series.append({"label": topic_label(topic), "values": values})
        first = next((i for i, v in enumerate(values) if v is not None), None)
        since = "" if first in (None, len(values) - 1) else (
            f", {_pct(values[first])} on {days[first]:%b} {days[first].day}")
        summaries.append(f"{topic_label(topic)}: {_pct(values[-1])} today over {len(practised[topic])} practised "
                         f"question{'s' if len(practised[topic]) != 1 else ''}{since}.")
    hidden = len([t for t in TOPICS if practised[t]]) - len(shown)
    if hidden > 0:
        summaries.append(f"{hidden} more topic{'s' if hidden != 1 else ''} in the table below.")
    return {"x": _x(days), "series": series, "summary": summaries}


def _recall(events: list[tuple[datetime, dict]], moment: datetime) -> float | None:
    state = None
    for reviewed_at, after in events:
        if reviewed_at > moment:
            break
        state = after
    if state is None:
        return None
    return SCHEDULER.get_card_retrievability(Card.from_dict(state), current_datetime=moment.astimezone(UTC))


def cards_due_ahead(*, user, now: datetime | None = None) -> dict:
    """Cards due on each of the next HORIZON_DAYS days; today's count includes overdue cards."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = _days(today, HORIZON_DAYS)
    counts = [0] * HORIZON_DAYS
    for due in PracticeCard.objects.for_learners().filter(user=user, due__lt=_midnight(days[-1] + timedelta(days=1))) \
            .values_list("due", flat=True):
        counts[max(0, (timezone.localdate(due) - today).days)] += 1
    total = sum(counts)
    if not total:
        summary = f"No card is due in the next {HORIZON_DAYS} days."
    else:
        busiest = max(range(HORIZON_DAYS), key=lambda i: (counts[i], -i))
        day = days[busiest]
        summary = (f"{total} card{'s' if total != 1 else ''} due in the next {HORIZON_DAYS} days, {counts[0]} of them today "
                   f"(overdue included). Busiest day: {'today' if busiest == 0 else f'{day:%a %b} {day.day}'} "
                   f"with {counts[busiest]}.")
    return {"x": _x(days), "values": counts, "summary": [summary]}


def interview_scores(*, user) -> dict:
    rows = list(Interview.objects.filter(user=user, state=Interview.State.FINISHED, score__isnull=False)
                .order_by("finished_at").values_list("finished_at", "score", "level"))
    x = [int(finished.timestamp()) for finished, _, _ in rows]
    values = [round(score, 4) for _, score, _ in rows]
    if not rows:
        summary = "No graded mock interview yet."
    elif len(rows) == 1:
        summary = f"One mock interview, scored {_pct(values[0])}."
    else:
        summary = (f"{len(rows)} mock interviews: the first scored {_pct(values[0])}, the latest {_pct(values[-1])}, "
                   f"the best {_pct(max(values))}.")
    return {"x": x, "values": values, "levels": [Interview.Level(level).label for _, _, level in rows],
            "summary": [summary]}


def lab_runs_over_time(*, user, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = _days(today - timedelta(days=WINDOW_DAYS - 1), WINDOW_DAYS)
    runs = Run.objects.filter(owner=user, created_at__gte=_midnight(days[0]))
    counts = [0] * WINDOW_DAYS
    for created in runs.values_list("created_at", flat=True):
        counts[(timezone.localdate(created) - days[0]).days] += 1
    total = sum(counts)
    if not total:
        summary = f"No lab run launched in the last {WINDOW_DAYS} days."
    else:
        statuses = dict(runs.values_list("status").annotate(n=Count("id")))
        parts = [f"{statuses[s]} {Run.Status(s).label.lower()}" for s in Run.Status.values if statuses.get(s)]
        summary = f"{total} lab run{'s' if total != 1 else ''} launched in the last {WINDOW_DAYS} days ({', '.join(parts)})."
    return {"x": _x(days), "values": counts, "summary": [summary]}


def progress_over_time(*, user, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    return {"mastery": topic_mastery_over_time(user=user, now=now), "due": cards_due_ahead(user=user, now=now),
            "interviews": interview_scores(user=user), "runs": lab_runs_over_time(user=user, now=now),
            "timezone": timezone.get_current_timezone_name()}
