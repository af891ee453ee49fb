"""Mock interviews: pick the questions, run the clock, ask follow-ups, grade, and report.

The flow of one interview:

    interview_start      pick open questions for a level (or the full loop), in card order
    interview_step       what the learner is asked now; starts the stage's clock, closes a stage
                         whose time ran out while nobody was looking
    interview_submit     the answer to the current stage; may ask one follow-up (the bank's, or
                         the LLM interviewer's own when an LLM is configured)
    interview_pause/resume, interview_end (stop early), interview_save_draft (autosave)
    interview_grade      at the end: the LLM judge per rubric point, else the learner's ticks;
                         every graded answer reviews its FSRS card (weak answers come back soon)
    interview_report     the report page's numbers: per answer, per topic, per level, weakest topics

LLM calls are made outside write transactions, as in quiz attempts: SQLite's write lock is never
held across HTTP, and a stale tab that lost the race is refused once the rows are locked.
"""

import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from labs.catalog import lab_url
from quiz import judge
from quiz.grading import rating_for_score
from quiz.models import Answer, Interview, InterviewAnswer, JudgeCall, PracticeCard, Question
from quiz.services.attempts import MAX_ANSWER_CHARS
from quiz.services.cards import card_override, card_review
from quiz.vocab import TOPICS, Difficulty, Kind, topic_label

log = logging.getLogger(__name__)

LENGTHS = (5, 8, 12)
SECONDS_PER_QUESTION = (120, 180, 300)  # the form's choices; 3 minutes is what the issue suggests
# The card's order: an interview climbs from the basics to scenarios.
LEVEL_ORDER = (Difficulty.BEGINNER, Difficulty.INTERMEDIATE, Difficulty.ADVANCED, Difficulty.SCENARIO)
# A browser that submits when its countdown reaches zero arrives a little late; within this many
# seconds it is not "over time".
GRACE_SECONDS = 10
ACTIVE_STAGES = (InterviewAnswer.Stage.QUESTION, InterviewAnswer.Stage.FOLLOW_UP)
NOT_GRADED = Answer.Method.SELF_PENDING  # "not graded yet": the judge failed or is off; the learner may tick


class InterviewError(ValueError):
    """Refused input, with a message for the learner (shown where they are looking)."""


# --- starting ------------------------------------------------------------------------------------

def interview_pick(*, user, level: str, length: int) -> list[Question]:
    """Open questions for `level` (full loop: a share of each level), in card order, preferring
    questions this learner has not been asked in an earlier interview."""
    levels = LEVEL_ORDER if level == Interview.Level.FULL else (Difficulty(level),)
    asked = set(InterviewAnswer.objects.filter(interview__user=user).values_list("question_id", flat=True))
    pools = {}
    for difficulty in levels:
        ids = list(Question.objects.published().filter(kind=Kind.OPEN, difficulty=difficulty).values_list("id", flat=True))
        random.shuffle(ids)
        pools[difficulty] = sorted(ids, key=lambda pk: pk in asked)  # stable: unseen first, each part shuffled
    shares = _shares(length, len(levels))
    picked: dict[str, list[int]] = {d: pools[d][:n] for d, n in zip(levels, shares, strict=True)}
    # A level with too few questions leaves its share to the others, in card order.
    missing = length - sum(len(v) for v in picked.values())
    for difficulty in levels:
        if missing <= 0:
            break
        extra = pools[difficulty][len(picked[difficulty]):len(picked[difficulty]) + missing]
        picked[difficulty] += extra
        missing -= len(extra)
    found = Question.objects.in_bulk([pk for d in levels for pk in picked[d]])
    return [found[pk] for d in levels for pk in picked[d]]


def _shares(length: int, parts: int) -> list[int]:
    """Split `length` over `parts` levels as evenly as possible; the extra ones go to the middle
    levels first (5 over 4 levels: 1, 2, 1, 1), where a real loop spends most of its time."""
    base, extra = divmod(length, parts)
    shares = [base] * parts
    for i in sorted(range(parts), key=lambda i: (i == 0, i))[:extra]:
        shares[i] += 1
    return shares


@transaction.atomic
def interview_start(*, user, level: str, length: int, seconds_per_question: int = 180) -> Interview:
    if level not in Interview.Level.values:
        raise InterviewError(f"Unknown level “{level}”.")
    if length not in LENGTHS:
        raise InterviewError(f"An interview has {', '.join(map(str, LENGTHS))} questions.")
    if seconds_per_question not in SECONDS_PER_QUESTION:
        raise InterviewError("Pick one of the offered times per question.")
    questions = interview_pick(user=user, level=level, length=length)
    if not questions:
        raise InterviewError("No published open question at this level yet: pick another level.")
    interview = Interview.objects.create(user=user, level=level, seconds_per_question=seconds_per_question)
    InterviewAnswer.objects.bulk_create(
        InterviewAnswer(interview=interview, question=q, position=i) for i, q in enumerate(questions, 1))
    return interview


# --- the clock -----------------------------------------------------------------------------------

def stage_seconds(interview: Interview, answer: InterviewAnswer) -> int:
    """A follow-up gets half the question's time: it asks about one point, not the whole topic."""
    if answer.stage == InterviewAnswer.Stage.FOLLOW_UP:
        return max(60, interview.seconds_per_question // 2)
    return interview.seconds_per_question


def seconds_left(interview: Interview, answer: InterviewAnswer, now: datetime | None = None) -> int:
    """Seconds left on the current stage's clock (negative once over); a stopped clock keeps its value."""
    used = answer.used_seconds
    if answer.clock_started_at is not None:
        used += int(((now or timezone.now()) - answer.clock_started_at).total_seconds())
    return stage_seconds(interview, answer) - used


@dataclass
class Step:
    """What the learner is asked now (None when the interview is over), and what happened."""

    answer: InterviewAnswer | None
    closed_by_clock: InterviewAnswer | None = None  # a stage whose time ran out while the learner was away
    finished: bool = False  # the interview just ended: grade it


@transaction.atomic
def interview_step(*, interview: Interview, now: datetime | None = None) -> Step:
    """The current stage, with its clock started. A stage whose time ran out (the learner left)
    is closed with the text autosaved so far, marked over time, and the next question begins."""
    now = now or timezone.now()
    interview = Interview.objects.select_for_update().get(pk=interview.pk)
    if not interview.is_open:
        return Step(None)
    answers = list(interview.answers.select_related("question"))
    current = next((a for a in answers if a.stage in ACTIVE_STAGES), None)
    closed = None
    if current is not None and not interview.is_paused and current.clock_started_at is not None \
            and seconds_left(interview, current, now) < -GRACE_SECONDS:
        _close_stage(current, timed_out=True)
        closed, current = current, None
    if current is None:
        current = next((a for a in answers if a.stage == InterviewAnswer.Stage.WAITING), None)
        if current is None:
            return Step(None, closed, finished=_interview_close(interview, now))
        current.stage = InterviewAnswer.Stage.QUESTION
        current.save(update_fields=["stage"])
    if not interview.is_paused and current.clock_started_at is None:
        current.clock_started_at = now
        current.save(update_fields=["clock_started_at"])
    return Step(current, closed)


def _close_stage(answer: InterviewAnswer, *, timed_out: bool) -> None:
    if answer.stage == InterviewAnswer.Stage.FOLLOW_UP:
        answer.follow_up_timed_out = timed_out
    else:
        answer.timed_out = timed_out
    answer.stage, answer.clock_started_at = InterviewAnswer.Stage.DONE, None
    answer.save(update_fields=["stage", "clock_started_at", "timed_out", "follow_up_timed_out"])


def _interview_close(interview: Interview, now: datetime) -> bool:
    """Mark finished; True only for the one caller that did it (two tabs cannot both grade)."""
    return bool(Interview.objects.filter(pk=interview.pk, state=Interview.State.IN_PROGRESS).update(
        state=Interview.State.FINISHED, finished_at=now, paused_at=None))


@transaction.atomic
def interview_pause(*, interview: Interview, now: datetime | None = None) -> Interview:
    now = now or timezone.now()
    interview = Interview.objects.select_for_update().get(pk=interview.pk)
    if not interview.is_open or interview.is_paused:
        return interview
    current = interview.answers.filter(stage__in=ACTIVE_STAGES).first()
    if current is not None and current.clock_started_at is not None:
        current.used_seconds += max(0, int((now - current.clock_started_at).total_seconds()))
        current.clock_started_at = None
        current.save(update_fields=["used_seconds", "clock_started_at"])
    interview.paused_at = now
    interview.save(update_fields=["paused_at"])
    return interview


@transaction.atomic
def interview_resume(*, interview: Interview) -> Interview:
    """Clear the pause; the next interview_step restarts the clock where it stopped."""
    interview = Interview.objects.select_for_update().get(pk=interview.pk)
    if interview.is_paused:
        interview.paused_at = None
        interview.save(update_fields=["paused_at"])
    return interview


# --- answering -----------------------------------------------------------------------------------

def _current(interview: Interview, position: int, stage: str) -> InterviewAnswer:
    """The answer the form was for, if it is still the one being asked; else a clear refusal."""
    if not interview.is_open:
        raise InterviewError("This interview is over: its report is ready.")
    answer = interview.answers.select_related("question").filter(position=position).first()
    if answer is None or answer.stage != stage or stage not in ACTIVE_STAGES:
        raise InterviewError("That question was already answered (in another tab?): here is the current one.")
    if interview.is_paused:
        raise InterviewError("The interview is paused: resume it to answer.")
    return answer


def interview_save_draft(*, interview: Interview, position: int, stage: str, text: str) -> InterviewAnswer:
    """Autosave of what the learner is typing, so a reload or a lost connection keeps it."""
    answer = _current(interview, position, stage)
    field = "follow_up_text" if stage == InterviewAnswer.Stage.FOLLOW_UP else "text"
    setattr(answer, field, (text or "")[:MAX_ANSWER_CHARS])
    answer.saved_at = timezone.now()
    answer.save(update_fields=[field, "saved_at"])
    return answer


def interview_submit(*, interview: Interview, position: int, stage: str, text: str, action: str = "answer",
                     now: datetime | None = None) -> Step:
    """The learner's answer to the current stage. `action`: "answer", "skip", or "timeout" (the
    browser's countdown reached zero: whatever is typed is kept, and no follow-up is asked)."""
    now = now or timezone.now()
    answer = _current(interview, position, stage)
    text = (text or "")[:MAX_ANSWER_CHARS]
    if action == "answer" and not text.strip():
        raise InterviewError("Your answer is empty: type an answer, or press “Skip” to move on.")
    if action == "skip":
        text = ""
    over_time = action == "timeout" or seconds_left(interview, answer, now) < -GRACE_SECONDS
    follow_up, source, call = "", "", None
    if stage == InterviewAnswer.Stage.QUESTION and text.strip() and not over_time:
        follow_up, source, call = _pick_follow_up(interview, answer, text)  # may call the LLM: outside the transaction
    return _record_submit(interview, answer, stage=stage, text=text, skipped=action == "skip", over_time=over_time,
                          follow_up=follow_up, source=source, call=call, now=now)


def _pick_follow_up(interview: Interview, answer: InterviewAnswer, text: str) -> tuple[str, str, judge.JudgeResult | None]:
    """The LLM interviewer's own question about what the learner wrote when an LLM is configured
    (and the hourly quota allows); else, or when that call fails, one of the bank's follow-ups."""
    question = answer.question
    bank = list(question.follow_ups or [])
    if judge.judge_configured():
        reservation = judge.judge_reserve(user=interview.user, wanted=1)
        if reservation.granted:
            result, asked = judge.ask_follow_up(question=f"{question.title}\n\n{question.prompt}",
                                                model_answer=question.answer, learner_answer=text)
            judge.judge_settle(reservation, used=1)
            if asked:
                return asked, InterviewAnswer.FollowUpSource.LLM, result
            log.warning("interviewer follow-up failed for interview %s: %s %s", interview.pk, result.outcome, result.detail)
            fallback = _bank_follow_up(interview, answer, bank)
            return fallback, InterviewAnswer.FollowUpSource.BANK if fallback else "", result
    return _bank_follow_up(interview, answer, bank), InterviewAnswer.FollowUpSource.BANK if bank else "", None


def _bank_follow_up(interview: Interview, answer: InterviewAnswer, bank: list[str]) -> str:
    # Seeded: a retried request (or a reload of the same interview) asks the same follow-up.
    return random.Random(f"{interview.pk}:{answer.question_id}").choice(bank) if bank else ""


@transaction.atomic
def _record_submit(interview, answer, *, stage, text, skipped, over_time, follow_up, source, call, now) -> Step:
    interview = Interview.objects.select_for_update().get(pk=interview.pk)
    answer = InterviewAnswer.objects.select_related("question").get(pk=answer.pk)
    if call is not None:  # the interviewer call cost money whatever happens next
        JudgeCall.objects.create(user=interview.user, outcome=call.outcome, model=call.model,
                                 prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                                 latency_ms=call.latency_ms, detail=f"interview follow-up {call.detail}".strip()[:300])
    if not interview.is_open or answer.stage != stage:
        raise InterviewError("That question was already answered (in another tab?): here is the current one.")
    if stage == InterviewAnswer.Stage.FOLLOW_UP:
        answer.follow_up_text = text
    else:
        answer.text, answer.skipped = text, skipped
    answer.saved_at = now
    answer.save(update_fields=["text", "skipped", "follow_up_text", "saved_at"])
    if follow_up:
        answer.follow_up, answer.follow_up_source = follow_up, source
        answer.stage, answer.clock_started_at, answer.used_seconds = InterviewAnswer.Stage.FOLLOW_UP, now, 0
        answer.save(update_fields=["follow_up", "follow_up_source", "stage", "clock_started_at", "used_seconds"])
        return Step(answer)
    _close_stage(answer, timed_out=over_time)
    upcoming = interview.answers.filter(stage=InterviewAnswer.Stage.WAITING).order_by("position").first()
    if upcoming is None:
        return Step(None, finished=_interview_close(interview, now))
    upcoming.stage, upcoming.clock_started_at = InterviewAnswer.Stage.QUESTION, now
    upcoming.save(update_fields=["stage", "clock_started_at"])
    return Step(upcoming)


@transaction.atomic
def interview_end(*, interview: Interview, now: datetime | None = None) -> bool:
    """Stop early: the question on screen keeps what was autosaved, the rest count as skipped."""
    now = now or timezone.now()
    interview = Interview.objects.select_for_update().get(pk=interview.pk)
    if not interview.is_open:
        return False
    for answer in interview.answers.exclude(stage=InterviewAnswer.Stage.DONE):
        answer.skipped = answer.stage == InterviewAnswer.Stage.WAITING or (answer.skipped and not answer.text.strip())
        answer.stage, answer.clock_started_at = InterviewAnswer.Stage.DONE, None
        answer.save(update_fields=["stage", "clock_started_at", "skipped"])
    return _interview_close(interview, now)


# --- grading -------------------------------------------------------------------------------------

_FALLBACK_REASON = {
    "timeout": "The judge did not answer in time",
    "api_error": "The judge is unavailable right now",
    "malformed": "The judge's reply could not be read",
}
SELF_GRADE_NOTE = "Compare with the model answer and tick the rubric points you covered."


def judged_text(answer: InterviewAnswer) -> str:
    """What the judge grades: the answer and, when one was asked, the follow-up exchange (a rubric
    point the learner covered only when pressed still counts, as it would in the room)."""
    if not answer.follow_up:
        return answer.text
    return (f"{answer.text}\n\n[Follow-up question from the interviewer: {answer.follow_up}]\n"
            f"[Answer to the follow-up:] {answer.follow_up_text.strip() or '(no answer)'}")


def interview_grade(*, interview: Interview, retry: bool = False) -> int:
    """Grade every answer not graded yet; returns how many the judge graded. Empty answers score 0.
    With `retry`, only answers the judge failed on (or had no quota for) are sent again."""
    answers = list(interview.answers.select_related("question").filter(score__isnull=True))
    if retry:
        answers = [a for a in answers if a.method == NOT_GRADED]
    to_judge = [a for a in answers if judged_text(a).strip() and a.question.rubric]
    results: dict[int, judge.JudgeResult] = {}
    notes: dict[int, str] = {}
    if to_judge and judge.judge_configured():
        reservation = judge.judge_reserve(user=interview.user, wanted=len(to_judge))  # before any call
        granted, refused = to_judge[:reservation.granted], to_judge[reservation.granted:]
        notes.update({a.pk: f"{reservation.refusal} Or retry grading later." for a in refused})
        try:
            if granted:
                # Independent, I/O-bound calls: side by side, so the report does not wait N timeouts.
                with ThreadPoolExecutor(max_workers=min(4, len(granted))) as pool:
                    calls = pool.map(lambda a: judge.judge_answer(
                        question=f"{a.question.title}\n\n{a.question.prompt}", rubric=a.question.rubric,
                        model_answer=a.question.answer, learner_answer=judged_text(a)), granted)
                    results = dict(zip([a.pk for a in granted], calls, strict=True))
        finally:
            judge.judge_settle(reservation, used=len(results))
    else:
        notes.update({a.pk: SELF_GRADE_NOTE for a in to_judge})
    return _record_grades(interview, answers, results, notes)


@transaction.atomic
def _record_grades(interview: Interview, answers: list[InterviewAnswer], results: dict, notes: dict) -> int:
    Interview.objects.select_for_update().get(pk=interview.pk)  # one grader at a time per interview
    now, judged = timezone.now(), 0
    for answer in answers:
        fresh = InterviewAnswer.objects.select_related("question").get(pk=answer.pk)
        if fresh.score is not None:  # a concurrent grader (or the learner's ticks) got there first
            continue
        answer = fresh
        result = results.get(answer.pk)
        if result is not None:
            JudgeCall.objects.create(user=interview.user, outcome=result.outcome, model=result.model,
                                     prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                     latency_ms=result.latency_ms, detail=f"interview answer {result.detail}".strip()[:300])
        if not judged_text(answer).strip():
            why = "Time ran out before you answered." if answer.timed_out else "No answer given."
            answer.method, answer.score, answer.feedback, answer.note = Answer.Method.AUTO, 0.0, why, ""
        elif result is not None and result.verdict is not None:
            answer.method, answer.score, answer.feedback = Answer.Method.JUDGE, result.verdict.score, result.verdict.feedback
            answer.points, answer.note = result.verdict.points, ""
            judged += 1
        else:
            if result is not None:
                log.warning("interview judge failed for answer %s: %s %s", answer.pk, result.outcome, result.detail)
                note = (f"{_FALLBACK_REASON.get(result.outcome, 'The judge failed')}: not graded. "
                        "Retry grading later, or tick the rubric points you covered.")
            else:
                note = notes.get(answer.pk, SELF_GRADE_NOTE)
            answer.method, answer.note = NOT_GRADED, note[:300]
        if answer.score is not None:
            answer.graded_at = now
            answer.review = card_review(user=interview.user, question=answer.question, rating=rating_for_score(answer.score),
                                        score=answer.score, now=now)
        answer.save(update_fields=["method", "score", "feedback", "points", "note", "graded_at", "review"])
    _interview_refresh(interview)
    return judged


def _interview_refresh(interview: Interview) -> None:
    scores = list(InterviewAnswer.objects.filter(interview=interview, score__isnull=False).values_list("score", flat=True))
    Interview.objects.filter(pk=interview.pk).update(score=sum(scores) / len(scores) if scores else None)


@transaction.atomic
def interview_answer_self_grade(*, answer: InterviewAnswer, covered: list) -> InterviewAnswer:
    """The learner ticks the rubric points they covered; score = ticked / all. Allowed while the
    answer is not graded, and to revise an earlier self-grade; the judge's grade stands."""
    answer = (InterviewAnswer.objects.select_for_update(of=("self",)).select_related("question", "interview", "review")
              .get(pk=answer.pk))
    if answer.interview.is_open:
        raise InterviewError("Finish the interview first: grading comes with the report.")
    if answer.method not in (NOT_GRADED, Answer.Method.SELF):
        raise InterviewError("This answer is already graded.")
    size = len(answer.question.rubric)
    ticked = {int(i) for i in covered if str(i).isdigit() and 0 <= int(i) < size}
    answer.points = [{"index": i, "covered": i in ticked, "comment": ""} for i in range(size)]
    answer.score = len(ticked) / size if size else 0.0
    answer.method, answer.graded_at, answer.note = Answer.Method.SELF, timezone.now(), ""
    answer.feedback = f"Self-assessed: {len(ticked)} of {size} rubric points covered."
    rating = rating_for_score(answer.score)
    if answer.review is not None:
        try:  # re-grading replaces the review this answer produced, if nothing reviewed the card since
            card_override(review=answer.review, rating=rating, derived=True)
            answer.review.score = answer.score
            answer.review.save(update_fields=["score"])
        except ValueError:
            pass  # the card moved on (practised since): the later review already counts
    else:
        answer.review = card_review(user=answer.interview.user, question=answer.question, rating=rating, score=answer.score)
    answer.save(update_fields=["points", "score", "method", "graded_at", "note", "feedback", "review"])
    _interview_refresh(answer.interview)
    return answer


# --- the report ----------------------------------------------------------------------------------

def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def interview_report(*, interview: Interview) -> dict:
    """Everything the report page shows: rows, per-topic and per-level scores, the two weakest
    topics with this interview's questions in them and the lab that proves each."""
    answers = list(interview.answers.select_related("question", "review", "review__card"))
    rows = []
    for answer in answers:
        comments = {p["index"]: p.get("comment", "") for p in answer.points}
        covered = {p["index"] for p in answer.points if p.get("covered")}
        rows.append({"answer": answer, "question": answer.question,
                     "rubric": [(i, point, i in covered, comments.get(i, "")) for i, point in enumerate(answer.question.rubric)]})
    by_topic: dict[str, list[float]] = {}
    by_level: dict[str, list[float]] = {}
    for answer in answers:
        for topic in answer.question.topics:
            by_topic.setdefault(topic, [])
            if answer.score is not None:
                by_topic[topic].append(answer.score)
        by_level.setdefault(answer.question.difficulty, [])
        if answer.score is not None:
            by_level[answer.question.difficulty].append(answer.score)
    order = {t: i for i, t in enumerate(TOPICS)}
    topics = [{"topic": t, "label": topic_label(t), "score": _mean(s), "graded": len(s),
               "asked": sum(t in a.question.topics for a in answers)}
              for t, s in sorted(by_topic.items(), key=lambda item: order.get(item[0], len(order)))]
    levels = [{"level": d, "label": Difficulty(d).label, "score": _mean(by_level[d]), "graded": len(by_level[d])}
              for d in Difficulty.values if d in by_level]
    graded_topics = [t for t in topics if t["score"] is not None and t["score"] < 1]
    weakest = sorted(graded_topics, key=lambda t: (t["score"], -t["asked"], order.get(t["topic"], 99)))[:2]
    for topic in weakest:
        topic["questions"] = [a.question for a in answers if topic["topic"] in a.question.topics]
        topic["lab"] = _topic_lab(topic["topic"], topic["questions"])
    pending = sum(a.method == NOT_GRADED for a in answers)
    due_soon = PracticeCard.objects.filter(
        user=interview.user, question_id__in=[a.question_id for a in answers if a.score is not None and a.score < 0.75],
        due__lte=timezone.now() + timedelta(days=1)).count()
    return {"rows": rows, "topics": topics, "levels": levels, "weakest": weakest, "pending": pending,
            "graded": sum(a.score is not None for a in answers), "due_soon": due_soon,
            "judge_failed": any(a.method == NOT_GRADED and a.note.startswith(tuple(_FALLBACK_REASON.values()))
                                for a in answers)}


def _topic_lab(topic: str, questions: list[Question]) -> dict | None:
    """The lab that proves a topic: the one its asked questions link to most, else the bank's."""
    labs = Counter(q.lab for q in questions if q.lab)
    if not labs:
        labs = Counter(lab for lab in Question.objects.published().with_topic(topic).exclude(lab="")
                       .values_list("lab", flat=True))
    if not labs:
        return None
    slug = labs.most_common(1)[0][0]
    return {"slug": slug, "url": lab_url(slug)}
