"""What learner-sent text and JSON must be before anything stores or tokenizes it.

Shared by the API (inference) and uploads (labs): PostgreSQL refuses a NUL or a lone surrogate in
text and jsonb columns (a 500 there, while SQLite stores them), the tokenizer fails on a lone
surrogate, and Python's json raises a bare ValueError (not a JSONDecodeError) on an integer longer
than the interpreter's digit limit, which a caller that only catches decode errors turns into a 500.
"""

from __future__ import annotations

import json
import sys

# Python's own limit (sys.int_info.default_max_str_digits, 4,300): json's int() refuses more.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300


def text_problem(text: str) -> str | None:
    """Why a text cannot be stored or classified (or None): a NUL, or a lone surrogate, which
    JSON's \\uD800 escapes can carry but which is not Unicode text."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000): remove it"
    try:
        text.encode("utf-8")  # fails exactly on a surrogate, at C speed
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(text[exc.start]):04X}), which is not valid Unicode text"
    return None


class NumberTooLong(ValueError):
    """A JSON integer with more digits than Python converts; `path` names where it was ("max_tokens",
    "messages[0].content"), so the error can name the field."""

    def __init__(self, path: str, digits: int):
        self.path, self.digits = path, digits
        where = path or "the body"
        super().__init__(f"{where} is a number of {digits:,} digits; at most {MAX_INT_DIGITS:,} are accepted")


class _LongDigits(str):
    """An integer's digits json could not convert, kept as text until the path to it is known."""


def _int(digits: str):
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        return _LongDigits(digits)
    return int(digits)


def loads(raw, **kwargs):
    """json.loads, except that an over-long integer raises NumberTooLong naming its path instead of
    a bare ValueError. Other errors are json's own (JSONDecodeError, RecursionError)."""
    found = []

    def parse_int(digits: str):
        value = _int(digits)
        if isinstance(value, _LongDigits):
            found.append(value)
        return value

    value = json.loads(raw, parse_int=parse_int, **kwargs)
    if found:  # rare: only then walk the document to say where
        path = _path_to(value, lambda item: isinstance(item, _LongDigits))
        raise NumberTooLong(path or "", len(found[0].lstrip("-")))
    return value


def _path_to(value, match, path: str = "") -> str | None:
    if match(value):
        return path
    if isinstance(value, dict):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _path_to(item, match, where)
        if found is not None:
            return found
    return None
