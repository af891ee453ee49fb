"""Quiz work that spans models or has side effects, one module per area:

    bank      the question bank's files <-> database (bank_load, bank_export)
    attempts  quizzes: start, answer, submit, grade (judge or self-assessment)
    cards     FSRS spaced-repetition cards (card_review, card_add, card_override)

Read-only queries are selectors, in quiz.selectors. The names below are re-exported so callers
can keep writing `from quiz.services import attempt_grade`.
"""

from quiz.selectors import curated_export, end_of_day, practice_next, practice_summary, progress_by_topic, question_canonical
from quiz.services.attempts import (
    MAX_ANSWER_CHARS,
    MAX_QUIZ_LENGTH,
    AttemptClosed,
    answer_save,
    answer_self_assess,
    attempt_build,
    attempt_grade,
    attempt_start,
    attempt_start_curated,
)
from quiz.services.bank import LoadReport, bank_export, bank_load
from quiz.services.cards import PREVIEW_SCHEDULER, SCHEDULER, card_add, card_override, card_review

__all__ = [
    "MAX_ANSWER_CHARS", "MAX_QUIZ_LENGTH", "PREVIEW_SCHEDULER", "SCHEDULER", "AttemptClosed", "LoadReport",
    "answer_save", "answer_self_assess", "attempt_build", "attempt_grade", "attempt_start", "attempt_start_curated",
    "bank_export", "bank_load", "card_add", "card_override", "card_review", "curated_export", "end_of_day",
    "practice_next", "practice_summary", "progress_by_topic", "question_canonical",
]
