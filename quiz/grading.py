"""Automatic grading of choice and numeric answers, and the grade → FSRS rating rule. Pure functions."""

import math
import re
from dataclasses import dataclass

from fsrs import Rating

_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class NotANumber(ValueError):
    """Raised with a message the learner can read."""


def parse_number(text: str) -> float:
    """Accept what people type: "64", "-0.5", "1,234" (thousands separators), "1e3", "2.5E-4"."""
    raw = (text or "").strip().replace("\u2212", "-")  # a typographic minus sign is still a minus
    if not raw:
        raise NotANumber("No answer given.")
    candidate = raw.replace(",", "") if _THOUSANDS_RE.match(raw) else raw
    if not _NUMBER_RE.match(candidate):
        if "," in raw:
            raise NotANumber(f"“{raw}” is not a number: use a dot for decimals and commas only between groups of "
                             "three digits (e.g. 1,234.5).")
        raise NotANumber(f"“{raw}” is not a number: type digits only, e.g. 64, 0.25, 1,234 or 1e3.")
    value = float(candidate)
    if not math.isfinite(value):
        raise NotANumber(f"“{raw}” is too large to be a useful answer.")
    return value


@dataclass
class Grade:
    score: float  # 0..1
    feedback: str


TIMES = "x"  # the bank's unit for a ratio ("4x faster"): written 4×, asked as "how many times"


def with_unit(number: str, unit: str) -> str:
    """A number as the learner reads it: "4×" for a ratio, "16 GB" for the rest."""
    if unit == TIMES:
        return f"{number}×"
    return f"{number} {unit}" if unit else number


def unit_hint(unit: str) -> str:
    """What to type, after "Answer with a number" / "Your answer"; "" without a unit."""
    if unit == TIMES:
        return "how many times, e.g. 4 for 4×"
    return unit


def grade_numeric(text: str, answer: float, tolerance: float, unit: str = "") -> Grade:
    """Full marks when |x - answer| <= tolerance (absolute); a hair of slack absorbs float rounding."""
    try:
        value = parse_number(text)
    except NotANumber as exc:
        return Grade(0.0, str(exc))
    slack = 1e-9 * max(1.0, abs(answer))
    expected = with_unit(_fmt(answer), unit)
    if abs(value - answer) <= tolerance + slack:
        return Grade(1.0, f"Correct: {expected}" + (f" (± {_fmt(tolerance)})." if tolerance else "."))
    return Grade(0.0, f"You answered {_fmt(value)}; the answer is {expected}"
                 + (f" (± {_fmt(tolerance)})." if tolerance else "."))


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def grade_choices(kind: str, correct_ids: set[int], all_ids: set[int], selected: list[int]) -> Grade:
    """Single: 1 or 0. Multi: (correct picked - wrong picked) / number correct, floored at 0.

    Ids that are not choices of the question (a tampered form) are ignored.
    """
    picked = {int(i) for i in selected if int(i) in all_ids}
    if not picked:
        return Grade(0.0, "No answer given.")
    right, wrong = len(picked & correct_ids), len(picked - correct_ids)
    if kind == "single":
        if len(picked) == 1 and right == 1:
            return Grade(1.0, "Correct.")
        return Grade(0.0, "Not quite: the right choice is marked ✓, with why under each choice.")
    score = max(0.0, (right - wrong) / len(correct_ids)) if correct_ids else 0.0
    if score == 1.0:
        return Grade(1.0, "Correct: you picked exactly the right choices.")
    missed = len(correct_ids - picked)
    return Grade(score, f"{right} of {len(correct_ids)} correct choices picked, {wrong} wrong, {missed} missed "
                 "(partial credit = (right - wrong) / correct, not below 0).")


def rating_for_score(score: float) -> Rating:
    """How a graded answer updates its FSRS card: < 0.5 Again, < 0.75 Hard, < 1 Good, 1 Easy."""
    if score < 0.5:
        return Rating.Again
    if score < 0.75:
        return Rating.Hard
    if score < 1.0:
        return Rating.Good
    return Rating.Easy
