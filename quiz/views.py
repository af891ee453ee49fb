"""Thin views: parse, authorize (quiz.access), call a service, render.

Every interactive step works as a plain link or form; htmx only swaps fragments of the same
templates in place (reveal, autosave, self-assessment, rating)."""

import random
from datetime import UTC

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, Max
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from fsrs import Card, Rating

from quiz.access import (
    get_answer_for_user,
    get_attempt_for_user,
    get_card_for_user,
    get_published_question,
    get_review_for_user,
)
from quiz.forms import REVEAL_STEPS, BuildQuizForm, QuestionFilterForm, RatingForm
from quiz.models import Answer, Attempt, PracticeCard, Question, Quiz, Review
from quiz.services import (
    PREVIEW_SCHEDULER,
    AttemptClosed,
    answer_save,
    answer_self_assess,
    attempt_build,
    attempt_grade,
    attempt_start_curated,
    card_add,
    card_override,
    card_review,
    end_of_day,
    practice_next,
    practice_summary,
    progress_by_topic,
)
from quiz.services.progress import progress_over_time
from quiz.vocab import TOPICS, Difficulty, Kind, topic_label

PAGE_SIZE = 25
LIST_COLUMNS = ("slug", "title", "kind", "difficulty", "topics", "very_often", "lab")
FACETS_CACHE_S = 3600  # a version that no page asks for any more simply ages out


def shuffled_choices(question: Question, *seed) -> list:
    """The question's choices in an order fixed by `seed` (an attempt and question, say).

    The bank writes the right answer first more often than not; showing choices in bank order
    makes "always A" a winning strategy. Seeded, so a reload shows the same order; grading
    compares choice ids, never positions, so the order cannot change a score.
    """
    choices = list(question.choices.all())
    random.Random(":".join(str(part) for part in seed)).shuffle(choices)
    return choices


# --- browsing (anonymous visitors welcome) -----------------------------------------------------------

def question_list(request):
    form = QuestionFilterForm(request.GET or None)
    questions = Question.objects.published()
    filters = form.cleaned_data if form.is_valid() else {}
    questions = questions.search(filters.get("q", ""))
    if filters.get("topic"):
        questions = questions.with_topic(filters["topic"])
    if filters.get("difficulty"):
        questions = questions.filter(difficulty=filters["difficulty"])
    if filters.get("kind"):
        questions = questions.filter(kind=filters["kind"])
    if filters.get("lab"):
        questions = questions.filter(lab=filters["lab"])
    if filters.get("very_often"):
        questions = questions.filter(very_often=True)
    practice = filters.get("practice") if request.user.is_authenticated else ""
    if practice:
        cards = PracticeCard.objects.filter(user=request.user)
        if practice == "new":
            questions = questions.exclude(id__in=cards.values("question_id"))
        elif practice == "due":
            questions = questions.filter(id__in=cards.due_by(end_of_day()).values("question_id"))
        elif practice == "mastered":
            questions = questions.filter(id__in=cards.mastered().values("question_id"))
    # Only what a row shows: the markdown and JSON columns are most of a question's bytes.
    rows = questions.order_by("-very_often", "title").only(*LIST_COLUMNS)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    my_cards = {}
    if request.user.is_authenticated:
        my_cards = {c.question_id: c for c in PracticeCard.objects.filter(
            user=request.user, question_id__in=[q.id for q in page])}
    query = request.GET.copy()
    query.pop("page", None)
    published_total, facets = _facets()
    return render(request, "quiz/question_list.html", {
        "form": form, "page": page, "total": page.paginator.count, "my_cards": my_cards, "query": query.urlencode(),
        "facets": facets, "published_total": published_total,
    })


def _facets() -> tuple[int, dict]:
    """(published questions, the counts of the filter chips). The counts read every published
    question's topics (4 queries, ~6 ms a page, the list's largest cost after its template); they
    are kept per web process under the bank's version, one cheap query that any save or removal of
    a published question changes (updated_at is auto_now; the count changes when one is published,
    unpublished or deleted)."""
    published = Question.objects.published()
    version = published.aggregate(n=Count("id"), last=Max("updated_at"))
    key = f"quiz:facets:{version['n']}:{version['last'].isoformat() if version['last'] else ''}"
    facets = cache.get(key)
    if facets is None:
        facets = _count_facets(published)
        cache.set(key, facets, FACETS_CACHE_S)
    return version["n"], facets


def _count_facets(published) -> dict:
    topics = {t: 0 for t in TOPICS}
    for row in published.values_list("topics", flat=True):
        for t in row:
            topics[t] = topics.get(t, 0) + 1
    return {
        "topics": [(t, topic_label(t), n) for t, n in topics.items() if n],
        # (value, label for people, count): chips show "Single choice", never the stored "single".
        "difficulty": [(name, Difficulty(name).label, n) for name, n in
                       published.values_list("difficulty").annotate(n=Count("id")).order_by("difficulty")],
        "kind": [(name, Kind(name).label, n) for name, n in
                 published.values_list("kind").annotate(n=Count("id")).order_by("kind")],
        "very_often": published.filter(very_often=True).count(),
    }


def _wants_fragment(request) -> bool:
    """An htmx swap gets the fragment; a history restore (back button, cache miss) needs the full page."""
    return bool(request.htmx) and not request.htmx.history_restore_request


@vary_on_headers("HX-Request")
def question_detail(request, slug: str):
    question = get_published_question(slug)
    reveal = request.GET.get("reveal", "")
    reveal = reveal if reveal in REVEAL_STEPS else ""
    context = {"question": question, "reveal": reveal, "choices": shuffled_choices(question, "question", question.pk)}
    if request.user.is_authenticated:
        context["card"] = PracticeCard.objects.filter(user=request.user, question=question).first()
    if _wants_fragment(request):
        return render(request, "quiz/_reveal.html", context)
    return render(request, "quiz/question_detail.html", context)


@login_required
@require_POST
def question_practise(request, slug: str):
    question = get_published_question(slug)
    card_add(user=request.user, question=question)
    messages.success(request, f"“{question.title}” is in your practice queue.")
    return redirect(question)


# --- quizzes -------------------------------------------------------------------------------------------

@login_required
def quiz_home(request):
    attempts = Attempt.objects.filter(user=request.user)
    return render(request, "quiz/quiz_home.html", {
        "form": BuildQuizForm(),
        "curated": Quiz.objects.annotate(n=Count("items")).filter(n__gt=0),
        "open_attempts": attempts.filter(state=Attempt.State.IN_PROGRESS),
        "past_attempts": attempts.exclude(state=Attempt.State.IN_PROGRESS)[:20],
    })


@login_required
@require_POST
def quiz_build(request):
    form = BuildQuizForm(request.POST)
    if form.is_valid():
        try:
            attempt = attempt_build(user=request.user, topics=form.cleaned_data["topics"],
                                    difficulties=form.cleaned_data["difficulties"], kinds=form.cleaned_data["kinds"],
                                    length=form.cleaned_data["length"],
                                    time_limit_minutes=form.cleaned_data["time_limit_minutes"])
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("quiz:question-in-attempt", pk=attempt.pk, n=1)
    attempts = Attempt.objects.filter(user=request.user)
    return render(request, "quiz/quiz_home.html", {
        "form": form, "curated": Quiz.objects.annotate(n=Count("items")).filter(n__gt=0),
        "open_attempts": attempts.filter(state=Attempt.State.IN_PROGRESS),
        "past_attempts": attempts.exclude(state=Attempt.State.IN_PROGRESS)[:20],
    }, status=400)


@login_required
@require_POST
def quiz_start(request, slug: str):
    quiz = get_object_or_404(Quiz, slug=slug)
    try:
        attempt = attempt_start_curated(user=request.user, quiz=quiz)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("quiz:quizzes")
    return redirect("quiz:question-in-attempt", pk=attempt.pk, n=1)


def _close_if_expired(request, attempt: Attempt) -> bool:
    """A visit after the time limit submits the attempt with what was saved."""
    if attempt.is_open and attempt.is_expired():
        attempt_grade(attempt=attempt)
        messages.warning(request, "Time is up: your quiz was submitted with the answers saved so far.")
        return True
    return False


@login_required
def attempt_overview(request, pk: int):
    """The resume point: every question with its saved state, and the submit button."""
    attempt = get_attempt_for_user(request.user, pk)
    if _close_if_expired(request, attempt) or not attempt.is_open:
        return redirect("quiz:results", pk=attempt.pk)
    answers = list(attempt.answers.select_related("question"))
    first_open = next((a.position for a in answers if not a.is_answered), 1)
    answered = sum(a.is_answered for a in answers)
    return render(request, "quiz/attempt_overview.html", {"attempt": attempt, "answers": answers, "first_open": first_open,
                                                          "answered": answered, "unanswered": len(answers) - answered})


@login_required
def attempt_question(request, pk: int, n: int):
    attempt = get_attempt_for_user(request.user, pk)
    if _close_if_expired(request, attempt) or not attempt.is_open:
        return redirect("quiz:results", pk=attempt.pk)
    answers = list(attempt.answers.select_related("question"))
    answer = next((a for a in answers if a.position == n), None)
    if answer is None:
        return redirect("quiz:attempt", pk=attempt.pk)
    warning = ""
    if request.method == "POST":
        try:
            warning = answer_save(answer=answer, text=request.POST.get("text"), selected=request.POST.getlist("choice"))
        except AttemptClosed as exc:
            messages.error(request, str(exc))
            return redirect("quiz:results", pk=attempt.pk)
        go = request.POST.get("go", "save")
        if go == "submit":
            if any(not a.is_answered for a in answers if a.pk != answer.pk) or not answer.is_answered:
                # Not yet: the overview says which questions are empty and what submitting does to them.
                return redirect("quiz:attempt", pk=attempt.pk)
            attempt_grade(attempt=attempt)
            return redirect("quiz:results", pk=attempt.pk)
        if warning:
            messages.warning(request, warning)
        if go == "next" and n < len(answers):
            return redirect("quiz:question-in-attempt", pk=attempt.pk, n=n + 1)
        if go == "prev" and n > 1:
            return redirect("quiz:question-in-attempt", pk=attempt.pk, n=n - 1)
        if go == "overview" or (go == "next" and n == len(answers)):
            return redirect("quiz:attempt", pk=attempt.pk)
        messages.success(request, "Saved.")
        return redirect("quiz:question-in-attempt", pk=attempt.pk, n=n)
    return render(request, "quiz/attempt_question.html", {
        "attempt": attempt, "answer": answer, "answers": answers, "question": answer.question,
        "choices": shuffled_choices(answer.question, attempt.pk, answer.question_id), "total": len(answers),
    })


@login_required
@require_POST
def attempt_autosave(request, pk: int, n: int):
    """htmx: saves on every change and answers with a one-line status."""
    attempt = get_attempt_for_user(request.user, pk)
    # The attempt just read and the question in the same query: answer_save reads both (2 queries fewer).
    answer = get_object_or_404(Answer.objects.select_related("question"), attempt=attempt, position=n)
    answer.attempt = attempt
    try:
        warning = answer_save(answer=answer, text=request.POST.get("text"), selected=request.POST.getlist("choice"))
    except AttemptClosed as exc:
        return render(request, "quiz/_save_status.html", {"error": str(exc)})
    return render(request, "quiz/_save_status.html", {"warning": warning, "saved_at": answer.saved_at})


@login_required
@require_POST
def attempt_submit(request, pk: int):
    attempt = get_attempt_for_user(request.user, pk)
    unanswered = sum(not a.is_answered for a in attempt.answers.all())
    if unanswered and request.POST.get("unanswered_ok") != str(unanswered):
        # Submitted without seeing the warning for this many empty answers (another tab, an old page).
        messages.warning(request, f"{unanswered} questions are not answered: submit again below to grade the quiz anyway.")
        return redirect("quiz:attempt", pk=attempt.pk)
    attempt_grade(attempt=attempt)
    return redirect("quiz:results", pk=attempt.pk)


@login_required
def attempt_results(request, pk: int):
    attempt = get_attempt_for_user(request.user, pk)
    if attempt.is_open and not _close_if_expired(request, attempt):
        return redirect("quiz:attempt", pk=attempt.pk)
    answers = list(attempt.answers.select_related("question", "review", "review__card").prefetch_related("question__choices"))
    latest = _latest_reviews(answers)
    rows = [_result_row(a, latest) for a in answers]
    graded = [a for a in answers if a.score is not None]
    return render(request, "quiz/attempt_results.html", {
        "attempt": attempt, "rows": rows, "points": sum(a.score for a in graded), "graded": len(graded),
        "pending": sum(a.method == Answer.Method.SELF_PENDING for a in answers),
        "unanswered": sum(not a.is_answered for a in answers),
        "summary": practice_summary(user=request.user),
        "labs": sorted({a.question.lab for a in answers if a.question.lab}),
    })


def _latest_reviews(answers) -> set[int]:
    """Ids of reviews that are still their card's latest (only those can be re-rated)."""
    cards = [a.review.card_id for a in answers if getattr(a, "review", None)]
    latest = {}
    for review in Review.objects.filter(card_id__in=cards).order_by("reviewed_at", "id"):
        latest[review.card_id] = review.pk
    return set(latest.values())


def _result_row(answer: Answer, latest: set[int]) -> dict:
    review = getattr(answer, "review", None)
    choices = shuffled_choices(answer.question, answer.attempt_id, answer.question_id)  # as the learner saw them
    return {"answer": answer, "question": answer.question, "choices": choices, "selected": set(answer.selected),
            "review": review, "can_rate": review is not None and review.pk in latest,
            "covered": {p["index"] for p in answer.points if p.get("covered")},
            "comments": {p["index"]: p.get("comment", "") for p in answer.points},
            "rubric": list(enumerate(answer.question.rubric))}


@login_required
@require_POST
def answer_self_assessment(request, pk: int):
    answer = get_answer_for_user(request.user, pk)
    try:
        answer_self_assess(answer=answer, covered=request.POST.getlist("covered"))
    except ValueError as exc:
        messages.error(request, str(exc))
    return redirect(reverse("quiz:results", args=[answer.attempt_id]) + f"#answer-{answer.position}")


@login_required
@require_POST
def review_rate(request, pk: int):
    """Override the rating a graded answer gave its card (Again/Hard/Good/Easy)."""
    review = get_review_for_user(request.user, pk)
    form = RatingForm(request.POST)
    if form.is_valid():
        try:
            card_override(review=review, rating=Rating(form.cleaned_data["rating"]))
            due = timezone.localtime(review.card.due)
            messages.success(request, f"Rated {review.rating_name}: next review {due:%b %d, %H:%M}.")
        except ValueError as exc:
            messages.error(request, str(exc))
    target = reverse("quiz:results", args=[review.answer.attempt_id]) + f"#answer-{review.answer.position}" \
        if review.answer_id else reverse("quiz:practice")
    return redirect(target)


# --- practice and progress ----------------------------------------------------------------------------

RATING_LABELS = [(Rating.Again, "Again"), (Rating.Hard, "Hard"), (Rating.Good, "Good"), (Rating.Easy, "Easy")]


@login_required
@vary_on_headers("HX-Request")
def practice(request):
    card = practice_next(user=request.user)
    summary = practice_summary(user=request.user)
    context = {"card": card, "summary": summary}
    if card is not None:
        reveal = request.GET.get("reveal", "")
        context.update({"question": card.question, "choices": shuffled_choices(card.question, "question", card.question_id),
                        "reveal": reveal if reveal in REVEAL_STEPS else "", "ratings": _rating_previews(card),
                        "practice": True})
        if _wants_fragment(request):
            return render(request, "quiz/_reveal.html", context)
    return render(request, "quiz/practice.html", context)


def _rating_previews(card: PracticeCard) -> list[tuple[int, str, str]]:
    """Each rating button shows when the card would come back, like Anki does."""
    now = timezone.now()
    previews = []
    for rating, label in RATING_LABELS:
        after, _ = PREVIEW_SCHEDULER.review_card(Card.from_dict(card.data), rating, review_datetime=now.astimezone(UTC))
        previews.append((int(rating), label, _human_delta(after.due - now)))
    return previews


def _human_delta(delta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 60 * 24:
        return f"{round(minutes / 60)} h"
    return f"{round(minutes / 1440)} d"


@login_required
@require_POST
def practice_rate(request, pk: int):
    card = get_card_for_user(request.user, pk)
    form = RatingForm(request.POST)
    if form.is_valid():
        card_review(user=request.user, question=card.question, rating=Rating(form.cleaned_data["rating"]))
    return redirect("quiz:practice")


@login_required
def progress(request):
    rows = progress_by_topic(user=request.user)
    answered = Answer.objects.filter(attempt__user=request.user, score__isnull=False)
    return render(request, "quiz/progress.html", {
        "rows": rows, "summary": practice_summary(user=request.user),
        "answered": answered.count(), "kinds": Kind,
        "attempts": Attempt.objects.filter(user=request.user).exclude(state=Attempt.State.IN_PROGRESS)[:10],
        "over_time": progress_over_time(user=request.user),
    })
