"""The learner's home after login: what is due, how the last quiz went, the last run, and the
next lab to try. Read-only queries over the three apps; the home view only renders this."""

from __future__ import annotations


def learner_home(*, user) -> dict:
    from labs.models import Lab, Run
    from quiz.models import Attempt
    from quiz.selectors import practice_summary

    last_quiz = (Attempt.objects.filter(user=user).exclude(state=Attempt.State.IN_PROGRESS)
                 .order_by("-submitted_at", "-id").first())
    open_quiz = Attempt.objects.filter(user=user, state=Attempt.State.IN_PROGRESS).order_by("-started_at").first()
    last_run = Run.objects.filter(owner=user).select_related("lab").order_by("-created_at", "-id").first()
    tried = Run.objects.filter(owner=user, lab__isnull=False).values("lab_id")
    # The catalog's order is the suggested path (the default lab first); skip what was already run.
    next_lab = Lab.objects.filter(is_active=True).exclude(id__in=tried).order_by("order", "slug").first()
    return {"practice": practice_summary(user=user), "last_quiz": last_quiz, "open_quiz": open_quiz,
            "last_run": last_run, "next_lab": next_lab}
