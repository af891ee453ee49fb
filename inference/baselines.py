"""Baselines of a run: launch, compute (in the Celery default worker or the management command),
and the comparison table of the run's results page.

Methods, one BaselineResult row each per run:
    finetuned        the run's own adapter, merged, served as the API serves it (local)
    zero-shot-local  the base model, label scoring, no examples (local)
    few-shot-local   the base model with k examples as earlier chat turns (local)
    zero-shot-api    an LLM API, no examples (external unless the endpoint is on this machine)
    few-shot-api     an LLM API with the same k examples
All on the run's test split; the k examples come from its train split, balanced across labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction

from inference import prompting
from inference.models import BaselineResult
from labs import storage
from labs.models import Run
from labs.scheduling import estimate_tokenizer
from labs.training import load_dataset
from mlcore.prompt import DEFAULT_MAX_TEXT_TOKENS, cut_shots, pick_shots
from mlcore.registry import load_base
from ops import limits, queue
from ops.llm import llm_configured

log = logging.getLogger(__name__)
Method = BaselineResult.Method
Status = BaselineResult.Status
API_METHODS = (Method.ZERO_SHOT_API, Method.FEW_SHOT_API)
API_ENV_HINT = ("Set TUNELAB_LLM_API_KEY to enable (and TUNELAB_LLM_BASE_URL, TUNELAB_LLM_MODEL for a server other "
                "than OpenAI's gpt-4o-mini, e.g. a vLLM server or this site's own /v1), then run the baselines again.")


class BaselinesBusy(Exception):
    """Baselines of this run are already queued or running."""


def api_location() -> tuple[str, bool]:
    """(where the reviews go, whether that is outside this machine) for the API rows."""
    url = settings.LLM_API_BASE_URL
    host = urlparse(url).hostname or url
    local = prompting.is_local_url(url)
    return (f"this machine ({host})" if local else f"external: {host}"), not local


def methods_for(run) -> list[str]:
    return ([Method.FINETUNED] if run.has_adapter else []) + [Method.ZERO_SHOT_LOCAL, Method.FEW_SHOT_LOCAL, *API_METHODS]


# --- launch -------------------------------------------------------------------------------------


@transaction.atomic
def baselines_launch(*, run, k: int | None = None, limit: int | None = None, enqueue: bool = True) -> list[BaselineResult]:
    """(Re)set the run's baseline rows to queued and send the computation to the default queue.

    Raises BaselinesBusy while a previous launch is still queued or running.
    """
    Run.objects.select_for_update().filter(pk=run.pk).exists()  # two clicks at once: one launch
    if BaselineResult.objects.filter(run=run, status__in=[Status.QUEUED, Status.RUNNING]).exists():
        raise BaselinesBusy("The baselines of this run are already being computed.")
    k = settings.BASELINE_SHOTS if k is None else k
    location, external = api_location()
    rows = []
    for method in methods_for(run):
        api = method in API_METHODS
        defaults = dict(
            status=Status.QUEUED, k=k if "few-shot" in method else 0,
            model_name=settings.LLM_MODEL if api else run.config.get("base_model", ""),
            endpoint=settings.LLM_API_BASE_URL if api else "local", is_external=external if api else False,
            n=0, accuracy=None, macro_f1=None, unparseable=0, latency_p50_ms=None, latency_p95_ms=None,
            prompt_tokens=0, completion_tokens=0, cost_per_1000=None, compute_s_per_1000=None,
            details={"limit": limit, "location": location if api else "this server"}, message="",
        )
        row, _ = BaselineResult.objects.update_or_create(run=run, method=method, defaults=defaults)
        rows.append(row)
    if enqueue:
        # By name: inference.tasks imports this module.
        transaction.on_commit(lambda: queue.enqueue("inference.tasks.compute_baselines", run.pk))
    return rows


# --- compute ------------------------------------------------------------------------------------


def _mark(row: BaselineResult, status: str, message: str = "") -> None:
    row.status, row.message = status, message
    row.save(update_fields=["status", "message", "updated_at"])


def _store(row: BaselineResult, evaluation: prompting.Evaluation, *, api: bool, extra: dict | None = None) -> None:
    row.status = Status.SUCCEEDED
    row.n, row.accuracy, row.macro_f1 = evaluation.n, evaluation.accuracy, evaluation.macro_f1
    row.unparseable = evaluation.unparseable + evaluation.errors
    row.latency_p50_ms, row.latency_p95_ms = evaluation.latency_p50_ms, evaluation.latency_p95_ms
    row.prompt_tokens, row.completion_tokens = evaluation.prompt_tokens, evaluation.completion_tokens
    if api:
        row.cost_per_1000 = evaluation.cost_per_1000(settings.LLM_PRICE_INPUT_PER_M, settings.LLM_PRICE_OUTPUT_PER_M)
        row.compute_s_per_1000 = None
    else:
        row.cost_per_1000 = 0.0  # no per-call bill; compute_s_per_1000 says what it costs this machine
        row.compute_s_per_1000 = evaluation.busy_s / max(evaluation.n, 1) * 1000
    parts = []
    if evaluation.unparseable:
        parts.append(f"{evaluation.unparseable} of {evaluation.n} replies named no label (counted wrong)")
    if evaluation.errors:
        parts.append(f"{evaluation.errors} API calls failed (counted wrong)")
    row.message = "; ".join(parts)
    row.details = {**row.details, **evaluation.details, **(extra or {}), "errors": evaluation.errors,
                   "prices_per_m": {"input": settings.LLM_PRICE_INPUT_PER_M, "output": settings.LLM_PRICE_OUTPUT_PER_M}}
    row.save()


@dataclass
class _Context:
    run: object
    labels: list[str]
    test: list
    train: list


def _context(run, limit: int | None) -> _Context:
    dataset = load_dataset(run)
    labels = list(run.config.get("labels") or dataset.labels)
    test = dataset.test[:limit] if limit else list(dataset.test)
    return _Context(run, labels, test, list(dataset.train))


def baselines_compute(*, run_id: int) -> list[BaselineResult]:
    """Compute every queued baseline row of the run, one method after the other. A row that
    fails records why and the others go on. Rows no longer queued (a redelivered task finding
    them done) are left alone."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return []
    queued = {row.method: row for row in BaselineResult.objects.filter(run=run, status=Status.QUEUED)}
    if not queued:
        return []
    limit = next(iter(queued.values())).details.get("limit")
    try:
        context = _context(run, limit)
    except Exception as exc:  # the dataset is gone (an upload deleted): every row says so
        log.exception("baselines of run %s: no dataset", run.pk)
        for row in queued.values():
            _mark(row, Status.FAILED, f"Cannot load the run's dataset: {exc}")
        return list(queued.values())

    base = None  # the base model, loaded once for both local prompting rows
    for method in [m for m in methods_for(run) if m in queued]:
        row = queued[method]
        _mark(row, Status.RUNNING)
        try:
            if method in API_METHODS:
                _compute_api(row, context)
            else:
                if method != Method.FINETUNED and base is None:
                    base = load_base(run.config["base_model"])
                _compute_local(row, context, base)
        except Exception as exc:
            log.exception("baseline %s of run %s failed", method, run.pk)
            _mark(row, Status.FAILED, f"{type(exc).__name__}: {exc}")
    return list(BaselineResult.objects.filter(run=run))


def _shots(row: BaselineResult, context: _Context) -> list:
    return pick_shots(context.train, context.labels, row.k, seed=context.run.config.get("seed", 0)) if row.k else []


def _compute_local(row: BaselineResult, context: _Context, base) -> None:
    from mlcore.classify import Classifier, load_classifier  # mlcore.classify imports torch: only when a model runs

    if row.method == Method.FINETUNED:
        classifier = load_classifier(context.run.config["base_model"], storage.adapter_dir(context.run), merge=True,
                                     labels=context.labels)
        extra = {}
    else:
        model, tokenizer = base
        shots = _shots(row, context)
        # fuse: the base model was loaded for these rows alone, and the fine-tuned row computes
        # with the fused forward too, so the latencies compare like with like.
        classifier = Classifier(model, tokenizer, context.labels, shots=shots, fuse=True)
        extra = {"shots": [{"text": s.text, "label": s.label} for s in classifier.shots]}  # as cut for the prompt
    _store(row, prompting.evaluate_local(classifier, context.test), api=False, extra=extra)


def _compute_api(row: BaselineResult, context: _Context) -> None:
    if not llm_configured():
        _mark(row, Status.SKIPPED, API_ENV_HINT)
        return
    # Reviews and examples cut as the local classifier cuts them (mlcore.prompt): an uploaded text
    # of megabytes must not be sent, and billed, whole on every call. The base model's tokenizer
    # counts the tokens: the API's own may differ a little, which the settlement corrects.
    tokenizer = estimate_tokenizer(context.run.config["base_model"])
    shots = cut_shots(tokenizer, _shots(row, context))
    test = cut_shots(tokenizer, context.test, DEFAULT_MAX_TEXT_TOKENS)
    per_call = [prompting.api_tokens(tokenizer, e.text, context.labels, shots) for e in test]
    reservation = _reserve_api_tokens(row, sum(per_call))
    if reservation is None:
        return
    try:
        evaluation = prompting.evaluate_api(
            test, context.labels, shots=shots, base_url=settings.LLM_API_BASE_URL, api_key=settings.LLM_API_KEY,
            model=settings.LLM_MODEL, timeout_s=settings.LLM_TIMEOUT_S, concurrency=settings.BASELINE_API_CONCURRENCY,
        )
    except prompting.ApiConfigError as exc:
        _settle_api_tokens(reservation, 0)  # refused up front (bad key, unknown model): nothing billed
        _mark(row, Status.FAILED, f"The API refused the request ({exc}). Check TUNELAB_LLM_API_KEY, "
                                  "TUNELAB_LLM_BASE_URL and TUNELAB_LLM_MODEL.")
        return
    # What the API reported using; a call that reported nothing (or failed: it may still be
    # billed) counts at its estimate.
    unknown = evaluation.unreported + evaluation.errors
    spent = evaluation.prompt_tokens + evaluation.completion_tokens + round(unknown * sum(per_call) / max(len(per_call), 1))
    _settle_api_tokens(reservation, spent)
    _store(row, evaluation, api=True, extra={"shots": [{"text": s.text, "label": s.label} for s in shots],
                                             "reserved_tokens": sum(per_call)})


def _reserve_api_tokens(row: BaselineResult, tokens: int):
    """Reserve the row's LLM tokens (prompts and the longest replies) from the run owner's daily
    allowance BEFORE any call, all or nothing (ops.limits: atomic, so two evaluations at once
    cannot both spend the last tokens). Tokens, not calls: a call with 64 long examples in its
    prompt costs a hundred short ones. None, with the row marked skipped and why, when they do
    not fit."""
    limit = settings.BASELINE_API_TOKENS_PER_DAY
    try:
        charge = limits.take(f"llm-tokens:user:{row.run.owner_id}", tokens, limit=limit, window_s=86_400)
    except limits.LimiterUnavailable:
        _mark(row, Status.SKIPPED, "The LLM spend counter is unavailable, so no API calls were made: run the baselines "
                                   "again in a minute.")
        return None
    if not charge.charged:
        _mark(row, Status.SKIPPED, f"This baseline needs about {tokens:,} LLM API tokens and {charge.remaining:,} of your "
                                   f"{limit:,} a day are left (TUNELAB_BASELINE_API_TOKENS_PER_DAY): try again later, "
                                   "or with fewer examples (k).")
        return None
    return charge


def _settle_api_tokens(charge, spent: int) -> None:
    """Give back the reserved tokens that were not spent (never more than was reserved)."""
    try:
        limits.adjust(charge, min(spent, charge.charged))
    except limits.LimiterUnavailable:
        pass  # they stay counted for the day: the safe side


# --- the comparison table -----------------------------------------------------------------------


SHORT_TITLES = {
    Method.FINETUNED: "Fine-tuned (this run)",
    Method.ZERO_SHOT_LOCAL: "Zero-shot, local",
    Method.FEW_SHOT_LOCAL: "Few-shot, local",
    Method.ZERO_SHOT_API: "Zero-shot, API",
    Method.FEW_SHOT_API: "Few-shot, API",
}


def comparison(run) -> dict:
    """Rows for the results page: every method, computed or not, in a fixed order."""
    rows = {row.method: row for row in BaselineResult.objects.filter(run=run)}
    location, external = api_location()
    table = []
    for method in methods_for(run):
        row = rows.get(method)
        api = method in API_METHODS
        entry = {
            "method": method, "title": SHORT_TITLES[method], "row": row,
            "location": (row.details.get("location") if row else None) or (location if api else "this server"),
            "is_external": (row.is_external if row else external) if api else False,
            "needs_key": api and (row is None or row.status == Status.SKIPPED) and not llm_configured(),
        }
        if row and row.k:
            entry["title"] = f"{entry['title']} (k={row.k})"
        trained = {Method.FINETUNED: run.test_metrics, Method.ZERO_SHOT_LOCAL: run.zero_shot_metrics}.get(method)
        if trained and (row is None or row.macro_f1 is None):
            # Training already scored these two on the same test split: show those numbers, the
            # same ones as the metrics table above, rather than "not run" beside them.
            entry["from_training"] = {"macro_f1": trained.get("macro_f1"), "accuracy": trained.get("accuracy"),
                                      "n": trained.get("n")}
        table.append(entry)
    busy = any(row.status in (Status.QUEUED, Status.RUNNING) for row in rows.values())
    return {"rows": table, "busy": busy, "api_configured": llm_configured(), "api_hint": API_ENV_HINT,
            "default_k": settings.BASELINE_SHOTS, "model": settings.LLM_MODEL}
