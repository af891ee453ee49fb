"""The worker side of a run: from a Run row to mlcore calls and back to an Outcome.

Runs in the Celery gpu worker's child process (labs.worker.run_execute calls execute()); torch
and the model libraries are imported here, lazily, never in the web process or the worker's
parent process.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from labs import storage
from labs.models import Run
from mlcore.config import TrainConfig, select_examples
from mlcore.data import Example, load_bundled, split_examples
from mlcore.gguf_export import ExportError, check_exportable
from mlcore.masking import encode, token_view
from mlcore.prompt import cut_shots, pick_shots, prompt_token_count
from mlcore.registry import load_base, load_tokenizer


class RunError(Exception):
    """A run cannot start for a reason the learner can act on."""


@dataclass
class Outcome:
    cancelled: bool
    metrics: dict | None = None
    predictions: list = field(default_factory=list)
    summary: str = ""


def load_dataset(run: Run):
    return dataset_of(run.config, run.upload if run.upload_id else None)


def dataset_of(config: dict, upload):
    """A run's dataset, from its config and upload. Uploads are split with a fixed seed (0), not
    the run's seed, so every run on one upload is scored on the same test examples."""
    if upload is not None:
        examples = [Example(row["text"], row["label"]) for row in upload.examples]
        return split_examples(examples, 0, name=upload.dataset_key)
    return load_bundled(config["dataset"])


def execute(run: Run, recorder, *, resume: bool = False) -> Outcome:
    """Train (or prompt) the run. resume=True: a worker was lost or paused mid-run; continue
    from the checkpoint in its artifact folder, if one was written."""
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
    return _fine_tune(run, config, dataset, recorder, resume=resume)


def _parent_adapter(run: Run, config):
    parent = run.continue_from
    adapter = storage.adapter_dir(parent) if parent.status == Run.Status.SUCCEEDED else None
    if adapter is None:
        raise RunError(f"run {parent.pk} has no trained adapter to continue from (it is {parent.status}).")
    if parent.config.get("base_model") != config.base_model:
        raise RunError(f"run {parent.pk} adapts {parent.config.get('base_model')}, not {config.base_model}.")
    return adapter


def _save_token_view(run: Run, config, dataset, labels) -> None:
    """What the model reads and what it is graded on, for the first training example."""
    examples = select_examples(dataset.train, config.train_limit, config.seed)
    if not examples:
        return
    tokenizer = load_tokenizer(config.base_model)
    encoded = encode(tokenizer, examples[0], labels, max_length=config.max_length, mask_prompt=config.mask_prompt)
    rows = token_view(tokenizer, encoded)
    Run.objects.filter(pk=run.pk).update(token_view=rows)


def _fine_tune(run: Run, config, dataset, recorder, *, resume: bool = False) -> Outcome:
    from mlcore.train import train  # mlcore.train imports torch: only when a model runs

    out_dir = run.artifact_dir  # this host's working folder; what other hosts need goes to the store
    if not resume:
        # This worker claimed the run, so nothing else writes here; clear what an earlier test
        # database may have left.
        shutil.rmtree(out_dir, ignore_errors=True)
    recorder.log(f"Loading {config.base_model} and adding LoRA (r={config.lora_r}, alpha={config.lora_alpha}).")
    if resume:
        # The stored checkpoint, whichever host wrote it; a local one may be older, or another attempt's.
        stored = storage.current_set(run.pk, storage.CHECKPOINT)
        if stored is not None:
            storage.restore_into(stored, out_dir / "checkpoint")
        else:
            shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
        step = checkpoint_step(out_dir)
        recorder.log(f"Resuming from the checkpoint at step {step}." if step else
                     "No checkpoint was written before the worker stopped: training starts again from step 0.")
    if recorder.should_stop():
        return Outcome(cancelled=True)
    progress = ProgressReport(recorder, config, store_checkpoint=lambda folder: storage.artifacts_store(
        run_id=run.pk, kind=storage.CHECKPOINT, folder=folder, attempt=run.attempts))
    result = train(config, dataset, out_dir, report=progress.report, resume=resume)
    if result.cancelled:
        if Run.objects.filter(pk=run.pk, cancel_requested=True).exists():  # not a pause: nothing will resume it
            storage.artifacts_delete(run_id=run.pk, kind=storage.CHECKPOINT)
        return Outcome(cancelled=True)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    with open(out_dir / "test_predictions.jsonl", encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f if line.strip()]
    if run.lab_id and run.lab.quantize:
        checked = check_exports(run.lab.quantize, run.config["base_model"], out_dir, dataset.test, predictions, recorder)
        if checked is None:
            return Outcome(cancelled=True)
        metrics["quantization"] = checked
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")  # stored with the adapter
    # Stored before the run is marked succeeded: a host that sees it succeeded finds its adapter.
    storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=out_dir, names=storage.ADAPTER_FILES,
                            attempt=run.attempts)
    storage.artifacts_delete(run_id=run.pk, kind=storage.CHECKPOINT)
    shutil.rmtree(out_dir, ignore_errors=True)  # the store holds it now; readers use their cache
    return Outcome(cancelled=False, metrics=metrics, predictions=predictions, summary=_summary(metrics))


def check_exports(plan: list[dict], base_model: str, adapter_dir, examples, predictions: list[dict], recorder) -> dict | None:
    """The lab's GGUF exports of the adapter just trained (`plan`: [{"quant", "rounding"}]), each
    classified on the test split and compared with the unquantized classifier's own test labels
    (mlcore.gguf_classify.check_export). None when the run is cancelled (or paused) between two.

    {"rows": [check_export's dict per export], "n": test examples, "error": why there are no rows}"""
    from mlcore.gguf_classify import check_export  # mlcore.gguf_classify imports torch: only when a model runs

    try:
        check_exportable(base_model)  # the learner may have picked another base model in the form
    except ExportError as exc:
        recorder.log(f"No GGUF exports to check: {exc}.")
        return {"rows": [], "n": len(predictions), "error": str(exc)}
    reference = [p["predicted"] for p in predictions]
    tokenizer = load_tokenizer(base_model)  # the file's own takes ~10 s to rebuild, five times
    rows = []
    with tempfile.TemporaryDirectory(prefix=".exports-", dir=adapter_dir) as work:
        for i, item in enumerate(plan, start=1):
            if recorder.should_stop():
                return None
            name = f"{item['quant']}" + (f" with {item['rounding']} rounding" if item.get("rounding") else "")
            recorder.log(f"GGUF export {i} of {len(plan)}: {name}, then the {len(reference)} test reviews through it.")
            row = check_export(adapter_dir, examples, reference, quant=item["quant"], rounding=item.get("rounding"),
                               work_dir=Path(work), tokenizer=tokenizer)
            rows.append(row)
            recorder.log(f"{name}: {row['size'] / 1e6:.1f} MB, {row['agreement']:.1%} of the labels unchanged "
                         f"({len(row['changed'])} changed), macro-F1 {row['macro_f1']:.3f} ({row['seconds']:.0f} s).")
    return {"rows": rows, "n": len(reference)}


class ProgressReport:
    """train()'s report callback in front of the recorder: an honest ETA and the scoring phase.

    - A step's ETA is a range while it is a guess. Until a validation pass has been timed,
      mlcore prices scoring at a third of a training example; on the laptop that was 3x too low
      (the ETA went 2:27 -> 8:43 -> 0:42 in one run). The range runs from that estimate to one
      pricing scoring like training; after the first pass, it is +-25% for the first tenth of
      the steps, then one value.
    - Scoring the test split (twice, with the zero-shot baseline) came after the last step with
      no event for ~54 s: it is recorded as "scoring" events with its own progress and ETA.
    - Each checkpoint mlcore writes goes to the artifact store at once (store_checkpoint), so a
      worker on any host can resume the run if this one is lost.
    """

    SCORING_EVERY_S = 1.0  # record a scoring event at most this often (and always the last of a phase)

    def __init__(self, recorder, config, store_checkpoint=None):
        self.recorder, self.config, self.store_checkpoint = recorder, config, store_checkpoint
        self.evaluated = False
        self.scoring_started: float | None = None
        self.last_scoring = 0.0

    def report(self, event: dict):
        kind = event.get("type")
        if kind == "eval":
            self.evaluated = True
        elif kind == "step":
            event = {**event, **self.eta_range(event)}
        elif kind == "scoring":
            self.scoring(event)
            return None
        elif kind == "checkpoint":
            if self.store_checkpoint is not None:
                self.store_checkpoint(event["path"])
            return None
        return self.recorder.report(event)

    def eta_range(self, event: dict) -> dict:
        step, total, eta = event["step"], event["total_steps"], event.get("eta_s")
        if eta is None or step >= total:
            return {}
        per_step = self.config.batch_size * self.config.grad_accum / event["samples_per_s"] if event.get("samples_per_s") else 0
        train_left = min(eta, per_step * (total - step))
        if not self.evaluated:
            return {"eta_low_s": eta, "eta_high_s": train_left + 3 * (eta - train_left)}
        if step < max(3, total // 10):
            return {"eta_low_s": 0.75 * eta, "eta_high_s": 1.25 * eta}
        return {}

    def scoring(self, event: dict) -> None:
        now = time.monotonic()
        phases = 2 if self.config.zero_shot else 1
        if self.scoring_started is None:
            self.scoring_started = now
            self.recorder.log(f"Scoring the test split ({event['total']} reviews)"
                              + (", then the base model on it for the zero-shot baseline." if phases == 2 else "."))
        done_all = event["done"] + (event["total"] if event["phase"] == "zero_shot" else 0)
        total_all = event["total"] * phases
        last = event["done"] == event["total"]
        if not last and now - self.last_scoring < self.SCORING_EVERY_S:
            return
        self.last_scoring = now
        elapsed = now - self.scoring_started
        payload = {"phase": event["phase"], "done": event["done"], "total": event["total"], "done_all": done_all,
                   "total_all": total_all, "elapsed_s": elapsed, "eta_s": elapsed / done_all * (total_all - done_all)}
        self.recorder.event("scoring", payload, force=last)


def checkpoint_step(out_dir) -> int:
    """The step of the resumable checkpoint train() left in out_dir (0: none)."""
    import torch  # torch: seconds and ~1 GB to load, only when a model runs

    state = out_dir / "checkpoint" / "trainer_state.pt"
    return int(torch.load(state, weights_only=False)["step"]) if state.exists() else 0


def _few_shot(run: Run, config, dataset, labels, recorder) -> Outcome:
    """No training: the base model with `run.shots` labelled examples in the prompt, scored
    by the same classifier and evaluate code as a fine-tuned run, on the same test split."""
    from mlcore.classify import Classifier  # mlcore.classify imports torch: only when a model runs
    from mlcore.evaluate import evaluate

    started = time.perf_counter()
    recorder.log(f"Loading {config.base_model}; {run.shots} demonstrations go into every prompt.")
    model, tokenizer = load_base(config.base_model, device=config.device)
    # Cut like the review, as the launch's cost estimate counted them (mlcore.cost.estimate_fewshot_cost).
    shots = cut_shots(tokenizer, pick_shots(dataset.train, labels, run.shots, seed=config.seed))
    extra_tokens = prompt_token_count(tokenizer, "", labels, shots) - prompt_token_count(tokenizer, "", labels)
    if recorder.should_stop():
        return Outcome(cancelled=True)
    recorder.log(f"Scoring {len(dataset.test)} test reviews with the few-shot prompt (+{extra_tokens} prompt tokens each).")
    test = evaluate(Classifier(model, tokenizer, labels, shots=shots), dataset.test, batch_size=config.eval_batch_size)
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


def _summary(metrics: dict) -> str:
    test, zero = metrics["test"], metrics.get("zero_shot")
    text = f"Succeeded: test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}"
    if zero:
        text += f" (zero-shot baseline: accuracy {zero['accuracy']:.3f}, macro-F1 {zero['macro_f1']:.3f})"
    return text + "."
