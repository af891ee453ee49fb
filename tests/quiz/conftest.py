import textwrap
from pathlib import Path

import pytest

from quiz.models import Choice, Question
from quiz.vocab import Status
from tests.fakes.openai_server import fake_openai  # noqa: F401 - the fixture, for the judge tests

RUBRIC = ["Names the low-rank matrices A and B", "Says the base weights stay frozen", "Gives the scaling alpha / r"]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The shared user fixtures hash a password each; the real hasher costs ~0.4 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_question(db):
    """Create a question of any kind; choice questions get sensible choices."""
    counter = {"n": 0}

    def make(kind="open", *, status=Status.PUBLISHED, choices=None, **fields) -> Question:
        counter["n"] += 1
        defaults = {
            "slug": f"{kind}-question-{counter['n']}", "title": f"A {kind} question {counter['n']}", "kind": kind,
            "difficulty": "intermediate", "topics": ["lora", "peft"], "status": status, "hint": "Think about ranks.",
            "rubric": list(RUBRIC), "prompt": "What does **LoRA** train?", "answer": "Two small matrices, *A* and *B*.",
        }
        if kind == "numeric":
            defaults.update(numeric_answer=64.0, tolerance=0.0, unit="examples")
        defaults.update(fields)
        question = Question.objects.create(**defaults)
        if kind in ("single", "multi") and choices is None:
            choices = [("right", True), ("wrong", False), ("also wrong", False)] if kind == "single" else \
                [("right 1", True), ("right 2", True), ("wrong 1", False), ("wrong 2", False)]
        for position, (text, correct) in enumerate(choices or []):
            Choice.objects.create(question=question, position=position, text=text, correct=correct, explanation=f"why {text}")
        return question

    return make


VALID_FILE = """\
---
slug: {slug}
title: What does r=16 mean in a LoraConfig?
kind: open
difficulty: intermediate
topics: [lora, peft, hyperparameters]
very_often: false
lab: rank-sweep
status: published
hint: >-
  The rank of the update.
rubric:
  - "r is the rank of the update"
  - "Parameters grow linearly with r"
  - "alpha / r scales the update"
---
## Question

What does `r=16` mean?

## Answer

The rank of the low-rank update **BA**.
"""

SINGLE_FILE = """\
---
slug: {slug}
title: Which matrices does LoRA train?
kind: single
difficulty: beginner
topics: [lora]
very_often: true
status: published
hint: Not the base weights.
rubric:
  - "A and B are trained"
  - "W stays frozen"
  - "B starts at zero"
choices:
  - text: "A and B"
    correct: true
    explanation: "The adapter."
  - text: "W"
    correct: false
    explanation: "Frozen."
  - text: "All of them"
    correct: false
    explanation: "That is full fine-tuning."
---
## Question

Which matrices are trained?

## Answer

Only **A** and **B**.
"""

NUMERIC_FILE = """\
---
slug: {slug}
title: Effective batch size
kind: numeric
difficulty: beginner
topics: [hyperparameters]
very_often: false
status: draft
hint: Multiply.
rubric:
  - "batch x accumulation x devices"
  - "4 x 8 x 2"
  - "= 64"
answer: 64
tolerance: 0
unit: examples
---
## Question

4 per device, 8 accumulation steps, 2 GPUs?

## Answer

64.
"""


def write_bank(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


@pytest.fixture
def good_bank(tmp_path) -> Path:
    return write_bank(tmp_path / "bank", {
        "lora-rank-r16-meaning.md": VALID_FILE.format(slug="lora-rank-r16-meaning"),
        "lora-which-matrices.md": SINGLE_FILE.format(slug="lora-which-matrices"),
        "effective-batch.md": NUMERIC_FILE.format(slug="effective-batch"),
    })
