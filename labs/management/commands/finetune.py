"""python manage.py finetune --out DIR [options]: LoRA fine-tuning from the command line.

One option per TrainConfig setting, generated from its declaration (mlcore.config.setting):
--learning-rate (or --lr), --lora-r (or --r), --no-mask, --targets q_proj,v_proj, ...
Defaults are TrainConfig's defaults, i.e. the default lab. Only parses arguments and calls mlcore.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from mlcore.config import ConfigError, ConfigField, TrainConfig, config_fields
from mlcore.data import DatasetError, load_bundled, parse_upload, split_examples
from mlcore.masking import MaskingError
from mlcore.registry import ModelNotAvailable

try:
    from tqdm import tqdm
except ImportError:  # optional: without it, a text line every 10 steps
    tqdm = None


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def add_config_option(parser, f: ConfigField) -> None:
    """--field-name (plus the declared short names) for one setting; unset leaves the default."""
    s = f.setting
    flag = "--" + f.name.replace("_", "-")
    default = "none" if f.default is None and s.none_means == "—" else s.display(f.default)
    help_text = f"{s.help} (default: {default})".replace("%", "%%")
    if f.kind == "bool":  # a flag that turns the setting away from its default
        flag = flag if not f.default else "--no-" + flag[2:]
        parser.add_argument(flag, *s.cli, dest=f.name, action="store_const", const=not f.default, default=None,
                            help=f"{s.label}: {'on' if not f.default else 'off'} (default {s.display(f.default)}). {s.help}")
        return
    kwargs = {"dest": f.name, "default": None, "help": help_text}
    if f.kind == "tuple":
        kwargs.update(type=comma_list, metavar=",".join(s.choices[:2]) + ",..." if s.choices else "A,B,...")
    elif f.kind in ("int", "float"):
        kwargs["type"] = int if f.kind == "int" else float
    if s.choices and f.kind != "tuple":
        kwargs["choices"] = s.choices
    parser.add_argument(flag, *s.cli, **kwargs)


class Command(BaseCommand):
    help = "Fine-tune a base model with LoRA into a sentiment classifier; writes the adapter, config and metrics."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="output directory for the adapter, config and metrics")
        parser.add_argument("--data", help="train on a JSONL/CSV file of text,label rows instead (split 65/12/23)")
        parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
        for f in config_fields():
            add_config_option(parser, f)

    def handle(self, *args, **options):
        from mlcore.train import train  # mlcore.train imports torch: only when a model runs

        overrides = {f.name: options[f.name] for f in config_fields() if options[f.name] is not None}
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
