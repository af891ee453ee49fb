"""python manage.py classify (--adapter DIR | --gguf FILE) (--text "..." | --input FILE --output FILE).

Only parses arguments and calls mlcore. Without --adapter or --gguf the base model classifies
zero-shot. --gguf checks an exported file: through llama.cpp when llama-cpp-python is installed,
otherwise through transformers' GGUF loader (--backend picks one).
"""

import json

from django.core.management.base import BaseCommand, CommandError

from mlcore.data import DatasetError, read_texts
from mlcore.registry import ModelNotAvailable


class Command(BaseCommand):
    help = "Classify reviews with a trained adapter: one JSON line {text, label, probs} per review."

    def add_arguments(self, parser):
        parser.add_argument("--adapter", help="adapter directory written by finetune (or a lab run)")
        parser.add_argument("--base-model", help="base model (default: the adapter's, else smollm2-135m-instruct)")
        parser.add_argument("--gguf", help="a .gguf file written by export_gguf, instead of --adapter")
        parser.add_argument("--backend", default="auto", choices=["auto", "llama.cpp", "transformers"],
                            help="with --gguf: the runtime that reads it (auto: llama.cpp when installed)")
        parser.add_argument("--text", help="classify this one text and print its JSON line")
        parser.add_argument("--input", help="JSONL with {\"text\"} per line, or CSV/TSV with a text column")
        parser.add_argument("--output", help="where to write the JSON lines (default: stdout)")
        parser.add_argument("--batch-size", type=int, default=32)

    def handle(self, *args, **options):
        from mlcore.classify import load_classifier  # mlcore.classify imports torch: only when a model runs

        if (options["text"] is None) == (options["input"] is None):
            raise CommandError("give either --text or --input")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["gguf"] and (options["adapter"] or options["base_model"]):
            raise CommandError("--gguf holds the whole model: leave out --adapter and --base-model")
        try:
            texts = [options["text"]] if options["text"] is not None else read_texts(options["input"])
            if options["gguf"]:
                # mlcore.gguf_classify imports torch: only when a model runs
                from mlcore.gguf_classify import load_gguf_classifier

                classifier = load_gguf_classifier(options["gguf"], backend=options["backend"])
            else:
                classifier = load_classifier(options["base_model"], options["adapter"])
        except DatasetError as exc:
            raise CommandError(f"{options['input']}: {exc}") from exc
        except (FileNotFoundError, ModelNotAvailable, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        predictions = classifier.predict(texts, batch_size=options["batch_size"])
        lines = (
            json.dumps({"text": t, "label": p.label, "probs": {k: round(v, 6) for k, v in p.probs.items()}}, ensure_ascii=False)
            for t, p in zip(texts, predictions, strict=True)
        )
        if options["output"]:
            try:
                with open(options["output"], "w", encoding="utf-8") as f:
                    for line in lines:
                        f.write(line + "\n")
            except OSError as exc:
                raise CommandError(f"cannot write {options['output']}: {exc.strerror}") from exc
            self.stderr.write(f"{len(texts)} predictions written to {options['output']}")
        else:
            for line in lines:
                self.stdout.write(line)
