"""Datasets: the bundled review sets, learner uploads, and splitting.

(A package rather than data.py because the data files and build_splits.py live beside it.)

The bundled sets live as committed JSONL split files under mlcore/data/<name>/ (built once by
mlcore/data/build_splits.py, described in mlcore/data/DATA_CARD.md):
- "reviews": positive / negative / neutral
- "reviews-mixed": the same splits plus "mixed" reviews, split the same way, so a test text
  of one variant is never a training text of the other.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent  # this package holds the data files too

# Canonical label order: classifiers, prompts and confusion matrices list labels in this order.
LABEL_ORDER = ("positive", "negative", "neutral", "mixed")
DEFAULT_LABELS = LABEL_ORDER[:3]  # the "reviews" labels: what a model with no labels of its own classifies into
BUNDLED = {
    "reviews": "Product reviews, 3 labels (positive, negative, neutral)",
    "reviews-mixed": "Product reviews, 4 labels (adds mixed)",
}
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.65, 0.12, 0.23)  # train / validation / test

MAX_UPLOAD_ROWS = 5000
MAX_UPLOAD_BYTES = 2_000_000
MIN_UPLOAD_ROWS = 10


class DatasetError(ValueError):
    """A dataset cannot be used; `line` is the 1-based line of the file at fault, if any."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class Dataset:
    name: str
    labels: list[str]  # in LABEL_ORDER order
    train: list[Example] = field(default_factory=list)
    validation: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {label: n}}, for data cards and the UI."""
        return {
            split: {label: sum(e.label == label for e in getattr(self, split)) for label in self.labels}
            for split in SPLITS
        }


def ordered_labels(labels) -> list[str]:
    """The distinct labels among `labels`, in LABEL_ORDER."""
    present = set(labels)
    return [label for label in LABEL_ORDER if label in present]


def read_jsonl(path: Path) -> list[Example]:
    with open(path, encoding="utf-8") as f:
        return [Example(row["text"], row["label"]) for row in map(json.loads, f) if row]


# Plain sentences written for this project that no split contains (DATA_CARD.md): every run is
# scored on them as a "does it generalise?" check beside its test split.
PROBE_FILE = DATA_DIR / "probe.jsonl"


def load_probe(labels) -> list[Example]:
    """The probe sentences whose label is among `labels`."""
    return [e for e in read_jsonl(PROBE_FILE) if e.label in set(labels)]


def load_bundled(name: str) -> Dataset:
    if name not in BUNDLED:
        raise DatasetError(f"unknown dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    splits = {split: read_jsonl(DATA_DIR / name / f"{split}.jsonl") for split in SPLITS}
    labels = ordered_labels(e.label for e in splits["train"])
    return Dataset(name=name, labels=labels, **splits)


def stratified_split(items: list, seed: int, fractions=SPLIT_FRACTIONS, *, label_of=lambda e: e.label) -> tuple[list, ...]:
    """Split each label's items by `fractions`, deterministically for a seed.

    Every split gets its share of every label (rounded; a label with at least 3 items has one
    in each split), so even a small upload has a test example per label.
    """
    rng = random.Random(seed)
    by_label: dict[str, list] = defaultdict(list)
    for item in items:
        by_label[label_of(item)].append(item)
    parts: list[list] = [[] for _ in fractions]
    for label in ordered_labels(by_label) + sorted(set(by_label) - set(LABEL_ORDER)):
        group = by_label[label][:]
        rng.shuffle(group)
        n = len(group)
        sizes = [round(n * f) for f in fractions[1:]]
        if n >= len(fractions):
            sizes = [max(1, s) for s in sizes]
        sizes = [n - sum(sizes)] + sizes
        start = 0
        for part, size in zip(parts, sizes, strict=True):
            part.extend(group[start : start + size])
            start += size
    for part in parts:  # mix labels; the order inside a split carries no meaning
        rng.shuffle(part)
    return tuple(parts)


def split_examples(examples: list[Example], seed: int = 0, *, name: str = "upload") -> Dataset:
    """A Dataset from an upload without splits: stratified 65/12/23 train/validation/test."""
    train, validation, test = stratified_split(examples, seed)
    return Dataset(name, ordered_labels(e.label for e in examples), train, validation, test)


# --- uploads ---------------------------------------------------------------------------------


def parse_upload(
    raw: bytes, filename: str, *, max_rows: int = MAX_UPLOAD_ROWS, max_bytes: int = MAX_UPLOAD_BYTES
) -> list[Example]:
    """Examples from an uploaded JSONL ({"text", "label"} per line) or CSV (header with text,label).

    Raises DatasetError naming the offending line for anything a learner could get wrong.
    """
    if len(raw) > max_bytes:
        raise DatasetError(f"the file is {len(raw):,} bytes; the limit is {max_bytes:,} bytes")
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError("the file is not UTF-8 text (save it as UTF-8)", line=line) from None
    suffix = Path(filename).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(content)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(content, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise DatasetError(f"unsupported file type {suffix or filename!r}: upload .jsonl or .csv")
    return _validate_rows(rows, max_rows)


def _read_text_file(path) -> tuple[str, str]:
    """(content, lower-case suffix) of a UTF-8 file given on the command line."""
    path = Path(path)
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None
    return content, path.suffix.lower()


def read_labelled(path, *, max_rows: int = 1_000_000) -> list[Example]:
    """Labelled examples to score from a file (JSONL {"text", "label"} or CSV/TSV text,label).

    The rules of an upload, except that a repeated text is allowed: an evaluation set is what
    it is (SST's dev split repeats one sentence), and nothing is trained on it.
    """
    content, suffix = _read_text_file(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(content)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(content, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise DatasetError(f"unsupported file type {suffix or Path(path).name!r}: use .jsonl, .csv or .tsv")
    return _validate_rows(rows, max_rows, unique=False)


def _jsonl_rows(content: str):
    """(line number, text, label) per non-blank line."""
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg})", line=number) from None
        if not isinstance(row, dict):
            raise DatasetError('each line must be a JSON object like {"text": "...", "label": "positive"}', line=number)
        missing = [key for key in ("text", "label") if key not in row]
        if missing:
            raise DatasetError(f"missing key {' and '.join(map(repr, missing))}", line=number)
        yield number, row["text"], row["label"]


def _csv_rows(content: str, delimiter: str):
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DatasetError(f"invalid CSV ({exc})", line=1) from None
    columns = [name.strip().lower() for name in header]
    missing = [name for name in ("text", "label") if name not in columns]
    if missing:
        raise DatasetError(
            f"the header must name the columns text and label; missing {' and '.join(missing)}", line=1
        )
    text_col, label_col = columns.index("text"), columns.index("label")
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"invalid CSV ({exc})", line=start) from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(text_col, label_col):
            raise DatasetError(f"expected {len(columns)} columns, found {len(row)}", line=start)
        yield start, row[text_col], row[label_col]


def _validate_rows(rows, max_rows: int, *, unique: bool = True) -> list[Example]:
    examples: list[Example] = []
    first_line_of: dict[str, int] = {}
    for line, text, label in rows:
        if len(examples) >= max_rows:
            raise DatasetError(f"too many rows: the limit is {max_rows:,}", line=line)
        if not isinstance(text, str) or not text.strip():
            raise DatasetError("empty text", line=line)
        if not isinstance(label, str):
            raise DatasetError(f"label must be a string, got {json.dumps(label)}", line=line)
        label = label.strip().lower()
        if label not in LABEL_ORDER:
            raise DatasetError(
                f"unknown label {label!r}: labels must be one of {', '.join(LABEL_ORDER)}", line=line
            )
        text = text.strip()
        if unique and text in first_line_of:
            raise DatasetError(f"duplicate text: the same review as line {first_line_of[text]}", line=line)
        first_line_of[text] = line
        examples.append(Example(text, label))
    if len(examples) < MIN_UPLOAD_ROWS:
        raise DatasetError(
            f"only {len(examples)} example(s); at least {MIN_UPLOAD_ROWS} are needed to train and test"
        )
    labels = ordered_labels(e.label for e in examples)
    if len(labels) < 2:
        raise DatasetError(f"every example has the label {labels[0]!r}; a classifier needs at least two labels")
    return examples


def read_texts(path) -> list[str]:
    """Texts to classify from a file: JSONL with a "text" key per line, or CSV/TSV with a text column.

    Raises DatasetError naming the line for a file that cannot be read that way.
    """
    content, suffix = _read_text_file(path)
    texts: list[str] = []
    if suffix in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"invalid JSON ({exc.msg})", line=number) from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DatasetError('each line must be a JSON object with a "text" string', line=number)
            texts.append(row["text"])
    elif suffix in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(content, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            if "text" not in header:
                raise DatasetError("the header must name a text column", line=1)
            column = header.index("text")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) <= column:
                    raise DatasetError(f"expected {len(header)} columns, found {len(row)}", line=reader.line_num)
                texts.append(row[column])
        except csv.Error as exc:
            raise DatasetError(f"invalid CSV ({exc})", line=reader.line_num) from None
    else:
        raise DatasetError(f"unsupported file type {suffix or Path(path).name!r}: use .jsonl, .csv or .tsv")
    return texts
