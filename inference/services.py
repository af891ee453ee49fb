"""Serving: which model a request names, checking its input, classifying with a cached model.

A request names a target: one of the learner's fine-tuned runs ("run": 12 / model "run-12"),
or a base model by its registry name (zero-shot label scoring, the same prompt and scoring as
the fine-tuned model, just without an adapter). Views and the API call only these functions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.http import Http404
from django.utils import dateformat, timezone

from inference import ratelimit
from inference.serving import Loaded, classifiers
from labs import storage
from labs.access import get_run_for_user, visible_to
from labs.models import Run
from mlcore.data import DEFAULT_LABELS, LABEL_ORDER
from mlcore.prompt import prompt_token_count, truncate_text
from mlcore.registry import BASE_MODELS, ModelNotAvailable, available_user_models, get_spec, how_to_provide
from ops.text import text_problem  # (also imported from here by the API and forms)

MAX_TEXT_CHARS = 20_000  # cut before tokenising: far past the token limit, and cheap to tokenise


class InputError(Exception):
    """The request cannot be served as sent; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request", param: str | None = None,
                 limit: int | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.param, self.limit = message, status, code, param, limit


class ModelUnavailable(Exception):
    """The target is known but its weights are not on this server (503)."""


@dataclass(frozen=True)
class Target:
    """A model that can serve: a run's adapter on its base model, or a base model alone."""

    model_id: str  # the OpenAI-style name: "run-12" or the base model's registry name
    title: str  # for people
    base_model: str
    adapter_dir: Path | None = None  # a run's: this host's copy of its stored adapter, set when serving it
    adapter_version: str = ""  # ... and that adapter's content hash (labs.storage)
    labels: tuple[str, ...] | None = None
    run_id: int | None = None
    created: int = 0  # unix time, for /v1/models
    macro_f1: float | None = None  # a run's test macro-F1: how the learner tells a good run from a bad one

    @property
    def cache_key(self) -> tuple:
        # The model only: labels are applied per call (Loaded.predict), so callers alternating
        # label lists share one loaded model instead of reloading it on every request.
        # A run's key holds its adapter's version: a replaced adapter is a new model, never the old merge.
        return ("run", self.run_id, self.adapter_version) if self.run_id else ("base", self.base_model)


@dataclass
class Classified:
    predictions: list  # mlcore.classify.Prediction, in input order
    latency_ms: float
    loaded: Loaded
    labels: tuple[str, ...] = ()  # the labels scored, in order


# --- which model ---------------------------------------------------------------------------


def base_model_names() -> list[str]:
    """Base models this server offers for zero-shot classification (weights on disk), default first."""
    names = [spec.name for spec in available_user_models()]
    if settings.LABS_ALLOW_TEST_MODEL:  # the tiny random model, for tests only
        names.append("tiny-test")
    return names


def run_model_id(run_id: int) -> str:
    return f"run-{run_id}"


def target_for_run(user, run_id) -> Target:
    """The run's adapter if `user` may see the run and it finished training; else Http404.

    Unknown, unfinished, failed and other people's private runs all answer the same 404.
    """
    run = get_run_for_user(user, run_id)
    if not run.has_adapter:
        raise Http404(f"Run {run.pk} has no trained adapter to serve (it is {run.get_status_display()}"
                      f"{', a few-shot prompting run' if run.mode == run.Mode.FEWSHOT else ''}).")
    stored = storage.adapter_set(run)
    if stored is None:
        raise Http404(f"The adapter files of run {run.pk} are missing from the artifacts storage.")
    # Fetched here, in the request's thread and database connection, not in the classifying thread.
    return replace(_run_target(run), adapter_dir=storage.materialise(stored), adapter_version=stored.version)


def target_for_base(name: str, labels=None) -> Target:
    if name not in base_model_names():
        if name in BASE_MODELS and BASE_MODELS[name].user_visible:  # known, but its weights are not here
            raise ModelUnavailable(how_to_provide(name))
        raise Http404(f"No model named {name!r}. Use a base model ({', '.join(base_model_names())}) "
                      "or one of your runs, e.g. run-12.")
    if labels is not None:
        if (not isinstance(labels, list) or not all(isinstance(label, str) for label in labels)
                or len(labels) < 2 or len(set(labels)) != len(labels)
                or any(label not in LABEL_ORDER for label in labels)):
            raise InputError(f"labels must be a list of at least two different labels from {', '.join(LABEL_ORDER)}",
                             param="labels")
    labels = tuple(labels or DEFAULT_LABELS)
    return Target(model_id=name, title=f"{get_spec(name).label} (zero-shot)", base_model=name, labels=labels)


def target_for_model_id(user, model_id) -> Target:
    """An OpenAI-style model name: "run-12" (or "run12") for a run, else a base model name."""
    if not isinstance(model_id, str) or not model_id:
        raise InputError("model is required: a run (e.g. run-12) or a base model name", param="model")
    if model_id.startswith("run"):
        number = model_id[3:].lstrip("-_:")
        if number.isdigit():
            return target_for_run(user, int(number))
    return target_for_base(model_id)


def targets_for_user(user) -> list[Target]:
    """What `user` can classify with: their servable runs (newest first), then base models."""
    # Everyone's list shows their own runs; staff may still serve anyone's run by id (target_for_run).
    runs = (visible_to(user, Run.objects.filter(status=Run.Status.SUCCEEDED, mode=Run.Mode.FINETUNE)).filter(owner=user)
            .select_related("lab").order_by("-created_at"))
    bases = base_model_names()  # a run whose base model's weights are not here cannot load either
    return ([_run_target(run) for run in runs[:100] if run.config.get("base_model") in bases]
            + [target_for_base(name) for name in bases])


def _run_target(run) -> Target:
    # Score and date first: "Run 2 · Fine-tune a sentiment classifier…" alone could not tell a 1-epoch
    # clone from the default run, and a long lab title is cut off in a phone's select.
    macro_f1 = (run.test_metrics or {}).get("macro_f1")
    when = dateformat.format(timezone.localtime(run.finished_at or run.created_at), "M j, H:i")
    title = " · ".join([f"Run {run.pk}", *([f"macro-F1 {macro_f1:.3f}"] if macro_f1 is not None else []), when,
                        *([run.label] if run.label else []), *([run.lab.title] if run.lab else [])])
    return Target(model_id=run_model_id(run.pk), title=title, base_model=run.config.get("base_model", ""),
                  run_id=run.pk, created=int(run.created_at.timestamp()), macro_f1=macro_f1)


def default_target(targets: list[Target]) -> Target | None:
    """What answers when the learner has not chosen: their best finished run by test macro-F1
    (the newer of equals), else the first base model. The newest run is often a cut-down
    experiment (a 1-epoch clone at macro-F1 0.26 answered "neutral" to "Arrived broken.")."""
    runs = [t for t in targets if t.run_id and t.macro_f1 is not None]
    if runs:
        return max(runs, key=lambda t: (t.macro_f1, t.run_id))
    return next((t for t in targets if not t.run_id), targets[0] if targets else None)


# --- checking input ------------------------------------------------------------------------


def clean_texts(texts, *, limit: int) -> list[str]:
    """The texts of a request, or InputError: 400 for a malformed or empty one, 413 for too many."""
    if isinstance(texts, str):  # not taken as a list of one: the caller may have meant a list and sent one text
        raise InputError('texts must be a list of strings, not a string: send "texts": ["..."] '
                         '(or "text": "..." for one review)', param="texts", code="invalid_type")
    if not isinstance(texts, list) or not texts:
        raise InputError("texts must be a non-empty list of strings", param="texts")
    if len(texts) > limit:
        raise InputError(f"Too many texts: {len(texts)} in one request; the limit is {limit}.", status=413,
                         code="too_many_texts", param="texts", limit=limit)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] must be a string, not {json_type(text)}", param="texts")
        problem = text_problem(text)
        if problem:
            raise InputError(f"texts[{i}] {problem}", param="texts", code="invalid_text")
        if not text.strip():
            raise InputError(f"texts[{i}] is empty: give the review text to classify" if len(texts) > 1
                             else "The text is empty: give the review text to classify.", param="texts", code="empty_text")
    return texts


def json_type(value) -> str:
    """A JSON value's type in the words of JSON, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# --- classifying ---------------------------------------------------------------------------

_threads_lock = threading.Lock()
_threads_set = False


def _set_threads() -> None:
    """Apply INFERENCE_THREADS once per process, before the first model loads."""
    global _threads_set
    with _threads_lock:
        if not _threads_set and settings.INFERENCE_THREADS:
            import torch  # torch: seconds and ~1 GB to load, only when a model runs

            torch.set_num_threads(settings.INFERENCE_THREADS)
        _threads_set = True


def _load(target: Target):
    from mlcore.classify import load_classifier  # mlcore.classify imports torch: only when a model runs

    _set_threads()
    try:
        classifier = load_classifier(target.base_model, target.adapter_dir, merge=True,
                                     labels=list(target.labels) if target.labels else None,
                                     backend=settings.INFERENCE_BACKEND)
    except ModelNotAvailable as exc:
        raise ModelUnavailable(str(exc)) from exc
    classifier.predict(["Warm-up."], batch_size=1)  # builds the prefix cache now, not in a request
    return classifier


def loaded_classifier(target: Target, user=None) -> Loaded:
    """The target's classifier from this process's cache, loading it on first use: a load is
    charged to `user` (ratelimit.charge_model_load: RateLimited), and waits for a load slot
    (serving.LoadsBusy); a cached model costs neither."""
    charge = (lambda: ratelimit.charge_model_load(user)) if user is not None else None
    return classifiers.get(target.cache_key, lambda: _load(target), before_load=charge)


def classify(*, target: Target, texts: list[str], user=None) -> Classified:
    """Predictions for already-checked texts. Latency is the whole call: queueing, and the
    model load when this is the first request for the target in this process."""
    tick = time.perf_counter()
    texts = [text[:MAX_TEXT_CHARS] if len(text) > MAX_TEXT_CHARS else text for text in texts]
    cut = [len(text) >= MAX_TEXT_CHARS for text in texts]
    loaded = loaded_classifier(target, user)
    predictions = loaded.predict(texts, batch_size=settings.INFERENCE_BATCH_SIZE, labels=target.labels)
    if any(cut):
        predictions = [replace(p, truncated=True) if c else p for p, c in zip(predictions, cut, strict=True)]
    labels = tuple(target.labels) if target.labels else tuple(loaded.labels)
    return Classified(predictions, (time.perf_counter() - tick) * 1000, loaded, labels)


def prediction_json(prediction) -> dict:
    return {"label": prediction.label, "probs": prediction.probs, "truncated": prediction.truncated}


def usage(loaded: Loaded, text: str, label: str) -> dict:
    """OpenAI-style token usage of one classification: the whole templated prompt the model
    reads, and the label's tokens as the completion (it is what the answer holds)."""
    classifier = loaded.classifier
    tokenizer = classifier.tokenizer
    text, _ = truncate_text(tokenizer, text[:MAX_TEXT_CHARS], classifier.max_text_tokens)
    prompt = prompt_token_count(tokenizer, text, classifier.labels, classifier.shots, prompt=classifier.prompt)
    completion = len(tokenizer(label, add_special_tokens=False)["input_ids"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
