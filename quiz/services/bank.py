"""The question bank's sync between the files and the database (load, export)."""

from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from quiz.bank import CuratedQuiz, QuestionData, render_question_file
from quiz.models import Choice, Question, QuestionRevision, Quiz, QuizItem
from quiz.selectors import QUESTION_FIELDS, question_canonical


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_files: list[str] = field(default_factory=list)
    quizzes: dict[str, int] = field(default_factory=lambda: {"created": 0, "updated": 0, "unchanged": 0})


def _set_choices(question: Question, choices: list[dict]) -> None:
    # Update in place by position, so learners' past answers (choice ids) keep pointing at the same option.
    existing = list(question.choices.all())
    for position, choice in enumerate(choices):
        if position < len(existing):
            row = existing[position]
            row.position, row.text = position, choice["text"]
            row.correct, row.explanation = choice["correct"], choice["explanation"]
            row.save()
        else:
            Choice.objects.create(question=question, position=position, **choice)
    for row in existing[len(choices):]:
        row.delete()


@transaction.atomic
def bank_load(*, questions: list[QuestionData], curated: list[CuratedQuiz] | None = None) -> LoadReport:
    """Upsert the files into the DB in one transaction. Questions missing from the files are kept
    (learners' history points at them) and only reported."""
    report = LoadReport()
    existing = {q.slug: q for q in Question.objects.prefetch_related("choices")}
    for data in questions:
        wanted = data.canonical()
        question = existing.get(data.slug)
        if question is None:
            question = Question(slug=data.slug)
            _apply(question, wanted)
            question.save()
            _set_choices(question, wanted["choices"])
            report.created.append(data.slug)
            continue
        current = question_canonical(question)
        if current == wanted:
            report.unchanged.append(data.slug)
            continue
        changes = {name: [current[name], wanted[name]] for name in wanted if current[name] != wanted[name]}
        _apply(question, wanted)
        question.save()
        _set_choices(question, wanted["choices"])
        QuestionRevision.objects.create(question=question, source=QuestionRevision.Source.LOAD_BANK, changes=changes)
        report.updated.append(data.slug)
    in_files = {data.slug for data in questions}
    report.not_in_files = sorted(set(existing) - in_files)
    for quiz in curated or []:
        report.quizzes[_upsert_quiz(quiz)] += 1
    return report


def _apply(question: Question, data: dict) -> None:
    for name in QUESTION_FIELDS:
        setattr(question, name, data[name])


def _upsert_quiz(data: CuratedQuiz) -> str:
    quiz, created = Quiz.objects.get_or_create(slug=data.slug, defaults={"title": data.title})
    current = (quiz.title, quiz.description, quiz.time_limit_minutes,
               list(quiz.items.values_list("question__slug", flat=True)))
    wanted = (data.title, data.description, data.time_limit_minutes, data.questions)
    if not created and current == wanted:
        return "unchanged"
    quiz.title, quiz.description, quiz.time_limit_minutes = data.title, data.description, data.time_limit_minutes
    quiz.save()
    quiz.items.all().delete()
    ids = dict(Question.objects.filter(slug__in=data.questions).values_list("slug", "id"))
    QuizItem.objects.bulk_create(QuizItem(quiz=quiz, question_id=ids[slug], position=i) for i, slug in enumerate(data.questions))
    return "created" if created else "updated"


def bank_export(*, out_dir: Path) -> int:
    """Write every question (any status) back as files, overwriting a file with the same stem in place."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = {path.stem: path for path in out_dir.rglob("*.md")}
    count = 0
    for question in Question.objects.prefetch_related("choices").order_by("slug"):
        path = where.get(question.slug, out_dir / f"{question.slug}.md")
        text = render_question_file(question_canonical(question))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        count += 1
    return count
