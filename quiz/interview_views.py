"""Mock interview pages: thin views over quiz.services.interviews (parse, authorize, call, render).

Every step is a plain form post and a redirect, so a reload never re-submits and the page works
without JavaScript; static/js/interview.js only runs the visible countdown and submits at zero,
and htmx autosaves the answer as it is typed."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from quiz.access import get_interview_answer_for_user, get_interview_for_user
from quiz.forms import InterviewStartForm
from quiz.judge import judge_configured
from quiz.models import Interview, InterviewAnswer
from quiz.services.interviews import (
    InterviewError,
    Step,
    interview_answer_self_grade,
    interview_end,
    interview_grade,
    interview_pause,
    interview_report,
    interview_resume,
    interview_save_draft,
    interview_start,
    interview_step,
    interview_submit,
    seconds_left,
    stage_seconds,
)


def _home_context(user, form) -> dict:
    interviews = Interview.objects.filter(user=user)
    return {"form": form, "judge": judge_configured(),
            "open_interviews": interviews.filter(state=Interview.State.IN_PROGRESS),
            "past_interviews": interviews.filter(state=Interview.State.FINISHED).annotate(questions=Count("answers"))[:20]}


@login_required
def interview_home(request):
    return render(request, "quiz/interview_home.html", _home_context(request.user, InterviewStartForm()))


@login_required
@require_POST
def interview_begin(request):
    form = InterviewStartForm(request.POST)
    if form.is_valid():
        try:
            interview = interview_start(user=request.user, **form.cleaned_data)
        except InterviewError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("quiz:interview", pk=interview.pk)
    return render(request, "quiz/interview_home.html", _home_context(request.user, form), status=400)


def _finish(request, interview: Interview):
    """The last answer is in: grade (judge calls happen here) and show the report."""
    interview_grade(interview=interview)
    return redirect("quiz:interview-report", pk=interview.pk)


def _render_step(request, interview: Interview, step: Step, *, error: str = "", text: str | None = None, status: int = 200):
    answer = step.answer
    interview.refresh_from_db()
    answers = list(interview.answers.only("position", "stage", "skipped", "interview_id"))
    left = max(0, seconds_left(interview, answer))
    on_follow_up = answer.stage == InterviewAnswer.Stage.FOLLOW_UP
    if text is None:
        text = answer.follow_up_text if on_follow_up else answer.text
    return render(request, "quiz/interview_question.html", {
        "interview": interview, "answer": answer, "question": answer.question, "answers": answers, "total": len(answers),
        "on_follow_up": on_follow_up, "text": text, "error": error,
        "seconds_left": left, "seconds_left_text": _mmss(left), "stage_seconds_text": _mmss(stage_seconds(interview, answer)),
        "low_seconds": stage_seconds(interview, answer) // 4,  # the clock turns red for the last quarter
    }, status=status)


def _mmss(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


@login_required
def interview_page(request, pk: int):
    """The question (or follow-up) being asked now; the resume point after a reload or a break."""
    interview = get_interview_for_user(request.user, pk)
    step = interview_step(interview=interview)
    if step.closed_by_clock is not None:
        messages.warning(request, f"Time ran out on question {step.closed_by_clock.position} while you were away: "
                                  "what you had typed is kept for the report.")
    if step.finished:
        return _finish(request, interview)
    if step.answer is None:
        return redirect("quiz:interview-report", pk=interview.pk)
    return _render_step(request, interview, step)


def _position(request) -> int:
    try:
        return int(request.POST.get("position", ""))
    except ValueError:
        return 0


@login_required
@require_POST
def interview_answer(request, pk: int):
    interview = get_interview_for_user(request.user, pk)
    action = request.POST.get("go", "answer")
    if action not in ("answer", "skip", "timeout"):
        action = "answer"
    text = request.POST.get("text", "")
    try:
        step = interview_submit(interview=interview, position=_position(request), stage=request.POST.get("stage", ""),
                                text=text, action=action)
    except InterviewError as exc:
        current = interview_step(interview=interview)
        if action == "answer" and not text.strip() and current.answer is not None \
                and current.answer.position == _position(request):
            # An empty answer: say so next to the box, keep the page as it was.
            return _render_step(request, interview, current, error=str(exc), text=text, status=400)
        messages.error(request, str(exc))
        return redirect("quiz:interview", pk=interview.pk)
    if step.finished:
        return _finish(request, interview)
    return redirect("quiz:interview", pk=interview.pk)


@login_required
@require_POST
def interview_autosave(request, pk: int):
    """htmx: saves the text as it is typed; answers with a one-line status."""
    interview = get_interview_for_user(request.user, pk)
    try:
        answer = interview_save_draft(interview=interview, position=_position(request),
                                      stage=request.POST.get("stage", ""), text=request.POST.get("text", ""))
    except InterviewError as exc:
        return render(request, "quiz/_save_status.html", {"error": str(exc)})
    return render(request, "quiz/_save_status.html", {"saved_at": answer.saved_at})


@login_required
@require_POST
def interview_pause_view(request, pk: int):
    interview = get_interview_for_user(request.user, pk)
    interview_pause(interview=interview)
    return redirect("quiz:interview", pk=interview.pk)


@login_required
@require_POST
def interview_resume_view(request, pk: int):
    interview = get_interview_for_user(request.user, pk)
    interview_resume(interview=interview)
    return redirect("quiz:interview", pk=interview.pk)


@login_required
@require_POST
def interview_stop(request, pk: int):
    interview = get_interview_for_user(request.user, pk)
    if interview_end(interview=interview):
        return _finish(request, interview)
    return redirect("quiz:interview-report", pk=interview.pk)


@login_required
def interview_report_view(request, pk: int):
    interview = get_interview_for_user(request.user, pk)
    if interview.is_open:
        return redirect("quiz:interview", pk=interview.pk)
    return render(request, "quiz/interview_report.html", {"interview": interview, "judge": judge_configured(),
                                                          **interview_report(interview=interview)})


@login_required
@require_POST
def interview_regrade(request, pk: int):
    """Send the answers the judge failed on (or had no quota for) to it again."""
    interview = get_interview_for_user(request.user, pk)
    if interview.is_open:
        return redirect("quiz:interview", pk=interview.pk)
    if not judge_configured():
        messages.error(request, "No LLM judge is configured: tick the rubric points you covered instead.")
    else:
        judged = interview_grade(interview=interview, retry=True)
        left = interview.answers.filter(score__isnull=True).count()
        if left:
            messages.warning(request, f"The judge graded {judged} answer{'s' if judged != 1 else ''}; {left} still "
                                      "not graded: retry later or tick the rubric points yourself.")
        else:
            messages.success(request, f"The judge graded {judged} answer{'s' if judged != 1 else ''}.")
    return redirect("quiz:interview-report", pk=interview.pk)


@login_required
@require_POST
def interview_self_grade(request, pk: int):
    answer = get_interview_answer_for_user(request.user, pk)
    try:
        interview_answer_self_grade(answer=answer, covered=request.POST.getlist("covered"))
    except InterviewError as exc:
        messages.error(request, str(exc))
    return redirect(reverse("quiz:interview-report", args=[answer.interview_id]) + f"#answer-{answer.position}")
