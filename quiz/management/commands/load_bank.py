"""Load the question bank files (and the curated quizzes) into the database, or only validate them."""

from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from quiz.bank import BANK_DIR, CURATED_FILE, read_bank, read_curated
from quiz.services import bank_load


class Command(BaseCommand):
    help = ("Upsert quiz/bank/*.md by slug in one transaction (a bad file writes nothing), and the curated "
            "quizzes of quiz/curated.yaml. --check validates only.")

    def add_arguments(self, parser):
        parser.add_argument("--path", type=Path, default=None, help=f"bank directory (default {BANK_DIR})")
        parser.add_argument("--curated", type=Path, default=None,
                            help="curated quizzes YAML (default quiz/curated.yaml, none when --path is given)")
        parser.add_argument("--check", action="store_true", help="validate only; print counts by kind and difficulty")

    def handle(self, *args, path=None, curated=None, check=False, **options):
        directory = path or BANK_DIR
        if not directory.is_dir():
            raise CommandError(f"{directory}: not a directory")
        if curated is None and path is None and CURATED_FILE.exists():
            curated = CURATED_FILE
        questions, errors = read_bank(directory)
        quizzes = []
        if curated is not None:
            quizzes, curated_errors = read_curated(curated, {q.slug for q in questions})
            errors += curated_errors
        if errors:
            for error in errors:
                self.stderr.write(str(error))
            raise CommandError(f"{len(errors)} problem(s) in the bank; nothing was written.")
        if not questions:
            raise CommandError(f"{directory}: no question files (*.md) found; nothing was written.")
        if check:
            self._print_counts(questions, quizzes)
            return

        report = bank_load(questions=questions, curated=quizzes)
        self.stdout.write(f"questions: {len(report.created)} created, {len(report.updated)} updated, "
                          f"{len(report.unchanged)} unchanged")
        for slug in report.updated:
            self.stdout.write(f"  updated: {slug}")
        if report.not_in_files:
            self.stdout.write(self.style.WARNING(
                f"{len(report.not_in_files)} question(s) in the database but not in the files (kept, with their "
                f"learner history): {', '.join(report.not_in_files)}"))
        if curated is not None:
            q = report.quizzes
            self.stdout.write(f"curated quizzes: {q['created']} created, {q['updated']} updated, {q['unchanged']} unchanged")

    def _print_counts(self, questions, quizzes):
        self.stdout.write(self.style.SUCCESS(f"{len(questions)} questions OK"))
        for label, counter in (("kind", Counter(q.kind for q in questions)),
                               ("difficulty", Counter(q.difficulty for q in questions)),
                               ("status", Counter(q.status for q in questions))):
            self.stdout.write(f"by {label}: " + ", ".join(f"{name} {n}" for name, n in sorted(counter.items())))
        if quizzes:
            self.stdout.write(f"curated quizzes OK: {len(quizzes)}")
