"""What a learner does to runs: launch (single runs and groups), upload a dataset, cancel.
The worker's side of a run (claim, record, heartbeat, finish, the reaper) is labs.worker; a
run's numbered events are labs.events; fair use and dispatch are labs.scheduling.

State changes are conditional UPDATEs (`filter(status=...).update(...)`), so a web request, a
worker and the reaper racing on one run cannot both win: whoever moves the status first does,
the others see that they did nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from labs.access import is_unlimited
from labs.events import event_append
from labs.models import DatasetUpload, Lab, Run, RunGroup
from labs.scheduling import LaunchRefused, Planned, continuations_settle, dispatch_soon, launch_check
from mlcore.config import TrainConfig
from mlcore.data import DatasetError, ordered_labels, parse_upload
from ops import queue
from ops import text as json_text

log = logging.getLogger(__name__)

__all__ = ["LaunchRefused"]  # raised by run_launch / group_launch (defined in labs.scheduling)


# --- launch ----------------------------------------------------------------------------------


def build_config(values: dict) -> dict:
    """A validated TrainConfig snapshot. Raises mlcore.config.ConfigError with per-field messages.

    The zero-shot baseline is always computed (same evaluate code, same test split); the device
    is the worker's business; continue_from is resolved by the worker from Run.continue_from;
    checkpoints are written every RUN_CHECKPOINT_EVERY steps so a lost worker costs at most that.
    """
    config = TrainConfig.from_dict({**values, "zero_shot": True, "device": None, "continue_from": None,
                                    "checkpoint_every": settings.RUN_CHECKPOINT_EVERY})
    config.validate()
    return config.to_dict()


def active_launches(user) -> int:
    """Active runs of `user`, a run group counting once: a sweep is one launch."""
    active = Run.objects.filter(owner=user).active()
    return active.filter(group__isnull=True).count() + active.filter(group__isnull=False).values("group").distinct().count()


def _check_quota(user) -> None:
    if is_unlimited(user):
        return
    # Lock the user's row: two launches submitted at once are counted one after the other.
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    limit = settings.MAX_ACTIVE_RUNS_PER_USER
    if active_launches(user) >= limit:
        raise LaunchRefused(
            f"You already have {limit} active run{'s' if limit != 1 else ''} (a lab's group of runs counts as one). "
            "Wait for one to finish, or cancel it, then launch again."
        )


QUEUED_MESSAGE = "Queued: it starts when a training worker is free (learners with less recent GPU time go first)."


@transaction.atomic
def run_launch(
    *, user, lab: Lab | None, config: dict, upload: DatasetUpload | None = None,
    continue_from: Run | None = None, cloned_from: Run | None = None,
) -> Run:
    """Check the limits, then leave the run queued in the database; the dispatcher sends it."""
    config = build_config(config)
    _check_quota(user)
    [estimate] = launch_check(user=user, runs=[Planned("", config)], upload=upload)
    run = Run.objects.create(
        owner=user, lab=lab, config=config, upload=upload,
        continue_from=continue_from, cloned_from=cloned_from,
        estimated_tokens=estimate.tokens, estimated_s=estimate.seconds,
    )
    event_append(run_id=run.pk, type="status", payload={"status": "queued", "message": QUEUED_MESSAGE})
    dispatch_soon()
    return run


@transaction.atomic
def group_launch(*, user, lab: Lab, config: dict, upload: DatasetUpload | None = None) -> RunGroup:
    """One run per variant of a multi-run lab; a run that continues another waits for it."""
    planned = [Planned(v["label"], build_config({**config, **(v.get("overrides") or {})}),
                       v.get("mode", Run.Mode.FINETUNE), v.get("shots", 0)) for v in lab.variants]
    _check_quota(user)
    estimates = launch_check(user=user, runs=planned, upload=upload)  # few-shot runs too: their prompts cost
    group = RunGroup.objects.create(owner=user, lab=lab, title=lab.title, sweep=lab.sweep)
    by_key: dict[str, Run] = {}
    for variant, plan, estimate in zip(lab.variants, planned, estimates, strict=True):
        parent = by_key.get(variant.get("continue_from") or "")
        run = Run.objects.create(
            owner=user, lab=lab, group=group, label=plan.label, mode=plan.mode, shots=plan.shots,
            config=plan.config, upload=upload, continue_from=parent,
            estimated_tokens=estimate.tokens, estimated_s=estimate.seconds,
        )
        by_key[variant["key"]] = run
        message = QUEUED_MESSAGE if parent is None else (
            f"Waiting for run {parent.pk} ({parent.label}) to succeed: this run continues its adapter.")
        event_append(run_id=run.pk, type="status", payload={"status": "queued", "message": message})
    dispatch_soon()
    return group


def upload_parse(*, raw: bytes, filename: str) -> list:
    """An uploaded file's examples, or DatasetError naming the line and the field: mlcore's rules
    (parse_upload) plus what the database must be able to store. PostgreSQL refuses a NUL or a lone
    surrogate in the examples column (a 500 there), and json raises a bare ValueError on an integer
    longer than Python converts, which parse_upload does not expect."""
    try:
        examples = parse_upload(raw, filename)
    except DatasetError:
        raise
    except ValueError:
        raise _long_number_error(raw) from None
    for example in examples:
        if problem := json_text.text_problem(example.text):
            raise DatasetError(f'"text" {problem}', line=_line_of(raw, example.text))
    return examples


def _lines(raw: bytes):
    """(line number, line, the line's JSON object or None) of an upload, for error messages only."""
    for number, line in enumerate(raw.decode("utf-8-sig", "replace").splitlines(), start=1):
        try:
            row = json_text.loads(line)
        except json_text.NumberTooLong as exc:
            row = exc
        except (ValueError, RecursionError):
            row = None
        yield number, line, row


def _long_number_error(raw: bytes):
    """The DatasetError for a JSONL line holding an integer json cannot convert, naming its field."""
    for number, _, row in _lines(raw):
        if isinstance(row, json_text.NumberTooLong):
            return DatasetError(f'"{row.path}" is a number of {row.digits:,} digits; write the label as text', line=number)
    return DatasetError("the file holds a value that cannot be read")


def _line_of(raw: bytes, text: str) -> int | None:
    """The line an example's text came from: its JSONL object's "text", or a CSV line with its NUL."""
    for number, line, row in _lines(raw):
        if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip() == text:
            return number
        if row is None and "\x00" in text and "\x00" in line:
            return number
    return None


def upload_fingerprint(rows: list[dict]) -> tuple[str, int]:
    """(sha256, bytes) of an upload's examples as stored: the same data uploaded again, even as
    CSV instead of JSONL, has the same fingerprint. (Migration 0003 restates this for old rows.)"""
    stored = json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(stored).hexdigest(), len(stored)


@transaction.atomic
def upload_create(*, user, filename: str, examples) -> DatasetUpload:
    """The learner's upload of these examples: the one they already have (launch, cancel and
    launch again stores nothing new), or a new row within their budget (UPLOAD_BYTES_PER_USER).
    To make room, their uploads no run uses go first, oldest first; LaunchRefused if still over."""
    rows = [{"text": e.text, "label": e.label} for e in examples]
    sha256, size = upload_fingerprint(rows)
    existing = DatasetUpload.objects.filter(owner=user, sha256=sha256).order_by("pk").first()
    if existing is not None:
        return existing
    budget = settings.UPLOAD_BYTES_PER_USER
    mine = DatasetUpload.objects.filter(owner=user)
    used = sum(mine.select_for_update().values_list("size_bytes", flat=True))  # two uploads at once count each other
    if used + size > budget:
        for old in mine.filter(runs__isnull=True).order_by("created_at", "pk").only("pk", "size_bytes"):
            old.delete()
            used -= old.size_bytes
            if used + size <= budget:
                break
    if used + size > budget:
        raise LaunchRefused(
            f"Your dataset uploads already take {used / 1e6:.1f} MB, all used by runs; this one ({size / 1e6:.1f} MB) "
            f"would pass your {budget / 1e6:.0f} MB. Launch on one of your earlier uploads (Dataset menu).",
            errors={"upload": "Over your upload budget: choose an earlier upload from the Dataset menu."})
    return DatasetUpload.objects.create(owner=user, filename=filename[:255], examples=rows, sha256=sha256, size_bytes=size,
                                        n_examples=len(rows), labels=ordered_labels(r["label"] for r in rows))


def clone_initial(run: Run) -> dict:
    """Launch-form values that reproduce `run` (clone-and-edit)."""
    config = dict(run.config)
    if run.upload_id:
        config["dataset"] = run.upload.dataset_key
    return config


# --- cancel ----------------------------------------------------------------------------------


def run_cancel(*, run: Run, user) -> str:
    """Cancel a queued run at once, or ask a running one to stop after its current step.

    Returns what happened: "cancelled", "stopping" or "finished" (nothing to do).
    """
    now = timezone.now()
    with transaction.atomic():
        if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(
            status=Run.Status.CANCELLED, cancel_requested=True, finished_at=now
        ):
            event_append(run_id=run.pk, type="status",
                         payload={"status": "cancelled", "message": f"Cancelled by {user.username} before it started."})
            outcome = "cancelled"
        elif Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, cancel_requested=False).update(cancel_requested=True):
            event_append(run_id=run.pk, type="log",
                         payload={"message": f"Cancel requested by {user.username}: stopping after the current step."})
            outcome = "stopping"
        else:
            return "finished" if Run.objects.filter(pk=run.pk, status__in=Run.FINISHED).exists() else "stopping"
    if outcome == "cancelled":
        continuations_settle(run.pk, succeeded=False)
        dispatch_soon()  # if it had been sent, its gpu slot is free again
        if run.celery_task_id:
            # Revoking only saves the worker a wake-up: a revoke that is lost is harmless,
            # because the task finds the run cancelled and exits.
            try:
                queue.control().revoke(run.celery_task_id)
            except Exception:
                log.warning("revoke of run %s failed", run.pk, exc_info=True)
    return outcome


