"""python manage.py export_gguf --adapter DIR --out FILE.gguf [--quant q8_0] [--adapter-only] [--bundle ZIP]

Only parses arguments and calls mlcore.gguf_export.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mlcore import gguf_export
from mlcore.gguf_export import DEFAULT_QUANT
from mlcore.prompt import PromptFormat
from mlcore.registry import ModelNotAvailable, load_tokenizer


class Command(BaseCommand):
    help = "Export a trained adapter (merged into its base model, or alone) as GGUF for llama.cpp and Ollama."

    def add_arguments(self, parser):
        parser.add_argument("--adapter", required=True, help="adapter directory written by finetune (or a lab run)")
        parser.add_argument("--out", required=True, help="the .gguf file to write")
        # Checked by mlcore (not argparse choices) so the error lists what THIS machine can make.
        parser.add_argument("--quant", default=DEFAULT_QUANT, help="f16, q8_0 (default) or q4_0; q4_k_m with llama-quantize")
        parser.add_argument("--adapter-only", action="store_true", help="write only the LoRA adapter, for llama.cpp --lora")
        parser.add_argument("--bundle", help="also write a zip with the GGUF, an Ollama Modelfile and a README")

    def handle(self, *args, **options):
        if not options["out"].endswith(".gguf"):
            raise CommandError("--out must name a .gguf file")
        if options["adapter_only"] and options["bundle"]:
            raise CommandError("--bundle needs a merged model; leave out --adapter-only")
        self.verbosity = options["verbosity"]
        try:
            if options["adapter_only"]:
                result = gguf_export.export_adapter(options["adapter"], options["out"])
            else:
                gguf_export.check_quant(options["quant"])  # before the minute of merging
                result = gguf_export.export_merged(options["adapter"], options["out"], quant=options["quant"],
                                                   progress=self._progress)
                if options["bundle"]:
                    self._bundle(options, result)
        except (gguf_export.ExportError, ModelNotAvailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"wrote {result.path} ({result.size / 1e6:.1f} MB, {result.quant})")

    def _progress(self, fraction: float, message: str) -> None:
        if self.verbosity > 1:
            self.stderr.write(f"{fraction:4.0%} {message}")

    def _bundle(self, options, result) -> None:
        from mlcore.classify import read_labels  # mlcore.classify imports torch: only when a model runs

        config = gguf_export.check_adapter_dir(options["adapter"])
        labels = read_labels(options["adapter"])
        gguf_export.write_bundle(options["bundle"], result.path, tokenizer=load_tokenizer(config["base_model"]), labels=labels,
                                 model_name=Path(result.path).stem, prompt=PromptFormat.for_adapter(options["adapter"], labels))
        self.stdout.write(f"wrote {options['bundle']}")
