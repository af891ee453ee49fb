"""What a training run will cost, computed before it runs: optimizer steps, validation passes and
tokens through the model, from the config and the dataset alone (no model is loaded).

The step arithmetic is train()'s own (see `count_steps`), so the estimate and the run agree on
the number of steps; tokens use the real tokenizer and the real prompt template, capped at
max_length exactly as encode() truncates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import TrainConfig, select_examples
from .data import Dataset
from .prompt import DEFAULT_MAX_TEXT_TOKENS, cut_shots, pick_shots, prompt_token_count, render_prompt


@dataclass(frozen=True)
class RunCost:
    steps: int  # optimizer steps
    evals: int  # validation passes
    train_tokens: int  # tokens through forward + backward, all epochs
    eval_tokens: int  # tokens through forward only: validation passes + test scoring
    example_tokens: int  # mean tokens of one training example after truncation
    shot_tokens: int = 0  # few-shot runs: tokens the k examples add to every prompt

    @property
    def tokens(self) -> int:
        """One number to budget on. A backward pass costs about twice a forward pass, so a
        training token counts three times an evaluation token."""
        return 3 * self.train_tokens + self.eval_tokens


def count_steps(config: TrainConfig, n_train: int) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch), as train() computes them."""
    batches_per_epoch = math.ceil(n_train / config.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.grad_accum))
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return total, steps_per_epoch


def count_evals(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> int:
    """Validation passes: every eval_every steps (or each epoch end), plus one at the last step."""
    every = config.eval_every or steps_per_epoch
    return total_steps // every + (0 if total_steps % every == 0 else 1)


def example_lengths(tokenizer, texts: list[str], labels: list[str], max_length: int) -> list[int]:
    """Tokens per example: the review's tokens plus the prompt template and answer, at most max_length."""
    overhead = len(tokenizer(render_prompt(tokenizer, "", labels), add_special_tokens=False)["input_ids"]) + 2
    if not texts:
        return []
    counts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [min(max_length, overhead + len(ids)) for ids in counts]


def prompt_lengths(tokenizer, texts: list[str], labels: list[str], shots=()) -> list[int]:
    """Tokens the classifier reads per review: the prompt (with the shots, if any) and the review
    cut to DEFAULT_MAX_TEXT_TOKENS, as mlcore.classify scores it."""
    overhead = prompt_token_count(tokenizer, "", labels, shots)
    if not texts:
        return []
    counts = tokenizer([t[: 16 * DEFAULT_MAX_TEXT_TOKENS] for t in texts], add_special_tokens=False)["input_ids"]
    return [overhead + min(DEFAULT_MAX_TEXT_TOKENS, len(ids)) for ids in counts]


def estimate_fewshot_cost(config: TrainConfig, dataset: Dataset, tokenizer, k: int) -> RunCost:
    """A few-shot run (labs.training) trains nothing: it scores the test split with the k examples
    in every prompt, then without them (the zero-shot baseline). The examples are picked and cut
    exactly as the run does (pick_shots, cut_shots) and counted in every prompt they go into."""
    labels = list(config.labels or dataset.labels)
    shots = cut_shots(tokenizer, pick_shots(dataset.train, labels, k, seed=config.seed))
    texts = [e.text for e in dataset.test]
    with_shots = prompt_lengths(tokenizer, texts, labels, shots)
    without = prompt_lengths(tokenizer, texts, labels)
    return RunCost(steps=0, evals=0, train_tokens=0, eval_tokens=sum(with_shots) + sum(without),
                   example_tokens=round(sum(without) / len(without)) if without else 0,
                   shot_tokens=(with_shots[0] - without[0]) if texts else 0)


def estimate_cost(config: TrainConfig, dataset: Dataset, tokenizer) -> RunCost:
    labels = list(config.labels or dataset.labels)
    train = select_examples(dataset.train, config.train_limit, config.seed)
    steps, steps_per_epoch = count_steps(config, len(train))
    evals = count_evals(config, steps, steps_per_epoch) if dataset.validation else 0
    train_lengths = example_lengths(tokenizer, [e.text for e in train], labels, config.max_length)
    val_tokens = sum(example_lengths(tokenizer, [e.text for e in dataset.validation], labels, config.max_length))
    test_tokens = sum(example_lengths(tokenizer, [e.text for e in dataset.test], labels, config.max_length))
    per_epoch = sum(train_lengths)
    # A capped run (max_steps) trains only its share of the epochs.
    epochs_run = min(config.epochs, steps / steps_per_epoch)
    return RunCost(
        steps=steps,
        evals=evals,
        train_tokens=round(per_epoch * epochs_run),
        eval_tokens=evals * val_tokens + test_tokens * (2 if config.zero_shot else 1),
        example_tokens=round(per_epoch / len(train)) if train else 0,
    )
