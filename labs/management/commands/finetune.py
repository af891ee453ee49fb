"""python manage.py finetune --out DIR [options]: LoRA fine-tuning from the command line.

Defaults are TrainConfig's defaults, i.e. the default lab. Only parses arguments and calls mlcore.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

# option -> TrainConfig field (options left unset keep the TrainConfig default)
FIELDS = {
    "base_model": "base_model",
    "dataset": "dataset",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "lr": "learning_rate",
    "r": "lora_r",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "warmup_ratio": "warmup_ratio",
    "schedule": "schedule",
    "max_length": "max_length",
    "max_examples": "train_limit",
    "seed": "seed",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
    "continue_from": "continue_from",
    "device": "device",
}


class Command(BaseCommand):
    help = "Fine-tune a base model with LoRA into a sentiment classifier; writes the adapter, config and metrics."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="output directory for the adapter, config and metrics")
        parser.add_argument("--base-model", help="registry name (default: smollm2-135m-instruct)")
        parser.add_argument("--dataset", help="bundled dataset: reviews or reviews-mixed (default: reviews)")
        parser.add_argument("--data", help="train on a JSONL/CSV file of text,label rows instead (split 65/12/23)")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
        parser.add_argument("--lr", type=float, help="peak learning rate")
        parser.add_argument("--r", type=int, help="LoRA rank")
        parser.add_argument("--alpha", type=int, help="LoRA alpha")
        parser.add_argument("--dropout", type=float, help="LoRA dropout")
        parser.add_argument("--targets", help="comma-separated LoRA target modules, e.g. q_proj,v_proj")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--grad-accum", type=int)
        parser.add_argument("--warmup-ratio", type=float)
        parser.add_argument("--schedule", choices=["linear", "cosine", "constant"])
        parser.add_argument("--max-length", type=int)
        parser.add_argument("--max-examples", type=int, help="train on only N examples")
        parser.add_argument("--no-mask", action="store_true", help="supervise every token, not just the answer")
        parser.add_argument("--seed", type=int)
        parser.add_argument("--eval-every", type=int, help="steps between validation passes (0 = each epoch)")
        parser.add_argument("--checkpoint-every", type=int, help="steps between resumable checkpoints")
        parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
        parser.add_argument("--continue-from", help="start from an existing adapter directory")
        parser.add_argument("--zero-shot", action="store_true", help="also score the base model without adapter")
        parser.add_argument("--device", choices=["cpu", "cuda"])

    def handle(self, *args, **options):
        from mlcore.data import DatasetError, load_bundled, parse_upload, split_examples
        from mlcore.masking import MaskingError
        from mlcore.registry import ModelNotAvailable
        from mlcore.train import ConfigError, TrainConfig, train

        overrides = {field: options[opt] for opt, field in FIELDS.items() if options[opt] is not None}
        if options["targets"]:
            overrides["target_modules"] = tuple(t.strip() for t in options["targets"].split(",") if t.strip())
        if options["no_mask"]:
            overrides["mask_prompt"] = False
        if options["zero_shot"]:
            overrides["zero_shot"] = True
        try:
            if options["data"]:
                path = options["data"]
                with open(path, "rb") as f:
                    dataset = split_examples(parse_upload(f.read(), path), 0, name=path)
                overrides.setdefault("dataset", f"file:{path}")
            else:
                dataset = load_bundled(overrides.get("dataset", TrainConfig.dataset))
            config = TrainConfig(**overrides)
            config.validate()
            bar = ProgressBar(sys.stderr)
            result = train(config, dataset, options["out"], report=bar.report, resume=options["resume"])
            bar.close()
        except (ConfigError, DatasetError, MaskingError, ModelNotAvailable, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if result.cancelled:
            raise CommandError("training was cancelled")
        self.stdout.write(format_metrics("test", result.metrics))
        if result.zero_shot:
            self.stdout.write(format_metrics("zero-shot", result.zero_shot))
        self.stdout.write(
            f"{result.steps} steps in {result.elapsed_s:.0f} s ({result.samples_per_s:.1f} samples/s); "
            f"adapter, train_config.json and metrics.json in {result.out_dir}"
        )


def format_metrics(name: str, metrics: dict) -> str:
    lines = [f"{name}: accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}  (n={metrics['n']})"]
    for label, row in metrics["per_class"].items():
        lines.append(f"  {label:<9} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}")
    lines.append("  confusion (rows true, cols predicted): " + json.dumps(metrics["confusion_matrix"]))
    return "\n".join(lines)


class ProgressBar:
    """tqdm on stderr when installed, else one text line per 10 steps."""

    def __init__(self, stream):
        self.stream = stream
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.tqdm_cls, self.bar = tqdm, None

    def report(self, event):
        if event["type"] == "step":
            if self.tqdm_cls is not None:
                if self.bar is None:
                    self.bar = self.tqdm_cls(total=event["total_steps"], file=self.stream, unit="step")
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{event['loss']:.3f}", lr=f"{event['lr']:.1e}")
            elif event["step"] % 10 == 0 or event["step"] == event["total_steps"]:
                self.stream.write(
                    f"step {event['step']}/{event['total_steps']} loss {event['loss']:.3f} eta {event['eta_s']:.0f}s\n"
                )
        elif event["type"] == "eval":
            message = (
                f"validation @ step {event['step']}: loss {event['loss']:.3f} "
                f"accuracy {event['accuracy']:.3f} macro-F1 {event['macro_f1']:.3f}"
            )
            (self.bar.write if self.bar is not None else lambda m: self.stream.write(m + "\n"))(message)

    def close(self):
        if self.bar is not None:
            self.bar.close()
