"""The training configuration: TrainConfig, each field declared once with what it means and which
values it takes (setting(...)), the checks, and which examples a run trains on.

    config = TrainConfig.from_dict(values)
    config.validate()  # ConfigError({field: message}) for every value out of range

No torch here: the web side (the launch form, the results pages, cost estimates, the finetune
command's options) reads the configuration without loading the training loop (mlcore.train).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import LABEL_ORDER, Dataset, Example
from .prompt import DEFAULT_PROMPT_VERSION, SYSTEM_PROMPTS
from .registry import BASE_MODELS, DEFAULT_BASE_MODEL

SCHEDULES = ("linear", "cosine", "constant")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Fields that may change between a checkpoint and its resumption (they do not change the maths
# of the steps already taken).
RESUMABLE_CHANGES = {"eval_every", "checkpoint_every", "zero_shot", "device"}
# Fields added after adapters were saved, each with the value that trains exactly as before it
# existed: a train_config.json without the field was trained with that value.
NEUTRAL_DEFAULTS = {"label_noise": 0.0}


class ConfigError(ValueError):
    """One message per out-of-range field: {field: message}. The web form shows them per field."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


# --- how each setting is declared ----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a TrainConfig field means to people and which values it takes, declared once beside
    the field. validate(), the launch form (labs.forms), the results pages (labs.presenters) and
    the finetune command's options are all generated from these declarations."""

    label: str  # the form's label, the results tables' row name, the subject of error messages
    help: str = ""  # one sentence for the form and for `finetune --help`
    low: float | None = None  # a number's range, both ends included unless low_open / high_open
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()  # allowed values of a text setting (of each item, for a tuple)
    check: Callable[[Any], str | None] | None = None  # a rule of its own instead: returns the message
    shown: bool = True  # in the launch form and on the results pages; False: command line and code only
    cli: tuple[str, ...] = ()  # short option names kept for the command line, e.g. "--lr"
    none_means: str = "—"  # how None reads on the results pages
    zero_means: str = ""  # how 0 reads there, when 0 means something else

    def display(self, value) -> str:
        if value is None:
            return self.none_means
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        if value == 0 and self.zero_means:
            return self.zero_means
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


def setting(default, **declared):
    """A TrainConfig field with its Setting (see above)."""
    return field(default=default, metadata={"setting": Setting(**declared)})


@dataclass(frozen=True)
class ConfigField:
    """One TrainConfig field as the generated form, options and checks see it."""

    name: str
    kind: str  # "int", "float", "bool", "str" or "tuple" (a tuple of str)
    optional: bool  # None is allowed
    default: Any
    setting: Setting

    def problem(self, value) -> str | None:
        """Why `value` is not allowed for this field, or None when it is."""
        if self.optional and value is None:
            return None
        s = self.setting
        if s.check is not None:
            return s.check(value)
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and s.low <= value <= s.high
            return None if ok else f"must be a whole number from {s.low} to {s.high}"
        if self.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > s.low if s.low_open else value >= s.low) and (value < s.high if s.high_open else value <= s.high)
            left, right = "(" if s.low_open else "[", ")" if s.high_open else "]"
            return None if ok else f"must be a number in {left}{s.low:g}, {s.high:g}{right}"
        if self.kind == "tuple":
            items = list(value) if isinstance(value, (list, tuple)) else []
            ok = bool(items) and all(item in s.choices for item in items)
            return None if ok else f"choose one or more of {', '.join(s.choices)}"
        if s.choices:
            return None if value in s.choices else f"must be one of {', '.join(s.choices)}"
        return None if isinstance(value, str) and value else f"must name the {s.label.lower()}"


def config_fields() -> list[ConfigField]:
    """Every TrainConfig field with its declaration, in declaration order."""
    found = []
    for f in fields(TrainConfig):
        kinds = [part.strip() for part in str(f.type).split("|")]
        kind = next(part for part in kinds if part != "None").split("[")[0]
        # A field added without setting(...) still validates by type; tests require a declaration.
        declared = f.metadata.get("setting") or Setting(label=f.name.replace("_", " "), shown=False)
        found.append(ConfigField(f.name, kind, "None" in kinds, f.default, declared))
    return found


def _check_labels(value) -> str | None:
    labels = list(value) if isinstance(value, (list, tuple)) else [value]
    unknown = [label for label in labels if label not in LABEL_ORDER]
    if unknown:
        return f"unknown label(s) {', '.join(map(repr, unknown))}; use {', '.join(LABEL_ORDER)}"
    if len(labels) < 2 or len(set(labels)) != len(labels):
        return "needs at least two different labels"
    return None


def _check_base_model(value) -> str | None:
    return None if value in BASE_MODELS else f"unknown base model; choose one of {', '.join(BASE_MODELS)}"


def _check_adapter_dir(value) -> str | None:
    ok = isinstance(value, str) and (Path(value) / "adapter_config.json").exists()
    return None if ok else "is not an adapter directory (no adapter_config.json)"


def _check_device(value) -> str | None:
    ok = value in ("cpu", "cuda") or str(value).startswith("cuda:")
    return None if ok else 'must be "cpu", "cuda" or empty (automatic)'


# --- the configuration -------------------------------------------------------------------------


@dataclass
class TrainConfig:
    # --- what to train -----------------------------------------------------------------------
    base_model: str = setting(DEFAULT_BASE_MODEL, label="Base model", check=_check_base_model,
                              help="The instruct model to adapt, by its registry name (mlcore.registry).")
    # A bundled dataset's name, or a label like "upload:42" for other data (recorded only).
    dataset: str = setting("reviews", label="Dataset", help="A bundled dataset (reviews, reviews-mixed) or an upload.")
    labels: tuple[str, ...] | None = setting(None, label="Labels", check=_check_labels, shown=False,
                                             help="The label set, in prompt order; empty = the dataset's labels.")
    continue_from: str | None = setting(None, label="Continue from", check=_check_adapter_dir, shown=False,
                                        help="Adapter directory to train further, instead of a fresh LoRA.")
    # --- LoRA --------------------------------------------------------------------------------
    lora_r: int = setting(16, label="LoRA r", low=1, high=256, cli=("--r",),
                          help="Rank of the update B·A (A: r × d_in, B: d_out × r).")
    lora_alpha: int = setting(32, label="LoRA alpha", low=1, high=1024, cli=("--alpha",),
                              help="The update is scaled by alpha / r.")
    # No dropout by default (since 3 December; bench/README "Dropout"): one epoch sees each review
    # once, so there is little to regularise, and on a CPU drawing the masks (one per adapted
    # layer, 140 a step) was a quarter of a step's time. Three seeds, top 20 blocks: SST-3 dev
    # macro-F1 0.565 against 0.559 with 0.05, polar accuracy 0.859 both, validation 0.838 / 0.854.
    lora_dropout: float = setting(0.0, label="LoRA dropout", low=0, high=1, high_open=True, cli=("--dropout",),
                                  help="Dropout on the LoRA branch's input.")
    use_rslora: bool = setting(False, label="rsLoRA scaling",
                               help="Scale the update by alpha / sqrt(r) (rank-stabilised LoRA) instead of alpha / r.")
    # Every linear layer of each block by default. Attention only (q/k/v/o) scored 0.78-0.86
    # validation macro-F1 at any learning rate tried; adding the MLP reached 0.85-0.87.
    target_modules: tuple[str, ...] = setting(LORA_TARGETS, label="Target modules", choices=LORA_TARGETS,
                                              cli=("--targets",), help="The layers of each block that get LoRA.")
    # The blocks below the top N are then the frozen base model: their output is computed once
    # per example, reused, and kept for the next run (mlcore.upper, mlcore.lab_cache); no backward
    # runs there. Top 20 for one epoch at lr 3e-3 (since 3 December; bench/README "Real text",
    # three seeds each): on real sentences (SST-3 dev) 0.859 positive-vs-negative accuracy and 2.6%
    # of polar sentences called neutral, against 0.839 and 2.6% for the top 16 (the default
    # before), 0.829 and 5.6% for the top 8 for two epochs; every block reads real text best
    # (0.877, one seed) at 1.4x the top 16's CPU time. Top 8 needed two epochs: one scored 0.754.
    lora_top_blocks: int = setting(20, label="LoRA in the top N blocks", low=0, high=1024,
                                   zero_means="every block", help="LoRA only in the top N blocks; 0 = every block.")
    # --- optimisation ------------------------------------------------------------------------
    learning_rate: float = setting(3e-3, label="Learning rate", low=0, high=0.1, low_open=True, cli=("--lr",),
                                   help="Peak AdamW learning rate (LoRA tolerates far more than full fine-tuning).")
    epochs: int = setting(1, label="Epochs", low=1, high=100,
                          help="Passes over the training examples (1,666 reviews = 105 steps of 16 by default).")
    max_steps: int | None = setting(None, label="Max steps", low=1, high=1_000_000, shown=False,
                                    help="Stop after this many optimizer steps; empty = run all epochs.")
    batch_size: int = setting(16, label="Batch size", low=1, high=512, help="Examples per forward/backward pass.")
    grad_accum: int = setting(1, label="Gradient accumulation", low=1, high=256,
                              help="Batches per optimizer step (effective batch = batch size × this).")
    warmup_ratio: float = setting(0.1, label="Warmup ratio", low=0, high=1, high_open=True,
                                  help="Share of the steps over which the learning rate ramps up from 0.")
    schedule: str = setting("linear", label="Learning-rate schedule", choices=SCHEDULES,
                            help="After warmup: linear or cosine decay to 0, or constant.")
    max_grad_norm: float = setting(1.0, label="Max gradient norm", low=0, high=1e6, shown=False,
                                   help="Clip the gradient's global L2 norm to this; 0 = no clipping.")
    weight_decay: float = setting(0.0, label="Weight decay", low=0, high=1, shown=False,
                                  help="AdamW decoupled weight decay on the LoRA matrices.")
    # --- data --------------------------------------------------------------------------------
    max_length: int = setting(256, label="Max length (tokens)", low=32, high=8192,
                              help="Longer reviews are truncated (never the label).")
    # Version 1 said "product review" while the data also holds restaurants and films (bench/README).
    prompt_version: int = setting(DEFAULT_PROMPT_VERSION, label="Prompt version", low=1, high=max(SYSTEM_PROMPTS),
                                  shown=False, help="The system prompt to train with (mlcore.prompt.SYSTEM_PROMPTS); "
                                  "saved beside the adapter.")
    mask_prompt: bool = setting(True, label="Label masking", cli=("--no-mask",),
                                help="Supervise only the answer; off = every token (the ablation lab).")
    train_limit: int | None = setting(None, label="Training examples", low=1, high=10_000_000, none_means="all",
                                      cli=("--max-examples",),
                                      help="Train on only N examples (label proportions kept); empty = all of them.")
    # The label-noise lab's knob. 0.5 at most: with 3 labels the true one stays the most common
    # answer for a text only below a 2/3 flip rate, and past 0.5 a run teaches mostly wrong labels.
    label_noise: float = setting(0.0, label="Label noise", low=0, high=0.5,
                                 help="Share of the training labels replaced by another label, chosen from the seed "
                                 "(validation and test labels are left alone).")
    seed: int = setting(0, label="Seed", low=0, high=2**32 - 1,
                        help="Seeds LoRA init, batch order and dropout: same seed, same result.")
    # --- evaluation and bookkeeping ------------------------------------------------------------
    eval_every: int = setting(0, label="Validate every N steps", low=0, high=1_000_000, zero_means="each epoch",
                              help="Optimizer steps between validation passes; 0 = at the end of each epoch. A pass over "
                              "the validation split costs about as long as 4 training steps.")
    eval_batch_size: int = setting(32, label="Evaluation batch size", low=1, high=1024, shown=False,
                                   help="Reviews per classifier forward pass when evaluating.")
    checkpoint_every: int = setting(0, label="Checkpoint every N steps", low=0, high=1_000_000, shown=False,
                                    help="Optimizer steps between resumable checkpoints; 0 = none.")
    zero_shot: bool = setting(False, label="Zero-shot baseline", shown=False,
                              help="Also score the base model without adapter on the test split.")
    keep_best: bool = setting(True, label="Keep the best validation pass",
                              help="The result is the best validation pass's weights, not the last step's.")
    device: str | None = setting(None, label="Device", check=_check_device, shown=False,
                                 help="cpu, cuda or cuda:N; empty = a GPU if there is one.")

    def validate(self) -> None:
        """Raise ConfigError naming every field that is out of range."""
        errors = {f.name: message for f in config_fields() if (message := f.problem(getattr(self, f.name)))}
        if errors:
            raise ConfigError(errors)

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("labels", "target_modules"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError({name: "is not a training setting" for name in unknown})
        data = dict(data)
        for name in ("labels", "target_modules"):
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        return cls(**data)


# --- what a run trains on ----------------------------------------------------------------------


def check_labels(config: TrainConfig, dataset: Dataset) -> list[str]:
    """The run's labels (the config's, else the dataset's); ConfigError if the data has others."""
    labels = list(config.labels) if config.labels else list(dataset.labels)
    stray = sorted({e.label for split in (dataset.train, dataset.validation, dataset.test) for e in split} - set(labels))
    if stray:
        raise ConfigError({"labels": f"the dataset also has the label(s) {', '.join(stray)}"})
    return labels


def select_examples(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """The first `limit` examples of a seeded, label-interleaved order (proportions kept): what
    train_limit means, for the loop and for the cost estimate alike."""
    if limit is None or limit >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    keyed = []
    for label, group in by_label.items():
        group = group[:]
        rng.shuffle(group)
        # i-th of n examples of a label sits at (i + 0.5) / n: every prefix of the merged order
        # holds each label in proportion to its share.
        keyed += [((i + 0.5) / len(group), LABEL_ORDER.index(label), e) for i, e in enumerate(group)]
    keyed.sort(key=lambda k: k[:2])
    return [e for *_, e in keyed[:limit]]


def flip_labels(examples: list[Example], labels: list[str], fraction: float, seed: int) -> tuple[list[Example], list[int]]:
    """(the examples with round(fraction * n) labels flipped, the indices flipped, in order).

    Symmetric noise: which examples, and which of the other labels each gets, are drawn from
    `seed` alone (its own stream, so the batch order and LoRA init do not move with it), so a run
    is reproducible and runs at 10% and 25% flip nested sets of examples. A flipped label is
    never the true one.
    """
    count = round(fraction * len(examples))
    if not count:
        return list(examples), []
    rng = random.Random(f"label-noise-{seed}")
    order = list(range(len(examples)))
    rng.shuffle(order)  # the first `count` of one seeded order: a higher fraction flips a superset
    chosen = sorted(order[:count])
    noisy = list(examples)
    for i in chosen:
        others = [label for label in labels if label != examples[i].label]
        noisy[i] = Example(examples[i].text, random.Random(f"label-noise-{seed}-{i}").choice(others))
    return noisy, chosen
