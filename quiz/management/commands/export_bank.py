"""Write the database's questions back to bank files (same format), so admin edits can be committed."""

from pathlib import Path

import yaml
from django.core.management.base import BaseCommand

from quiz.bank import BANK_DIR, CURATED_FILE
from quiz.selectors import curated_export
from quiz.services import bank_export


class Command(BaseCommand):
    help = "Export every question to <out>/<slug>.md (default quiz/bank/) and the curated quizzes to quiz/curated.yaml."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None, help=f"output directory (default {BANK_DIR})")
        parser.add_argument("--curated-out", type=Path, default=None,
                            help="curated quizzes YAML to write (default quiz/curated.yaml, none when --out is given)")

    def handle(self, *args, out=None, curated_out=None, **options):
        count = bank_export(out_dir=out or BANK_DIR)
        self.stdout.write(f"exported {count} questions to {out or BANK_DIR}")
        if curated_out is None and out is None:
            curated_out = CURATED_FILE
        if curated_out is not None:
            quizzes = curated_export()
            curated_out.write_text(yaml.safe_dump(quizzes, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
            self.stdout.write(f"exported {len(quizzes)} curated quizzes to {curated_out}")
