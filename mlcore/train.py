"""LoRA fine-tuning of a small instruct model into a sentiment classifier: one readable loop.

    result = train(TrainConfig(), load_bundled("reviews"), "var/runs/1", report=print)

What happens, top to bottom (train()):
  seed -> base model + LoRA -> encode and mask the examples -> optimizer + schedule ->
  loop over length-grouped batches (grad accumulation, clipping, periodic validation,
  checkpoints, cooperative cancel) -> save adapter + config + labels -> test metrics.

The maths that matters on a CPU: a forward+backward pass costs time per token, so
- batches group reviews of similar length (little padding), padded only to their longest;
- every example starts with the same ~30-token system turn: with masking on it runs once per
  batch and its keys/values are shared by the batch (exact, gradients included), which
  roughly halves the tokens a step processes;
- with masking on, only the answer (label + <|im_end|>, 2 of ~60 tokens per example) is
  supervised, so we run the transformer to its hidden states and apply lm_head (576 x 49,152
  for SmolLM2) only at those positions instead of at every token.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .data import LABEL_ORDER, Dataset, Example
from .masking import IGNORE_INDEX, EncodedExample, MaskingError, encode
from .prompt import split_prompt
from .registry import BASE_MODELS, DEFAULT_BASE_MODEL

SCHEDULES = ("linear", "cosine", "constant")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Fields that may change between a checkpoint and its resumption (they do not change the maths
# of the steps already taken).
_RESUMABLE_CHANGES = {"eval_every", "checkpoint_every", "zero_shot", "device"}


class ConfigError(ValueError):
    """One message per out-of-range field: {field: message}. The web form shows them per field."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


@dataclass
class TrainConfig:
    # --- what to train -----------------------------------------------------------------------
    base_model: str = DEFAULT_BASE_MODEL  # registry name (mlcore.registry.BASE_MODELS)
    dataset: str = "reviews"  # bundled dataset name, or a label like "upload:42" (recorded only)
    labels: tuple[str, ...] | None = None  # label set, in prompt order; None = the dataset's labels
    continue_from: str | None = None  # adapter dir to continue training from, instead of a fresh LoRA
    # --- LoRA --------------------------------------------------------------------------------
    lora_r: int = 16  # rank of the update B·A (A: r x d_in, B: d_out x r)
    lora_alpha: int = 32  # the update is scaled by alpha / r
    lora_dropout: float = 0.05  # dropout on the LoRA branch's input
    use_rslora: bool = False  # scale the update by alpha / sqrt(r) (rsLoRA) instead of alpha / r
    # Layers that get LoRA: every linear layer of each block. Attention only (q/k/v/o) scored
    # 0.78-0.86 validation macro-F1 at any learning rate tried; adding the MLP reached 0.85-0.87.
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # --- optimisation ------------------------------------------------------------------------
    learning_rate: float = 1e-3  # peak AdamW learning rate (LoRA tolerates far more than full fine-tuning)
    epochs: int = 2  # passes over the training examples (428 reviews x 2 = 108 steps of 8 by default)
    max_steps: int | None = None  # stop after this many optimizer steps (None = run all epochs)
    batch_size: int = 8  # examples per forward/backward pass
    grad_accum: int = 1  # passes per optimizer step (effective batch = batch_size * grad_accum)
    warmup_ratio: float = 0.1  # fraction of the steps over which the learning rate ramps up from 0
    schedule: str = "linear"  # after warmup: "linear" or "cosine" decay to 0, or "constant"
    max_grad_norm: float = 1.0  # clip the gradient's global L2 norm to this (0 = no clipping)
    weight_decay: float = 0.0  # AdamW decoupled weight decay on the LoRA matrices
    # --- data --------------------------------------------------------------------------------
    max_length: int = 256  # tokens per example; longer reviews are truncated (never the label)
    mask_prompt: bool = True  # supervise only the answer; False = every token (ablation lab)
    train_limit: int | None = None  # train on only N examples (label proportions kept); None = all
    seed: int = 0  # seeds LoRA init, batch order and dropout: same seed, same result
    # --- evaluation and bookkeeping ------------------------------------------------------------
    eval_every: int = 0  # optimizer steps between validation passes; 0 = at the end of each epoch
    eval_batch_size: int = 32  # reviews per classifier forward pass when evaluating
    checkpoint_every: int = 0  # optimizer steps between resumable checkpoints; 0 = none
    zero_shot: bool = False  # also score the base model without adapter on the test split
    device: str | None = None  # "cpu" / "cuda"; None = a GPU if there is one

    def validate(self) -> None:
        """Raise ConfigError naming every field that is out of range."""
        errors: dict[str, str] = {}

        def check_int(name, low, high, *, optional=False):
            value = getattr(self, name)
            if optional and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                errors[name] = f"must be a whole number from {low} to {high}"

        def check_float(name, low, high, *, low_open=False, high_open=False):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            if not ok:
                left, right = "(" if low_open else "[", ")" if high_open else "]"
                errors[name] = f"must be a number in {left}{low:g}, {high:g}{right}"

        if self.base_model not in BASE_MODELS:
            errors["base_model"] = f"unknown base model; choose one of {', '.join(BASE_MODELS)}"
        if not isinstance(self.dataset, str) or not self.dataset:
            errors["dataset"] = "must name the dataset"
        if self.labels is not None:
            labels = list(self.labels)
            unknown = [label for label in labels if label not in LABEL_ORDER]
            if unknown:
                errors["labels"] = f"unknown label(s) {', '.join(map(repr, unknown))}; use {', '.join(LABEL_ORDER)}"
            elif len(labels) < 2 or len(set(labels)) != len(labels):
                errors["labels"] = "needs at least two different labels"
        if self.continue_from is not None and not (Path(self.continue_from) / "adapter_config.json").exists():
            errors["continue_from"] = "is not an adapter directory (no adapter_config.json)"
        check_int("lora_r", 1, 256)
        check_int("lora_alpha", 1, 1024)
        check_float("lora_dropout", 0, 1, high_open=True)
        if not isinstance(self.use_rslora, bool):
            errors["use_rslora"] = "must be true or false"
        targets = list(self.target_modules) if isinstance(self.target_modules, (list, tuple)) else []
        if not targets or any(t not in LORA_TARGETS for t in targets):
            errors["target_modules"] = f"choose one or more of {', '.join(LORA_TARGETS)}"
        check_float("learning_rate", 0, 0.1, low_open=True)
        check_int("epochs", 1, 100)
        check_int("max_steps", 1, 1_000_000, optional=True)
        check_int("batch_size", 1, 512)
        check_int("grad_accum", 1, 256)
        check_float("warmup_ratio", 0, 1, high_open=True)
        if self.schedule not in SCHEDULES:
            errors["schedule"] = f"must be one of {', '.join(SCHEDULES)}"
        check_float("max_grad_norm", 0, 1e6)
        check_float("weight_decay", 0, 1)
        check_int("max_length", 32, 8192)
        if not isinstance(self.mask_prompt, bool):
            errors["mask_prompt"] = "must be true or false"
        check_int("train_limit", 1, 10_000_000, optional=True)
        check_int("seed", 0, 2**32 - 1)
        check_int("eval_every", 0, 1_000_000)
        check_int("eval_batch_size", 1, 1024)
        check_int("checkpoint_every", 0, 1_000_000)
        if not isinstance(self.zero_shot, bool):
            errors["zero_shot"] = "must be true or false"
        if self.device not in (None, "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            errors["device"] = 'must be "cpu", "cuda" or empty (automatic)'
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


@dataclass
class TrainResult:
    out_dir: Path
    cancelled: bool  # stopped by report() returning "stop"; a checkpoint allows resume=True
    steps: int  # optimizer steps taken (in total, across resumptions)
    total_steps: int
    elapsed_s: float  # wall time of this call, loading and evaluation included
    train_s: float  # of which forward/backward/optimizer time
    samples_per_s: float  # training examples per second of train_s
    metrics: dict | None = None  # test metrics (None when cancelled)
    zero_shot: dict | None = None  # base model's test metrics, if config.zero_shot
    validation: list[dict] = field(default_factory=list)  # every validation pass


# --- pieces of the loop --------------------------------------------------------------------


def select_examples(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """The first `limit` examples of a seeded, label-interleaved order (proportions kept)."""
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


def length_grouped_batches(encoded: list[EncodedExample], batch_size: int, seed: int) -> list[list[int]]:
    """Indices in batches of similar length, in a seeded random order.

    Shuffle, then sort by length within mega-batches of 50 batches (as HF's
    LengthGroupedSampler does): batches get little padding, yet which reviews meet in a batch
    and in what order batches come still varies with the seed and the epoch.
    """
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    mega = 50 * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: len(encoded[i].input_ids), reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[EncodedExample], pad_id: int, start: int = 0):
    """Right-pad tokens [start:] of each example to the longest in the batch.

    Padded labels are IGNORE_INDEX by position, never by comparing ids with pad_id (which
    equals <|im_end|>, a supervised token).
    """
    import torch

    rows = [(e.input_ids[start:], e.labels[start:]) for e in examples]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, target) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask, labels


def shared_prefix(tokenizer, labels, encoded: list[EncodedExample], mask_prompt: bool) -> list[int]:
    """Token ids every example starts with (the system turn), or [] if they do not all share it.

    Only used with masking on: then no prefix token is supervised, and the prefix's output is
    needed only as keys/values for the tokens after it.
    """
    if not mask_prompt:
        return []
    prefix = tokenizer(split_prompt(tokenizer, labels)[0], add_special_tokens=False)["input_ids"]
    n = len(prefix)
    ok = all(e.input_ids[:n] == prefix and all(t == IGNORE_INDEX for t in e.labels[: n + 1]) for e in encoded)
    return prefix if ok else []


def supervised_loss(body, head, input_ids, attention_mask, labels, prefix=None):
    """(sum of token cross-entropies, number of supervised tokens) for one batch.

    The logits at position t predict token t+1, so targets are labels shifted left by one.
    lm_head runs only where a target is supervised: with masking on, 2 of ~60 positions per
    example, which saves a [tokens x 49,152] matmul and its backward.

    With `prefix` (a [1, P] tensor of the ids every example starts with; input_ids etc. then
    hold what follows it), the prefix runs ONCE and its keys/values are broadcast to the batch:
    the ~40-token system turn is about half of every example, so this halves the work of a
    step. It is exact: the expand()'s backward sums each example's gradient into the one
    prefix pass. (LoRA dropout on the prefix is then drawn once per batch, not per example.)
    """
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    if prefix is None:
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    else:
        batch, prefix_len = input_ids.shape[0], prefix.shape[1]
        layers = body(input_ids=prefix, use_cache=True).past_key_values.layers
        cache = DynamicCache(
            ddp_cache_data=[(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1)) for layer in layers],
            config=body.config,
        )
        hidden = body(
            input_ids=input_ids,
            attention_mask=torch.cat([attention_mask.new_ones(batch, prefix_len), attention_mask], dim=1),
            position_ids=prefix_len + torch.arange(input_ids.shape[1], device=input_ids.device).expand(batch, -1),
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return max(0.0, 1 - progress)


def encode_all(tokenizer, examples, labels, config, split: str) -> list[EncodedExample]:
    encoded = []
    for i, example in enumerate(examples):
        try:
            encoded.append(encode(tokenizer, example, labels, max_length=config.max_length, mask_prompt=config.mask_prompt))
        except MaskingError as exc:
            raise MaskingError(f"{split} example {i + 1}: {exc}") from exc
    return encoded


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: TrainConfig):
    """Base model with trainable LoRA layers (fresh, or continued from an adapter)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from .registry import load_base

    model, tokenizer = load_base(config.base_model, device=config.device)
    # peft 0.21 still calls a transformers method deprecated in 5.x; the warning is not ours.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if config.continue_from:
        model = PeftModel.from_pretrained(model, config.continue_from, is_trainable=True)
    else:
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            use_rslora=config.use_rslora,
            target_modules=list(config.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, config: TrainConfig) -> None:
    """Adapter + optimizer + scheduler + step + RNG, written aside then renamed into place."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
            "config": config.to_dict(),
        },
        tmp / "trainer_state.pt",
    )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_checkpoint(path: Path, model, optimizer, scheduler, config: TrainConfig) -> int:
    """Restore a checkpoint written by save_checkpoint(); returns the step to continue from."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(path / "trainer_state.pt", weights_only=False)
    saved, current = state["config"], config.to_dict()
    changed = sorted(k for k in current if saved.get(k) != current[k] and k not in _RESUMABLE_CHANGES)
    if changed:
        raise ConfigError({k: f"differs from the checkpoint ({saved.get(k)!r})" for k in changed})
    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    return state["step"]


# --- the loop ------------------------------------------------------------------------------


def train(config: TrainConfig, dataset: Dataset, out_dir, *, report=None, resume: bool = False) -> TrainResult:
    """Fine-tune, save the adapter with its config into out_dir, and score it on the test split.

    report(event) is called with {"type": "step", ...} after every optimizer step,
    {"type": "eval", ...} after every validation pass and {"type": "done", ...} at the end.
    If it returns "stop" (or True), training stops after the current step, saves a checkpoint
    and returns with cancelled=True; train(..., resume=True) continues from it.
    """
    import torch

    from .classify import Classifier
    from .evaluate import evaluate

    config.validate()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out_dir / "checkpoint"
    labels = list(config.labels) if config.labels else list(dataset.labels)
    stray = sorted({e.label for split in (dataset.train, dataset.validation, dataset.test) for e in split} - set(labels))
    if stray:
        raise ConfigError({"labels": f"the dataset also has the label(s) {', '.join(stray)}"})
    emit = report or (lambda event: None)

    # --- seed, model, LoRA
    seed_everything(config.seed)
    model, tokenizer = build_model(config)
    causal_lm = model.get_base_model()  # LoRA layers are injected into it in place
    body, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    device = head.weight.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # --- data: tokenise once, with the label mask
    train_set = encode_all(tokenizer, select_examples(dataset.train, config.train_limit, config.seed), labels, config, "train")
    val_set = encode_all(tokenizer, dataset.validation, labels, config, "validation")
    if not train_set:
        raise ConfigError({"dataset": "has no training examples"})
    # Every example starts with the same system turn: run it once per batch (see supervised_loss).
    prefix_ids = shared_prefix(tokenizer, labels, train_set + val_set, config.mask_prompt)
    prefix = torch.tensor([prefix_ids], device=device) if prefix_ids else None
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = int(config.warmup_ratio * total_steps)

    # --- optimizer and schedule (only the LoRA matrices are trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, config.schedule)
    )
    step = 0
    if resume and (checkpoint_dir / "trainer_state.pt").exists():
        step = load_checkpoint(checkpoint_dir, model, optimizer, scheduler, config)

    def validate_now() -> dict:
        """Validation loss (same loss as training) and accuracy (the serving classifier)."""
        model.eval()
        with torch.inference_mode():
            loss_sum, n_tokens = 0.0, 0
            for start in range(0, len(val_set), config.eval_batch_size):
                batch = collate(val_set[start : start + config.eval_batch_size], pad_id, len(prefix_ids))
                loss, n = supervised_loss(body, head, *(t.to(device) for t in batch), prefix=prefix)
                loss_sum, n_tokens = loss_sum + loss.item(), n_tokens + n
        result = evaluate(Classifier(model, tokenizer, labels), dataset.validation, batch_size=config.eval_batch_size)
        model.train()
        metrics = result["metrics"]
        return {
            "type": "eval",
            "step": step,
            "loss": loss_sum / max(n_tokens, 1),
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
        }

    # --- the loop
    model.train()
    validation: list[dict] = []
    train_s, samples, tokens, steps_run, cancelled = 0.0, 0, 0, 0, False
    while step < total_steps and not cancelled:
        epoch = step // steps_per_epoch
        batches = length_grouped_batches(train_set, config.batch_size, config.seed + epoch)
        groups = [batches[i : i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)]
        for group in groups[step - epoch * steps_per_epoch :]:  # on resume, skip what is done
            tick = time.perf_counter()
            # Average the loss over every supervised token of the accumulated batches, so
            # grad_accum=4 x batch_size=2 computes the same gradient as batch_size=8.
            n_supervised = sum(train_set[i].num_supervised for batch in group for i in batch)
            loss_total = 0.0
            for batch in group:
                examples = [train_set[i] for i in batch]
                input_ids, attention_mask, target = (t.to(device) for t in collate(examples, pad_id, len(prefix_ids)))
                loss_sum, _ = supervised_loss(body, head, input_ids, attention_mask, target, prefix=prefix)
                (loss_sum / n_supervised).backward()
                loss_total += loss_sum.item()
                samples += len(examples)
                tokens += sum(len(e.input_ids) for e in examples)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            train_s += time.perf_counter() - tick

            steps_run += 1
            answer = emit(
                {
                    "type": "step",
                    "step": step,
                    "total_steps": total_steps,
                    "epoch": step / steps_per_epoch,
                    "loss": loss_total / n_supervised,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "samples_per_s": samples / train_s,
                    "tokens_per_s": tokens / train_s,
                    "elapsed_s": time.perf_counter() - started,
                    "eta_s": train_s / steps_run * (total_steps - step),
                }
            )
            cancelled = answer is True or answer == "stop"
            end_of_epoch = step % steps_per_epoch == 0
            due = (step % config.eval_every == 0) if config.eval_every else end_of_epoch
            if val_set and (due or step == total_steps) and not cancelled:
                validation.append(validate_now())
                emit(validation[-1])
            if cancelled or (config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps):
                save_checkpoint(checkpoint_dir, model, optimizer, scheduler, step, config)
            if cancelled or step >= total_steps:
                break

    # --- save: the adapter always travels with its config and labels
    (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (out_dir / "labels.json").write_text(json.dumps(labels) + "\n")
    result = TrainResult(
        out_dir=out_dir,
        cancelled=cancelled,
        steps=step,
        total_steps=total_steps,
        elapsed_s=0.0,
        train_s=train_s,
        samples_per_s=samples / train_s if train_s else 0.0,
        validation=validation,
    )
    if not cancelled:
        model.save_pretrained(out_dir)
        (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model card
        model.eval()
        test = evaluate(Classifier(model, tokenizer, labels), dataset.test, batch_size=config.eval_batch_size)
        result.metrics = test["metrics"]
        if config.zero_shot:
            with model.disable_adapter():
                result.zero_shot = evaluate(
                    Classifier(model, tokenizer, labels), dataset.test, batch_size=config.eval_batch_size
                )["metrics"]
        with open(out_dir / "test_predictions.jsonl", "w", encoding="utf-8") as f:
            for row in test["predictions"]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    result.elapsed_s = time.perf_counter() - started
    summary = {
        "test": result.metrics,
        "zero_shot": result.zero_shot,
        "validation": validation,
        "train": {
            "steps": step,
            "total_steps": total_steps,
            "train_examples": len(train_set),
            "train_s": train_s,
            "samples_per_s": result.samples_per_s,
            "elapsed_s": result.elapsed_s,
            "cancelled": cancelled,
        },
    }
    if not cancelled:
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    emit({"type": "done", "cancelled": cancelled, "metrics": result.metrics, "zero_shot": result.zero_shot, "steps": step})
    return result
