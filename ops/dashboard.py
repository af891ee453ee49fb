"""The learner's home after login: what is due, how the last quiz went, the last run, and the
next lab to try. Built from the apps' read-only selectors; the home view only renders this."""

from __future__ import annotations

from labs import selectors as labs_selectors
from quiz import selectors as quiz_selectors


def learner_home(*, user) -> dict:
    last_quiz, open_quiz = quiz_selectors.latest_attempts(user=user)
    return {"practice": quiz_selectors.practice_summary(user=user), "last_quiz": last_quiz, "open_quiz": open_quiz,
            "last_run": labs_selectors.last_run(user=user), "next_lab": labs_selectors.next_lab(user=user)}
