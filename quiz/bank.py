"""The question bank as files: one markdown file per question with YAML front matter.

Parsing and validation are strict and pure (no database), so `load_bank --check` and the tests
can validate a directory without touching the DB. Every problem is reported as
`<file>: <field>: <reason>`.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.conf import settings

from content.markdown import FrontMatterError, split_front_matter
from labs.catalog import lab_slugs
from quiz.vocab import TOPICS, Difficulty, Kind, Status

BANK_DIR = Path(settings.BASE_DIR) / "quiz" / "bank"
CURATED_FILE = Path(settings.BASE_DIR) / "quiz" / "curated.yaml"

SLUG_RE = re.compile(r"^[a-z0-9-]{3,80}$")
REQUIRED = ("slug", "title", "kind", "difficulty", "topics", "very_often", "status", "hint", "rubric")
OPTIONAL = ("lab", "choices", "answer", "tolerance", "unit", "follow_ups")
CHOICE_KEYS = {"text", "correct", "explanation"}
_QUESTION_RE = re.compile(r"^## Question[ \t]*$", re.MULTILINE)
_ANSWER_RE = re.compile(r"^## Answer[ \t]*$", re.MULTILINE)

# Every fenced code block in a question or an answer says what it is, in its info string
# (Python-Markdown's attribute form, so the renderer shows a normal code block):
#   ```{.python .runnable}  runs as shown against the pinned libraries; tests/quiz/test_bank_code.py
#                           executes it. It may use two names the test defines: TOKENIZER_PATH (a
#                           folder with the bundled SmolLM2-135M-Instruct tokenizer) and
#                           TINY_MODEL_PATH (the tiny random test model with that tokenizer).
#   ```{.LANG .sketch}      shown, never run: it needs a GPU, a download or a service, or is not code.
CODE_MARKERS = ("runnable", "sketch")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*(.*)$")


@dataclass
class CodeBlock:
    number: int  # 1-based, in order of appearance within its section
    line: int  # 1-based line of the opening fence within its section
    lang: str
    marker: str  # one of CODE_MARKERS, or "" when the block has none
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    """The fenced code blocks of a markdown section, with their language and marker."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        opening = _FENCE_RE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening.group(1), opening.group(2).strip()
        body, j = [], i + 1
        while j < len(lines):
            closing = _FENCE_RE.match(lines[j])
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) \
                    and not closing.group(2).strip():
                break
            body.append(lines[j])
            j += 1
        words = info[1:-1].split() if info.startswith("{") and info.endswith("}") else info.split()
        classes = [w.lstrip(".") for w in words]
        marker = next((c for c in classes if c in CODE_MARKERS), "")
        lang = next((c for c in classes if c not in CODE_MARKERS), "")
        blocks.append(CodeBlock(len(blocks) + 1, i + 1, lang, marker if info.startswith("{") else "",
                                "\n".join(body)))
        i = j + 1
    return blocks


def _check_code_blocks(path, section: str, text: str) -> None:
    for block in code_blocks(text):
        where = f"code block {block.number} (line {block.line} of the section)"
        if not block.marker:
            raise BankError(path, section, f"{where} has no marker: open it with ```{{.python .runnable}} "
                                           f"(a test runs it) or ```{{.{block.lang or 'text'} .sketch}} (never run)")
        if block.marker == "runnable" and block.lang != "python":
            raise BankError(path, section, f"{where} is marked runnable but is not python ({block.lang or 'no language'})")


class BankError(Exception):
    def __init__(self, path: Path | str, field_name: str, reason: str):
        self.path, self.field, self.reason = str(path), field_name, reason
        super().__init__(f"{self.path}: {field_name}: {reason}")


@dataclass
class QuestionData:
    """One question as the files describe it; `canonical()` is what load compares and export writes."""

    slug: str
    title: str
    kind: str
    difficulty: str
    topics: list[str]
    very_often: bool
    status: str
    hint: str
    rubric: list[str]
    prompt: str
    answer: str
    lab: str = ""
    choices: list[dict] = field(default_factory=list)
    numeric_answer: float | None = None
    tolerance: float | None = None
    unit: str = ""
    follow_ups: list[str] = field(default_factory=list)
    path: str = ""

    def canonical(self) -> dict:
        return {
            "slug": self.slug, "title": self.title, "kind": self.kind, "difficulty": self.difficulty,
            "topics": list(self.topics), "very_often": self.very_often, "lab": self.lab, "status": self.status,
            "hint": self.hint, "rubric": list(self.rubric), "prompt": self.prompt, "answer": self.answer,
            "choices": [{"text": c["text"], "correct": c["correct"], "explanation": c["explanation"]} for c in self.choices],
            "numeric_answer": self.numeric_answer, "tolerance": self.tolerance, "unit": self.unit,
            "follow_ups": list(self.follow_ups),
        }


# --- parsing ----------------------------------------------------------------------------------

def parse_question_file(path: Path) -> QuestionData:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BankError(path, "file", f"not UTF-8 ({exc.reason})") from None
    try:
        meta, body = split_front_matter(text)
    except FrontMatterError as exc:
        raise BankError(path, "front matter", str(exc)) from None
    prompt, answer = _split_body(path, body)
    return validate_question(path, meta, prompt, answer)


def _split_body(path: Path, body: str) -> tuple[str, str]:
    question = _QUESTION_RE.search(body)
    if not question:
        raise BankError(path, "## Question", "missing section: the body needs a '## Question' line")
    if body[:question.start()].strip():
        raise BankError(path, "## Question", "the body must start with the '## Question' section")
    answer = _ANSWER_RE.search(body, question.end())
    if not answer:
        raise BankError(path, "## Answer", "missing section: the body needs a '## Answer' line after '## Question'")
    prompt, answer_text = body[question.end():answer.start()].strip(), body[answer.end():].strip()
    if not prompt:
        raise BankError(path, "## Question", "section is empty")
    if not answer_text:
        raise BankError(path, "## Answer", "section is empty")
    return prompt, answer_text


def _text(path, meta, name, *, max_length=None) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BankError(path, name, "must be a non-empty string")
    if max_length and len(value) > max_length:
        raise BankError(path, name, f"longer than {max_length} characters")
    return value.strip()


def _number(path, name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BankError(path, name, f"must be a finite number, got {value!r}")
    return float(value)


def validate_question(path: Path, meta: dict, prompt: str, answer: str) -> QuestionData:
    unknown = sorted(set(meta) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise BankError(path, unknown[0], "unknown field (allowed: " + ", ".join(REQUIRED + OPTIONAL) + ")")
    for name in REQUIRED:
        if name not in meta:
            raise BankError(path, name, "missing required field")

    slug = meta["slug"]
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise BankError(path, "slug", f"{slug!r} must match [a-z0-9-]{{3,80}}")
    if slug != Path(path).stem:
        raise BankError(path, "slug", f"{slug!r} must equal the file name stem {Path(path).stem!r}")
    title = _text(path, meta, "title", max_length=200)
    kind = meta["kind"]
    if kind not in Kind.values:
        raise BankError(path, "kind", f"unknown kind {kind!r} (allowed: {', '.join(Kind.values)})")
    difficulty = meta["difficulty"]
    if difficulty not in Difficulty.values:
        raise BankError(path, "difficulty", f"unknown difficulty {difficulty!r} (allowed: {', '.join(Difficulty.values)})")
    status = meta["status"]
    if status not in Status.values:
        raise BankError(path, "status", f"unknown status {status!r} (allowed: {', '.join(Status.values)})")
    topics = meta["topics"]
    if not isinstance(topics, list) or not topics:
        raise BankError(path, "topics", "must be a non-empty list")
    for topic in topics:
        if topic not in TOPICS:
            raise BankError(path, "topics", f"unknown topic {topic!r} (allowed: {', '.join(TOPICS)})")
    if len(set(topics)) != len(topics):
        raise BankError(path, "topics", "lists a topic twice")
    if not isinstance(meta["very_often"], bool):
        raise BankError(path, "very_often", "must be true or false")
    lab = meta.get("lab") or ""
    if lab and lab not in lab_slugs():
        raise BankError(path, "lab", f"unknown lab {lab!r} (allowed: {', '.join(lab_slugs())})")
    hint = _text(path, meta, "hint")
    rubric = meta["rubric"]
    if not isinstance(rubric, list) or not 3 <= len(rubric) <= 6:
        raise BankError(path, "rubric", "must be a list of 3 to 6 items")
    if not all(isinstance(item, str) and item.strip() for item in rubric):
        raise BankError(path, "rubric", "every item must be a non-empty string")

    data = QuestionData(slug=slug, title=title, kind=kind, difficulty=difficulty, topics=list(topics),
                        very_often=meta["very_often"], status=status, hint=hint, rubric=[r.strip() for r in rubric],
                        prompt=prompt, answer=answer, lab=lab, follow_ups=_follow_ups(path, meta), path=str(path))
    _validate_kind_fields(path, meta, data)
    _check_code_blocks(path, "## Question", prompt)
    _check_code_blocks(path, "## Answer", answer)
    return data


def _follow_ups(path, meta: dict) -> list[str]:
    """What an interviewer asks after the answer. Only open questions have them: a choice or a number
    is graded as it stands, and a follow-up there would have no model answer to compare with."""
    if "follow_ups" not in meta:
        return []
    value = meta["follow_ups"]
    if meta.get("kind") != Kind.OPEN:
        raise BankError(path, "follow_ups", f"only open questions have follow-ups, this one is {meta.get('kind')}")
    if not isinstance(value, list) or not value:
        raise BankError(path, "follow_ups", "must be a non-empty list of strings (leave the field out for none)")
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or not item.strip():
            raise BankError(path, "follow_ups", f"item {number} must be a non-empty string, got {item!r}")
    cleaned = [item.strip() for item in value]
    if len(set(cleaned)) != len(cleaned):
        raise BankError(path, "follow_ups", "lists the same follow-up twice")
    return cleaned


def _validate_kind_fields(path, meta: dict, data: QuestionData) -> None:
    is_choice = data.kind in (Kind.SINGLE, Kind.MULTI)
    if is_choice:
        data.choices = validate_choices(path, data.kind, meta.get("choices"))
    elif "choices" in meta:
        raise BankError(path, "choices", f"only single and multi questions have choices, this one is {data.kind}")
    if data.kind == Kind.NUMERIC:
        for name in ("answer", "tolerance"):
            if name not in meta:
                raise BankError(path, name, "missing: numeric questions need answer and tolerance")
        data.numeric_answer = _number(path, "answer", meta["answer"])
        data.tolerance = _number(path, "tolerance", meta["tolerance"])
        if data.tolerance < 0:
            raise BankError(path, "tolerance", "must be >= 0")
        unit = meta.get("unit", "")
        if unit is None or not isinstance(unit, str | int | float) or isinstance(unit, bool):
            raise BankError(path, "unit", "must be a string")
        data.unit = str(unit).strip()
    else:
        for name in ("answer", "tolerance", "unit"):
            if name in meta:
                raise BankError(path, name, f"only numeric questions have {name}, this one is {data.kind}")


def validate_choices(path, kind: str, choices) -> list[dict]:
    """Shared by the loader and the admin: 3-6 choices, single = exactly 1 correct, multi >= 2."""
    if not isinstance(choices, list) or not 3 <= len(choices) <= 6:
        raise BankError(path, "choices", f"{kind} questions need a list of 3 to 6 choices")
    cleaned = []
    for number, choice in enumerate(choices, 1):
        if not isinstance(choice, dict):
            raise BankError(path, "choices", f"choice {number} must be a mapping with text, correct, explanation")
        if set(choice) != CHOICE_KEYS:
            raise BankError(path, "choices", f"choice {number} must have exactly the keys text, correct, explanation")
        text = choice["text"]
        if not isinstance(text, str | int | float) or isinstance(text, bool) or not str(text).strip():
            raise BankError(path, "choices", f"choice {number}: text must be a non-empty string")
        if not isinstance(choice["correct"], bool):
            raise BankError(path, "choices", f"choice {number}: correct must be true or false")
        if not isinstance(choice["explanation"], str) or not choice["explanation"].strip():
            raise BankError(path, "choices", f"choice {number}: explanation must be a non-empty string")
        cleaned.append({"text": str(choice["text"]).strip(), "correct": choice["correct"],
                        "explanation": choice["explanation"].strip()})
    correct = sum(c["correct"] for c in cleaned)
    if kind == Kind.SINGLE and correct != 1:
        raise BankError(path, "choices", f"single questions need exactly 1 correct choice, found {correct}")
    if kind == Kind.MULTI and correct < 2:
        raise BankError(path, "choices", f"multi questions need at least 2 correct choices, found {correct}")
    return cleaned


def read_bank(directory: Path) -> tuple[list[QuestionData], list[BankError]]:
    """Parse every *.md under `directory`; returns the questions and every problem found (all files are read)."""
    questions, errors, seen = [], [], {}
    for path in sorted(Path(directory).rglob("*.md")):
        try:
            data = parse_question_file(path)
        except BankError as exc:
            errors.append(exc)
            continue
        if data.slug in seen:
            errors.append(BankError(path, "slug", f"duplicate slug {data.slug!r}, also used by {seen[data.slug]}"))
            continue
        seen[data.slug] = path
        questions.append(data)
    return questions, errors


# --- curated quizzes --------------------------------------------------------------------------

@dataclass
class CuratedQuiz:
    slug: str
    title: str
    description: str
    time_limit_minutes: int | None
    questions: list[str]


def read_curated(path: Path, known_slugs: set[str]) -> tuple[list[CuratedQuiz], list[BankError]]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [], [BankError(path, "file", f"invalid YAML: {exc}")]
    if not isinstance(raw, list):
        return [], [BankError(path, "file", "must be a list of quizzes")]
    quizzes, errors, seen = [], [], set()
    for number, item in enumerate(raw, 1):
        where = f"quiz {number}"
        if not isinstance(item, dict) or not {"slug", "title", "questions"} <= set(item):
            errors.append(BankError(path, where, "needs slug, title and questions"))
            continue
        extra = set(item) - {"slug", "title", "description", "time_limit_minutes", "questions"}
        slug, questions, limit = item["slug"], item["questions"], item.get("time_limit_minutes")
        if extra:
            errors.append(BankError(path, f"{where}.{sorted(extra)[0]}", "unknown field"))
        elif not isinstance(slug, str) or not SLUG_RE.match(slug) or slug in seen:
            errors.append(BankError(path, f"{where}.slug", f"{slug!r} must be a unique [a-z0-9-]{{3,80}} slug"))
        elif not isinstance(questions, list) or not questions or len(set(questions)) != len(questions):
            errors.append(BankError(path, f"{slug}.questions", "must be a non-empty list of distinct question slugs"))
        elif unknown := [s for s in questions if s not in known_slugs]:
            errors.append(BankError(path, f"{slug}.questions", f"unknown question slug {unknown[0]!r}"))
        elif limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            errors.append(BankError(path, f"{slug}.time_limit_minutes", "must be a positive whole number of minutes"))
        else:
            seen.add(slug)
            quizzes.append(CuratedQuiz(slug=slug, title=str(item["title"]), description=str(item.get("description") or ""),
                                       time_limit_minutes=limit, questions=list(questions)))
    return quizzes, errors


# --- writing ----------------------------------------------------------------------------------

def _quoted(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar (same escapes), and the bank quotes this way.
    return json.dumps(text, ensure_ascii=False)


def _plain_or_quoted(text: str) -> str:
    try:
        if text and text == text.strip() and yaml.safe_load(f"k: {text}") == {"k": text}:
            return text
    except yaml.YAMLError:
        pass
    return _quoted(text)


def _folded(text: str, width: int = 96) -> str:
    """A `>-` block wrapped at single spaces; text that folding would alter is double-quoted instead."""
    if not text or text != text.strip() or any(c in text for c in "\n\r\t") or "  " in text:
        return _quoted(text)
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) + 2 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return ">-\n" + "\n".join(f"  {line}" for line in lines)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def render_question_file(data: dict) -> str:
    """The file text for a canonical question dict (the inverse of parse_question_file), in the
    bank's house style so an export of an unedited question leaves git with little to show."""
    out = [f"slug: {data['slug']}", f"title: {_plain_or_quoted(data['title'])}", f"kind: {data['kind']}",
           f"difficulty: {data['difficulty']}", f"topics: [{', '.join(data['topics'])}]",
           f"very_often: {'true' if data['very_often'] else 'false'}"]
    if data["lab"]:
        out.append(f"lab: {data['lab']}")
    out += [f"status: {data['status']}", f"hint: {_folded(data['hint'])}", "rubric:"]
    out += [f"  - {_quoted(point)}" for point in data["rubric"]]
    if data["kind"] in (Kind.SINGLE, Kind.MULTI):
        out.append("choices:")
        for choice in data["choices"]:
            out += [f"  - text: {_quoted(choice['text'])}", f"    correct: {'true' if choice['correct'] else 'false'}",
                    f"    explanation: {_quoted(choice['explanation'])}"]
    if data["kind"] == Kind.NUMERIC:
        out += [f"answer: {_number_text(data['numeric_answer'])}", f"tolerance: {_number_text(data['tolerance'])}"]
        if data["unit"]:
            out.append(f"unit: {_quoted(data['unit'])}")
    if data["follow_ups"]:
        out.append("follow_ups:")
        out += [f"  - {_quoted(item)}" for item in data["follow_ups"]]
    front = "\n".join(out) + "\n"
    if not _front_matter_matches(front, data):
        # Belt and braces: never write a file that would load differently; PyYAML's own output always does.
        front = yaml.safe_dump(_meta(data), sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n## Question\n\n{data['prompt'].strip()}\n\n## Answer\n\n{data['answer'].strip()}\n"


def _meta(data: dict) -> dict:
    meta = {"slug": data["slug"], "title": data["title"], "kind": data["kind"], "difficulty": data["difficulty"],
            "topics": list(data["topics"]), "very_often": data["very_often"]}
    if data["lab"]:
        meta["lab"] = data["lab"]
    meta.update({"status": data["status"], "hint": data["hint"], "rubric": list(data["rubric"])})
    if data["kind"] in (Kind.SINGLE, Kind.MULTI):
        meta["choices"] = [dict(c) for c in data["choices"]]
    if data["kind"] == Kind.NUMERIC:
        meta["answer"], meta["tolerance"] = data["numeric_answer"], data["tolerance"]
        if data["unit"]:
            meta["unit"] = data["unit"]
    if data["follow_ups"]:
        meta["follow_ups"] = list(data["follow_ups"])
    return meta


def _front_matter_matches(front: str, data: dict) -> bool:
    try:
        return yaml.safe_load(front) == _meta(data)
    except yaml.YAMLError:
        return False
