"""The worker side of a run: from a Run row to mlcore calls and back to an Outcome.

Runs in the Celery gpu worker's child process (services.run_execute calls execute()); torch
and the model libraries are imported here, lazily, never in the web process or the worker's
parent process.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field

from labs.models import Run


class RunError(Exception):
    """A run cannot start for a reason the learner can act on."""


@dataclass
class Outcome:
    cancelled: bool
    metrics: dict | None = None
    predictions: list = field(default_factory=list)
    summary: str = ""


def load_dataset(run: Run):
    """The run's dataset. Uploads are split with a fixed seed (0), not the run's seed, so every
    run on one upload is scored on the same test examples."""
    from mlcore.data import Example, load_bundled, split_examples

    if run.upload_id:
        examples = [Example(row["text"], row["label"]) for row in run.upload.examples]
        return split_examples(examples, 0, name=run.upload.dataset_key)
    return load_bundled(run.config["dataset"])


def execute(run: Run, recorder) -> Outcome:
    from mlcore.train import TrainConfig

    config = TrainConfig.from_dict(run.config)
    if run.continue_from_id:
        config.continue_from = str(_parent_adapter(run, config))
    dataset = load_dataset(run)
    labels = list(config.labels or dataset.labels)
    recorder.log(
        f"Dataset {run.dataset_label}: {len(dataset.train)} training, {len(dataset.validation)} validation and "
        f"{len(dataset.test)} test examples; labels {', '.join(labels)}."
    )
    _save_token_view(run, config, dataset, labels)
    if run.mode == Run.Mode.FEWSHOT:
        return _few_shot(run, config, dataset, labels, recorder)
    return _fine_tune(run, config, dataset, recorder)


def _parent_adapter(run: Run, config):
    parent = run.continue_from
    adapter = parent.artifact_dir
    if parent.status != Run.Status.SUCCEEDED or not (adapter / "adapter_config.json").exists():
        raise RunError(f"run {parent.pk} has no trained adapter to continue from (it is {parent.status}).")
    if parent.config.get("base_model") != config.base_model:
        raise RunError(f"run {parent.pk} adapts {parent.config.get('base_model')}, not {config.base_model}.")
    return adapter


def _save_token_view(run: Run, config, dataset, labels) -> None:
    """What the model reads and what it is graded on, for the first training example."""
    from mlcore.masking import encode, token_view
    from mlcore.registry import load_tokenizer
    from mlcore.train import select_examples

    examples = select_examples(dataset.train, config.train_limit, config.seed)
    if not examples:
        return
    tokenizer = load_tokenizer(config.base_model)
    encoded = encode(tokenizer, examples[0], labels, max_length=config.max_length, mask_prompt=config.mask_prompt)
    rows = token_view(tokenizer, encoded)
    Run.objects.filter(pk=run.pk).update(token_view=rows)


def _fine_tune(run: Run, config, dataset, recorder) -> Outcome:
    from mlcore.train import train

    out_dir = run.artifact_dir
    # This worker claimed the run, so nothing else writes here; clear what an earlier test
    # database or a crashed attempt may have left.
    shutil.rmtree(out_dir, ignore_errors=True)
    recorder.log(f"Loading {config.base_model} and adding LoRA (r={config.lora_r}, alpha={config.lora_alpha}).")
    if recorder.should_stop():
        return Outcome(cancelled=True)
    result = train(config, dataset, out_dir, report=recorder.report)
    if result.cancelled:
        return Outcome(cancelled=True)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    with open(out_dir / "test_predictions.jsonl", encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f if line.strip()]
    return Outcome(cancelled=False, metrics=metrics, predictions=predictions, summary=_summary(metrics))


def _few_shot(run: Run, config, dataset, labels, recorder) -> Outcome:
    """No training: the base model with `run.shots` labelled examples in the prompt, scored
    by the same classifier and evaluate code as a fine-tuned run, on the same test split."""
    import time

    from mlcore.classify import Classifier
    from mlcore.evaluate import evaluate
    from mlcore.prompt import render_prompt
    from mlcore.registry import load_base
    from mlcore.train import select_examples

    started = time.perf_counter()
    shots = select_examples(dataset.train, run.shots, config.seed)
    recorder.log(f"Loading {config.base_model}; {len(shots)} demonstrations go into every prompt.")
    model, tokenizer = load_base(config.base_model, device=config.device)
    prompted = FewShotTokenizer(tokenizer, shots)
    extra_tokens = _prompt_tokens(prompted, labels, render_prompt) - _prompt_tokens(tokenizer, labels, render_prompt)
    if recorder.should_stop():
        return Outcome(cancelled=True)
    recorder.log(f"Scoring {len(dataset.test)} test reviews with the few-shot prompt (+{extra_tokens} prompt tokens each).")
    test = evaluate(Classifier(model, prompted, labels), dataset.test, batch_size=config.eval_batch_size)
    if recorder.should_stop():
        return Outcome(cancelled=True)
    recorder.log("Scoring the zero-shot baseline (no demonstrations).")
    zero_shot = evaluate(Classifier(model, tokenizer, labels), dataset.test, batch_size=config.eval_batch_size)
    metrics = {
        "test": test["metrics"],
        "zero_shot": zero_shot["metrics"],
        "validation": [],
        "train": {"steps": 0, "train_examples": 0, "shots": len(shots), "extra_prompt_tokens": extra_tokens,
                  "elapsed_s": time.perf_counter() - started},
    }
    return Outcome(cancelled=False, metrics=metrics, predictions=test["predictions"], summary=_summary(metrics))


def _prompt_tokens(tokenizer, labels, render_prompt) -> int:
    return len(tokenizer(render_prompt(tokenizer, "", labels), add_special_tokens=False)["input_ids"])


class FewShotTokenizer:
    """The base tokenizer whose chat template also writes the demonstrations, as earlier user /
    assistant turns between the system prompt and the review.

    mlcore's prompt module still renders the prompt (system prompt, label wording, template),
    so the few-shot run is scored exactly like a fine-tuned one; the demonstrations land in the
    shared prefix that the Classifier computes once and reuses for every review.
    """

    def __init__(self, tokenizer, shots):
        self._tokenizer = tokenizer
        self._turns = [
            turn for e in shots for turn in ({"role": "user", "content": e.text}, {"role": "assistant", "content": e.label})
        ]

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def apply_chat_template(self, messages, *args, **kwargs):
        system, rest = list(messages[:1]), list(messages[1:])
        return self._tokenizer.apply_chat_template(system + self._turns + rest, *args, **kwargs)


def _summary(metrics: dict) -> str:
    test, zero = metrics["test"], metrics.get("zero_shot")
    text = f"Succeeded: test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}"
    if zero:
        text += f" (zero-shot baseline: accuracy {zero['accuracy']:.3f}, macro-F1 {zero['macro_f1']:.3f})"
    return text + "."
