"""LoRA fine-tuning of a small instruct model into a sentiment classifier: one readable loop.

    result = train(TrainConfig(), load_bundled("reviews"), "var/runs/1", report=print)

The configuration (TrainConfig, its fields and checks) is mlcore.config, which the web side reads
without torch; this module is the loop and imports torch, peft and transformers at the top.

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
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import DynamicCache

from . import lab_cache
from .classify import _PROBE_TEXT, Classifier
from .config import NEUTRAL_DEFAULTS, RESUMABLE_CHANGES, ConfigError, TrainConfig, check_labels, flip_labels, select_examples
from .data import Dataset, Example, load_probe
from .evaluate import evaluate
from .masking import IGNORE_INDEX, EncodedExample, MaskingError, encode, prompt_and_answer_ids
from .metrics import calibration, compute_metrics, polar_metrics
from .prompt import DEFAULT_MAX_TEXT_TOKENS, PromptFormat, split_prompt
from .registry import load_base
from .upper import SplitDecoder, first_trainable_block, supports


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
    best_validation: dict | None = None  # the pass whose weights were kept (keep_best), else None
    probe: dict | None = None  # score_probe(): the "does it generalise?" sentences


# --- pieces of the loop --------------------------------------------------------------------

# Most token positions one backward pass keeps activations for. The longest batch of the default
# lab (16 reviews near max_length) kept ~2.8 GB for its backward, most of a run's 4.8 GB peak;
# a batch wider than this runs as several passes whose gradients add up to the same step
# (train_step divides every pass by the step's supervised-token count). ~1 GB at this size; a
# typical batch (16 x ~60 tokens) is one pass, as before.
MAX_BACKWARD_TOKENS = 1536


def backward_pieces(split, batch: list[int], max_tokens: int = MAX_BACKWARD_TOKENS) -> list[list[int]]:
    """`batch` cut, in order, into pieces of at most `max_tokens` padded positions (rows x the
    longest row after the shared prefix; at least one row each)."""
    pieces: list[list[int]] = [[]]
    width = 0
    for i in batch:
        length = len(split.encoded[i].input_ids) - split.prefix_len
        if pieces[-1] and max(width, length) * (len(pieces[-1]) + 1) > max_tokens:
            pieces.append([])
            width = 0
        pieces[-1].append(i)
        width = max(width, length)
    return pieces


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


def shared_prefix(
    tokenizer, labels, encoded: list[EncodedExample], mask_prompt: bool, prompt: PromptFormat | None = None
) -> list[int]:
    """Token ids every example starts with (the system turn), or [] if they do not all share it.

    Only used with masking on: then no prefix token is supervised, and the prefix's output is
    needed only as keys/values for the tokens after it.
    """
    if not mask_prompt:
        return []
    prefix = tokenizer(split_prompt(tokenizer, labels, prompt=prompt)[0], add_special_tokens=False)["input_ids"]
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


def encode_all(tokenizer, examples, labels, config, split: str, max_length: int | None = None) -> list[EncodedExample]:
    encoded = []
    prompt = PromptFormat.default(labels, config.prompt_version)
    for i, example in enumerate(examples):
        try:
            length = max_length or config.max_length
            encoded.append(encode(tokenizer, example, labels, max_length=length, mask_prompt=config.mask_prompt, prompt=prompt))
        except MaskingError as exc:
            raise MaskingError(f"{split} example {i + 1}: {exc}") from exc
    return encoded


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lora_blocks(config: TrainConfig, n_blocks: int) -> list[int] | None:
    """The block indices that get LoRA (peft's layers_to_transform); None = every block."""
    top = config.lora_top_blocks
    return list(range(n_blocks - top, n_blocks)) if 0 < top < n_blocks else None


def build_model(config: TrainConfig):
    """Base model with trainable LoRA layers (fresh, or continued from an adapter)."""
    model, tokenizer = load_base(config.base_model, device=config.device)
    # peft 0.21 still calls a transformers method deprecated in 5.x; the warning is not ours.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if config.continue_from:
        model = PeftModel.from_pretrained(model, config.continue_from, is_trainable=True)
    else:
        model = get_peft_model(model, lora_config(config, model.config.num_hidden_layers))
    return model, tokenizer


def lora_config(config: TrainConfig, n_blocks: int) -> LoraConfig:
    """peft's LoraConfig for a fresh adapter of this run (also what the TRL benchmark trains)."""
    top = lora_blocks(config, n_blocks)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_rslora=config.use_rslora,
        target_modules=list(config.target_modules),
        layers_to_transform=top,
        layers_pattern="layers" if top else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


# --- the frozen-below / trained-above split: scoring and loss --------------------------------


class Split:
    """One split's encoded examples and, computed on first use, the hidden states of each
    entering the first trained block (fixed: nothing below that block is trained)."""

    def __init__(self, examples: list[Example], encoded: list[EncodedExample], prefix_len: int):
        self.examples, self.encoded, self.prefix_len = examples, encoded, prefix_len
        self.hidden: list = [None] * len(encoded)
        self.kept_as: str | None = None  # mlcore.lab_cache key of these hidden states
        self.from_kept = False

    def reuse_kept(self, decoder, facts: list) -> None:
        """Take the hidden states an earlier run of the same base model, prompt and rows kept."""
        rows = [e.input_ids[self.prefix_len :] for e in self.encoded]
        self.kept_as = lab_cache.key("hidden", [*facts, decoder.start, self.prefix_len], rows)
        kept = lab_cache.load_hidden(self.kept_as, [len(r) for r in rows])
        if kept is not None:
            self.hidden, self.from_kept = [h.to(decoder.device) for h in kept], True

    def keep(self) -> None:
        """Store the hidden states for later runs, once every row's has been computed here."""
        if self.kept_as and not self.from_kept and self.encoded and all(h is not None for h in self.hidden):
            lab_cache.store_hidden(self.kept_as, self.hidden)

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, decoder, indices: list[int]):
        """(hidden states, rows, supervised, score, targets) for these examples.

        rows [B, T] marks the positions whose output is read: the supervised ones (position t
        predicts token t + 1) and the one a classifier reads (the prompt's last token; with
        masking on it is supervised too). supervised/score select among those rows, in order.
        """
        start = self.prefix_len
        missing = [i for i in indices if self.hidden[i] is None]
        if missing:  # the first epoch (or evaluation) pays for the frozen blocks, once
            computed = decoder.frozen_hidden([self.encoded[i].input_ids[start:] for i in missing])
            for i, hidden in zip(missing, computed, strict=True):
                self.hidden[i] = hidden
        width = max(len(self.encoded[i].input_ids) for i in indices) - start
        supervised = torch.zeros(len(indices), width, dtype=torch.bool)
        score = torch.zeros_like(supervised)
        targets = []
        for row, i in enumerate(indices):
            example = self.encoded[i]
            for t, target in enumerate(example.labels[start + 1 :]):
                if target != IGNORE_INDEX:
                    supervised[row, t] = True
                    targets.append(target)
            score[row, example.prompt_len - 1 - start] = True
        rows = supervised | score
        return [self.hidden[i] for i in indices], rows, supervised[rows], score[rows], torch.tensor(targets)


def split_loss(decoder, head, split: Split, indices: list[int]):
    """(sum of the supervised tokens' cross-entropies, their number, final hidden state at each
    example's scoring position). lm_head runs only at supervised positions."""
    hidden, rows, supervised, score, targets = split.batch(decoder, indices)
    out = decoder.forward(hidden, rows.to(decoder.device))
    logits = head(out[supervised.to(decoder.device)]).float()
    return F.cross_entropy(logits, targets.to(decoder.device), reduction="sum"), len(targets), out[score.to(decoder.device)]


def single_token_label_ids(tokenizer, labels) -> list[int] | None:
    """Each label's answer token when every label is one token (as the Classifier scores
    them), else None: then scoring goes through the Classifier."""
    seqs = [prompt_and_answer_ids(tokenizer, _PROBE_TEXT, label, labels)[1][:-1] for label in labels]
    return [seq[0] for seq in seqs] if all(len(seq) == 1 for seq in seqs) else None


def scoring_batches(split: Split, batch_size: int) -> list[list[int]]:
    """The batches a split is scored in: shortest reviews first, so each is padded little."""
    order = sorted(range(len(split)), key=lambda i: len(split.encoded[i].input_ids))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def score_split(run: Prepared, split: Split, progress=None) -> dict:
    """Loss (the training loss), metrics and predictions of the model as it is now.

    Label scores are what the Classifier computes (label-token logits at the prompt's last
    position, softmax over the labels), read from the same pass as the loss. progress(done, total)
    is called after each batch: scoring the test split twice takes as long as many training steps.
    """
    predicted: list = [None] * len(split)
    loss_sum, n_tokens, done = 0.0, 0, 0
    with torch.no_grad():
        for indices in scoring_batches(split, run.config.eval_batch_size):
            loss, n, last = split_loss(run.decoder, run.head, split, indices)
            loss_sum, n_tokens, done = loss_sum + loss.item(), n_tokens + n, done + len(indices)
            if progress is not None:
                progress(done, len(split))
            if run.label_ids is not None:
                probs = torch.softmax(last.float() @ run.head.weight[run.label_ids].float().T, dim=-1).tolist()
                for i, row in zip(indices, probs, strict=True):
                    predicted[i] = dict(zip(run.labels, row, strict=True))
    if run.label_ids is None:
        prompt = PromptFormat.default(run.labels, run.config.prompt_version)
        classifier = Classifier(run.model, run.tokenizer, run.labels, prompt=prompt)
        result = evaluate(classifier, split.examples, batch_size=run.config.eval_batch_size)
    else:
        rows = []
        for example, encoded, probs in zip(split.examples, split.encoded, predicted, strict=True):
            label = max(probs, key=probs.get)
            rows.append({"text": example.text, "label": example.label, "predicted": label, "probs": probs,
                         "correct": label == example.label, "truncated": encoded.text_truncated})
        y_true, y_pred = [r["label"] for r in rows], [r["predicted"] for r in rows]
        metrics = compute_metrics(y_true, y_pred, run.labels)
        result = {"metrics": metrics, "polar": polar_metrics(y_true, y_pred, [r["probs"] for r in rows]), "predictions": rows}
    return result | {"loss": loss_sum / max(n_tokens, 1)}


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, config: TrainConfig, best: Best) -> None:
    """Adapter + optimizer + scheduler + step + RNG + best-so-far, written aside then renamed."""
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
            "best": (best.record, best.weights),
        },
        tmp / "trainer_state.pt",
    )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_checkpoint(path: Path, model, optimizer, scheduler, config: TrainConfig, best: Best) -> int:
    """Restore a checkpoint written by save_checkpoint(); returns the step to continue from."""
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    saved, current = state["config"], config.to_dict()
    # A checkpoint written before a field existed was trained with that field's neutral value.
    changed = sorted(k for k in current if saved.get(k, NEUTRAL_DEFAULTS.get(k)) != current[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError({k: f"differs from the checkpoint ({saved.get(k)!r})" for k in changed})
    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    best.record, best.weights = state["best"]
    return state["step"]


# --- the run's parts -------------------------------------------------------------------------


class Best:
    """The best validation pass so far and a copy of the LoRA weights at it (keep_best).

    Validation macro-F1 moves by several points between late passes, so the run's result is
    the best pass's weights rather than whatever the last step left. Best = higher macro-F1,
    then lower validation loss; ties keep the earlier step.
    """

    def __init__(self, params, enabled: bool):
        self.params, self.enabled = params, enabled
        self.record: dict | None = None  # {"step", "loss", "accuracy", "macro_f1"}
        self.weights: list | None = None

    def consider(self, record: dict) -> None:
        if not self.enabled:
            return
        if self.record is None or (record["macro_f1"], -record["loss"]) > (self.record["macro_f1"], -self.record["loss"]):
            self.record = {k: record[k] for k in ("step", "loss", "accuracy", "macro_f1")}
            self.weights = [p.detach().clone() for p in self.params]

    def restore(self) -> None:
        with torch.no_grad():
            for param, saved in zip(self.params, self.weights, strict=True):
                param.copy_(saved)


@dataclass
class Prepared:
    """What the loop works with, from prepare()."""

    config: TrainConfig
    labels: list[str]
    model: object  # the peft model
    tokenizer: object
    decoder: object  # mlcore.upper.SplitDecoder
    head: object  # lm_head
    label_ids: list[int] | None  # single_token_label_ids()
    train: Split
    validation: Split
    test: Split
    params: list
    optimizer: object
    scheduler: object
    steps_per_epoch: int
    total_steps: int
    flipped: list[int] = field(default_factory=list)  # training examples whose label label_noise replaced
    zero_shot_key: str | None = None  # mlcore.lab_cache: where the baseline is kept (config.zero_shot)
    zero_shot_cached: dict | None = None  # the baseline found there when the run started


def prepare(config: TrainConfig, dataset: Dataset) -> Prepared:
    """Seed, base model + LoRA, the examples encoded with their label mask, optimizer, schedule."""
    config.validate()
    labels = check_labels(config, dataset)
    seed_everything(config.seed)
    model, tokenizer = build_model(config)
    causal_lm = model.get_base_model()  # LoRA layers are injected into it in place
    if not supports(causal_lm):
        raise ConfigError({"base_model": "training supports Llama- and Qwen2-family models only"})
    examples = select_examples(dataset.train, config.train_limit, config.seed)
    # Label noise touches the training examples only: validation (which keep_best reads) and
    # test stay clean, so they measure what the noisy labels did to the model.
    examples, flipped = flip_labels(examples, labels, config.label_noise, config.seed)
    train_set = encode_all(tokenizer, examples, labels, config, "train")
    if not train_set:
        raise ConfigError({"dataset": "has no training examples"})
    # Validation and test reviews are cut where the served classifier cuts them.
    eval_length = max(config.max_length, serving_max_length(tokenizer, labels))
    val_set = encode_all(tokenizer, dataset.validation, labels, config, "validation", eval_length)
    test_set = encode_all(tokenizer, dataset.test, labels, config, "test", eval_length)
    # Every example starts with the same system turn: it runs once per batch (mlcore.upper).
    prompt = PromptFormat.default(labels, config.prompt_version)
    prefix = shared_prefix(tokenizer, labels, train_set + val_set + test_set, config.mask_prompt, prompt)
    decoder = SplitDecoder(causal_lm, first_trainable_block(causal_lm), prefix)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / config.batch_size) / config.grad_accum)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = int(config.warmup_ratio * total_steps)
    # Only the LoRA matrices are trainable. fused: one kernel for all of them, not one per tensor.
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, config.schedule))
    label_ids = single_token_label_ids(tokenizer, labels)
    splits = [Split(examples, train_set, len(prefix)), Split(dataset.validation, val_set, len(prefix)),
              Split(dataset.test, test_set, len(prefix))]
    # What does not depend on the training is reused from an earlier run (mlcore.lab_cache).
    zero_shot_key, wants_baseline = None, bool(config.zero_shot and test_set)
    if decoder.start or wants_baseline:  # the fingerprint is a pass over every weight: only when used
        dtype = str(next(model.parameters()).dtype)
        facts = [config.base_model, dtype, str(decoder.device), lab_cache.weights_fingerprint(causal_lm)]
    if decoder.start:
        for split in splits:
            split.reuse_kept(decoder, facts)
    if wants_baseline:
        rows = [(e.input_ids, x.label) for e, x in zip(test_set, dataset.test, strict=True)]
        zero_shot_key = lab_cache.key("zero-shot", [*facts, prefix, label_ids], rows)
    return Prepared(
        config, labels, model, tokenizer, decoder, causal_lm.get_output_embeddings(), label_ids, *splits,
        params, optimizer, scheduler, steps_per_epoch, total_steps, flipped=flipped, zero_shot_key=zero_shot_key,
        zero_shot_cached=lab_cache.load_metrics(zero_shot_key) if zero_shot_key else None,
    )


def serving_max_length(tokenizer, labels) -> int:
    """The sequence length at which the served Classifier starts cutting reviews."""
    longest = max(sum(map(len, prompt_and_answer_ids(tokenizer, "", label, labels))) for label in labels)
    return DEFAULT_MAX_TEXT_TOKENS + longest


def train_step(run: Prepared, group: list[list[int]]) -> tuple[float, float]:
    """One optimizer step over the batches of `group`; returns (mean token loss, grad norm)."""
    # Average over every supervised token of the accumulated batches, so grad_accum=4 x
    # batch_size=2 computes the same gradient as batch_size=8.
    n_supervised = sum(run.train.encoded[i].num_supervised for batch in group for i in batch)
    loss_total = torch.zeros((), device=run.decoder.device)
    for piece in (piece for batch in group for piece in backward_pieces(run.train, batch)):
        loss_sum, _, _ = split_loss(run.decoder, run.head, run.train, piece)
        (loss_sum / n_supervised).backward()
        loss_total += loss_sum.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, run.config.max_grad_norm or float("inf"))
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    loss, norm = torch.stack([loss_total / n_supervised, grad_norm.to(loss_total)]).tolist()  # one host sync
    return loss, norm


def validate(run: Prepared, step: int) -> dict:
    """A validation pass: the training loss and the classifier's accuracy on the split."""
    run.model.eval()
    result = score_split(run, run.validation)
    run.model.train()
    metrics = result["metrics"]
    return {
        "type": "eval", "step": step, "loss": result["loss"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
    }


def save_and_score(run: Prepared, out_dir: Path, best: Best, zero_shot: bool, report=None) -> tuple[dict, dict | None]:
    """Keep the best validation weights (keep_best), save the adapter, score it on the test
    split and, if asked, the base model without adapter: (test result, zero-shot metrics).
    report gets {"type": "scoring", "phase": "test" | "zero_shot", "done", "total"} per batch."""

    def progress(phase):
        return (lambda done, total: report({"type": "scoring", "phase": phase, "done": done, "total": total})) if report else None

    if best.record is not None:
        best.restore()
    run.model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model card
    run.model.eval()
    test = score_split(run, run.test, progress("test"))
    baseline = zero_shot_baseline(run, progress("zero_shot")) if zero_shot else None
    with open(out_dir / "test_predictions.jsonl", "w", encoding="utf-8") as f:
        for row in test["predictions"]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return test, baseline


def zero_shot_baseline(run: Prepared, progress=None) -> dict:
    """The base model's test metrics without the adapter: kept from an earlier run of the same
    base model, prompt and test split when there is one (mlcore.lab_cache), else scored."""
    cached = run.zero_shot_cached or (lab_cache.load_metrics(run.zero_shot_key) if run.zero_shot_key else None)
    if cached is not None:
        if progress is not None:
            progress(len(run.test), len(run.test))
        return cached
    with run.model.disable_adapter():  # the frozen blocks' hidden states are shared with the test scoring
        metrics = score_split(run, run.test, progress)["metrics"]
    if run.zero_shot_key:
        lab_cache.store_metrics(run.zero_shot_key, metrics)
    return metrics


def keep_for_later_runs(config: TrainConfig, dataset: Dataset) -> dict[str, str]:
    """Compute and keep (mlcore.lab_cache) what every run of `config` on `dataset` reuses: each
    split's hidden states entering the first trained block and the zero-shot baseline, in the
    batches a run computes them in (so they are the values a first run would keep, to the bit).
    `make run`'s setup does this for the default lab: a host's first run is then as fast as its
    later ones. Returns {what: "kept before" | "computed"}."""
    run = prepare(config, dataset)
    run.model.eval()
    done = {}
    batches = {"train": length_grouped_batches(run.train.encoded, config.batch_size, config.seed),  # epoch 0's
               "validation": scoring_batches(run.validation, config.eval_batch_size),
               "test": scoring_batches(run.test, config.eval_batch_size)}
    if run.decoder.start:  # else nothing is frozen below the trained blocks
        for name, split in (("train", run.train), ("validation", run.validation), ("test", run.test)):
            if not len(split):
                continue
            if split.from_kept:
                done[name] = "kept before"
                continue
            for indices in batches[name]:
                split.batch(run.decoder, indices)
            split.keep()
            done[name] = "computed"
    if run.zero_shot_key:
        done["zero-shot"] = "kept before" if run.zero_shot_cached is not None else "computed"
        zero_shot_baseline(run)
    return done


def score_probe(run: Prepared) -> dict | None:
    """The kept weights on the probe sentences (mlcore.data.PROBE_FILE): plain everyday
    sentences no split contains. A synthetic test split written like the training data can
    flatter a model; these show a learner whether it reads ordinary text. Mistakes come
    first, the most confident first. None when fewer than two of the run's labels are there."""
    examples = load_probe(run.labels)
    if len({e.label for e in examples}) < 2:
        return None
    eval_length = max(run.config.max_length, serving_max_length(run.tokenizer, run.labels))
    encoded = encode_all(run.tokenizer, examples, run.labels, run.config, "probe", eval_length)
    result = score_split(run, Split(examples, encoded, run.train.prefix_len))
    rows = sorted(result["predictions"], key=lambda r: (r["correct"], -r["probs"][r["predicted"]]))
    return {"metrics": result["metrics"], "polar": result["polar"], "predictions": rows}


# --- the loop ------------------------------------------------------------------------------


@dataclass
class ScoringPace:
    """Measured cost of scoring (validation passes): seconds per example, once one pass ran."""

    seconds: float = 0.0
    examples: int = 0

    def add(self, seconds: float, examples: int) -> None:
        self.seconds, self.examples = self.seconds + seconds, self.examples + examples

    def per_example(self, train_samples_per_s: float) -> float:
        if self.examples:
            return self.seconds / self.examples
        # Before the first pass: a forward pass without backward costs about a third of a
        # training example (backward is ~2x forward), so use that until a pass is measured.
        return 1 / (3 * train_samples_per_s) if train_samples_per_s else 0.0


def validation_steps_left(run: Prepared, step: int) -> int:
    """Validation passes still due at or after `step` (the one after `step` itself included)."""
    every = run.config.eval_every
    if not len(run.validation):
        return 0
    return sum(1 for s in range(max(step, 1), run.total_steps + 1)
               if (s % every == 0 if every else s % run.steps_per_epoch == 0) or s == run.total_steps)


def eta_seconds(run: Prepared, step: int, step_s: float, scoring: ScoringPace, train_samples_per_s: float) -> float:
    """Seconds until the run is done: the training steps left, the validation passes still due,
    and the final scoring of the test split (twice with a zero-shot baseline not yet kept). A step-time-only
    ETA said 4:01 at step 41 of a run that took 10:18, the passes being most of the difference."""
    per_example = scoring.per_example(train_samples_per_s)
    zero_shot_due = run.config.zero_shot and run.zero_shot_cached is None
    scoring_left = validation_steps_left(run, step) * len(run.validation) + len(run.test) * (2 if zero_shot_due else 1)
    return step_s * (run.total_steps - step) + per_example * scoring_left


def train(config: TrainConfig, dataset: Dataset, out_dir, *, report=None, resume: bool = False) -> TrainResult:
    """Fine-tune, save the adapter with its config into out_dir, and score it on the test split.

    report(event) is called with {"type": "step", ...} after every optimizer step,
    {"type": "eval", ...} after every validation pass, {"type": "checkpoint", "path"} after
    every checkpoint is written, and {"type": "done", ...} at the end.
    If it returns "stop" (or True), training stops after the current step, saves a checkpoint
    and returns with cancelled=True; train(..., resume=True) continues from it.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out_dir / "checkpoint"
    emit = report or (lambda event: None)
    run = prepare(config, dataset)
    best = Best(run.params, config.keep_best)
    step = 0
    if resume and (checkpoint_dir / "trainer_state.pt").exists():
        step = load_checkpoint(checkpoint_dir, run.model, run.optimizer, run.scheduler, config, best)

    run.model.train()
    validation: list[dict] = []
    train_s, samples, tokens, steps_run, cancelled = 0.0, 0, 0, 0, False
    scoring = ScoringPace()
    while step < run.total_steps and not cancelled:
        epoch = step // run.steps_per_epoch
        batches = length_grouped_batches(run.train.encoded, config.batch_size, config.seed + epoch)
        groups = [batches[i : i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)]
        for group in groups[step - epoch * run.steps_per_epoch :]:  # on resume, skip what is done
            tick = time.perf_counter()
            lr = run.scheduler.get_last_lr()[0]
            loss, grad_norm = train_step(run, group)
            step, steps_run = step + 1, steps_run + 1
            train_s += time.perf_counter() - tick
            samples += sum(map(len, group))
            tokens += sum(len(run.train.encoded[i].input_ids) for batch in group for i in batch)
            answer = emit({
                "type": "step", "step": step, "total_steps": run.total_steps, "epoch": step / run.steps_per_epoch,
                "loss": loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": samples / train_s,
                "tokens_per_s": tokens / train_s, "elapsed_s": time.perf_counter() - started,
                "eta_s": eta_seconds(run, step, train_s / steps_run, scoring, samples / train_s),
            })
            cancelled = answer is True or answer == "stop"
            end_of_epoch = step % run.steps_per_epoch == 0
            due = (step % config.eval_every == 0) if config.eval_every else end_of_epoch
            if len(run.validation) and (due or step == run.total_steps) and not cancelled:
                tick = time.perf_counter()
                validation.append(validate(run, step))
                scoring.add(time.perf_counter() - tick, len(run.validation))
                best.consider(validation[-1])
                emit(validation[-1])
            if cancelled or (config.checkpoint_every and step % config.checkpoint_every == 0 and step < run.total_steps):
                save_checkpoint(checkpoint_dir, run.model, run.optimizer, run.scheduler, step, config, best)
                emit({"type": "checkpoint", "step": step, "path": str(checkpoint_dir)})  # e.g. to copy it off this host
            if cancelled or step >= run.total_steps:
                break
    return finish(run, out_dir, best, validation, started, step, cancelled, (train_s, samples), emit)


def finish(run: Prepared, out_dir: Path, best: Best, validation, started, step, cancelled, timing, emit) -> TrainResult:
    """Write config and labels (the adapter always travels with them); unless cancelled, save
    and score the adapter and write metrics.json; report "done"."""
    config, (train_s, samples) = run.config, timing
    (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (out_dir / "labels.json").write_text(json.dumps(run.labels) + "\n")
    PromptFormat.default(run.labels, config.prompt_version).save(out_dir, run.tokenizer)
    result = TrainResult(
        out_dir=out_dir, cancelled=cancelled, steps=step, total_steps=run.total_steps, elapsed_s=0.0, train_s=train_s,
        samples_per_s=samples / train_s if train_s else 0.0, validation=validation,
    )
    test_polar = test_calibration = None
    if not cancelled:
        test, result.zero_shot = save_and_score(run, out_dir, best, config.zero_shot, emit)
        test_polar = test["polar"]
        test_calibration = calibration([r["label"] for r in test["predictions"]], [r["probs"] for r in test["predictions"]])
        result.metrics = test["metrics"]
        result.probe = score_probe(run)
        for split in (run.train, run.validation, run.test):  # for the next run of this lab (mlcore.lab_cache)
            split.keep()
        result.best_validation = best.record
        shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)  # finished: nothing left to resume
    result.elapsed_s = time.perf_counter() - started
    summary = {
        "test": result.metrics,
        "test_polar": test_polar,
        "test_calibration": test_calibration,
        "probe": result.probe,
        "zero_shot": result.zero_shot,
        "validation": validation,
        "best_validation": result.best_validation,
        "train": {
            "steps": step, "total_steps": run.total_steps, "train_examples": len(run.train), "train_s": train_s,
            "samples_per_s": result.samples_per_s, "elapsed_s": result.elapsed_s, "cancelled": cancelled,
            # Which training examples (indices into the ones trained on) label_noise flipped.
            "label_noise": {"fraction": config.label_noise, "flipped": len(run.flipped), "rows": run.flipped},
        },
    }
    if not cancelled:
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    emit({"type": "done", "cancelled": cancelled, "metrics": result.metrics, "zero_shot": result.zero_shot, "steps": step})
    return result
