"""python manage.py evaluate --adapter DIR --data FILE [--json OUT]: score a classifier on labelled text.

FILE is JSONL ({"text", "label"} per line) or CSV/TSV with text,label columns, e.g. the real
film-review sentences in ../shared/data/sst3-dev.jsonl. Prints macro-F1, accuracy, the confusion
matrix, and for the polar rows (labelled positive or negative) P(positive) vs P(negative)
accuracy and the share called neutral. Without --adapter the base model is scored zero-shot.
Only parses arguments and calls mlcore.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from mlcore.data import DatasetError, read_labelled
from mlcore.registry import ModelNotAvailable


def format_report(name: str, result: dict) -> str:
    """The figures of mlcore.evaluate.evaluate() as a few plain lines."""
    metrics, polar = result["metrics"], result["polar"]
    labels = metrics["labels"]
    lines = [f"{name}: {metrics['n']} rows  macro-F1 {metrics['macro_f1']:.3f}  accuracy {metrics['accuracy']:.3f}"]
    if polar:
        lines.append(
            f"  polar rows {polar['n']}: P(positive) vs P(negative) accuracy {polar['polar_accuracy']:.3f}, "
            f"called neutral {polar['polar_called_neutral']:.1%}"
        )
    width = max(len(label) for label in labels) + 2
    lines.append("  confusion matrix (rows: true label, columns: predicted)")
    lines.append("  " + " " * width + "".join(f"{label:>{width}}" for label in labels))
    for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
        lines.append(f"  {label:<{width}}" + "".join(f"{count:>{width}}" for count in row))
    lines.append("  per class: " + ", ".join(
        f"{label} P {c['precision']:.2f} R {c['recall']:.2f} F1 {c['f1']:.2f}" for label, c in metrics["per_class"].items()
    ))
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Score a trained adapter (or the base model) on a labelled JSONL/CSV file: F1, confusion matrix, polar figures."

    def add_arguments(self, parser):
        parser.add_argument("--adapter", help="adapter directory written by finetune (or a lab run); none = zero-shot")
        parser.add_argument("--base-model", help="base model (default: the adapter's, else smollm2-135m-instruct)")
        parser.add_argument("--data", required=True, help="JSONL with {text, label} per line, or CSV/TSV with text,label")
        parser.add_argument("--json", help="also write the metrics and every prediction to this JSON file")
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, **options):
        from mlcore.classify import load_classifier  # mlcore.classify imports torch: only when a model runs
        from mlcore.evaluate import evaluate

        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            examples = read_labelled(options["data"])
            classifier = load_classifier(options["base_model"], options["adapter"])
        except DatasetError as exc:
            raise CommandError(f"{options['data']}: {exc}") from exc
        except (FileNotFoundError, ModelNotAvailable, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        stray = sorted({e.label for e in examples} - set(classifier.labels))
        if stray:
            raise CommandError(f"{options['data']}: label(s) {', '.join(stray)} are not among the classifier's "
                               f"({', '.join(classifier.labels)})")
        result = evaluate(classifier, examples, batch_size=options["batch_size"])
        self.stdout.write(format_report(options["data"], result))
        if options["json"]:
            try:
                with open(options["json"], "w", encoding="utf-8") as f:
                    json.dump(result, f, ensure_ascii=False, indent=1)
            except OSError as exc:
                raise CommandError(f"cannot write {options['json']}: {exc.strerror}") from exc
