"""Everything that changes a run: launch, cancel, execute (in the worker), reap.

State changes are conditional UPDATEs (`filter(status=...).update(...)`), so a web request, a
worker and the reaper racing on one run cannot both win: whoever moves the status first does,
the others see that they did nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from labs.access import is_unlimited
from labs.models import DatasetUpload, Lab, Run, RunEvent, RunGroup
from labs.scheduling import LaunchRefused, Planned, dispatch_soon, launch_check, runs_dispatch
from ops import text as json_text
from ops.realtime import Throttle, broadcast

log = logging.getLogger(__name__)

# Live notifications per run and second at most; a throttled one is harmless (the browser
# reads events from the DB on the next one) and status/log/eval events always go through.
NOTIFY_INTERVAL_S = 0.25

__all__ = ["LaunchRefused"]  # raised by run_launch / group_launch (defined in labs.scheduling)


# --- events ----------------------------------------------------------------------------------


def event_append(*, run_id: int, type: str, payload: dict, notify: bool = True) -> RunEvent:
    """Persist the next numbered event of a run, then (after commit) notify its Channels group.

    The UPDATE of last_seq locks the run's row until the transaction commits, so concurrent
    writers (worker, cancel, reaper) get consecutive numbers and commit them in order: a
    browser reading "everything after seq N" can never skip an event that commits later.
    """
    with transaction.atomic():
        Run.objects.filter(pk=run_id).update(last_seq=F("last_seq") + 1)
        seq = Run.objects.filter(pk=run_id).values_list("last_seq", flat=True).get()
        event = RunEvent.objects.create(run_id=run_id, seq=seq, type=type, payload=payload)
    if notify:
        group = Run.group_name_for(run_id)
        # Persist first, notify after commit: a notified browser must find the row.
        transaction.on_commit(lambda: broadcast(group, {"type": "stream.event"}))
    return event


# --- launch ----------------------------------------------------------------------------------


def build_config(values: dict) -> dict:
    """A validated TrainConfig snapshot. Raises mlcore.config.ConfigError with per-field messages.

    The zero-shot baseline is always computed (same evaluate code, same test split); the device
    is the worker's business; continue_from is resolved by the worker from Run.continue_from;
    checkpoints are written every RUN_CHECKPOINT_EVERY steps so a lost worker costs at most that.
    """
    from mlcore.config import TrainConfig

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
    from mlcore.data import DatasetError, parse_upload

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
    from mlcore.data import DatasetError

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
    from mlcore.data import ordered_labels

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
    from config.celery import app

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
        _settle_continuations(run.pk, succeeded=False)
        dispatch_soon()  # if it had been sent, its gpu slot is free again
        if run.celery_task_id:
            # Revoking only saves the worker a wake-up: a revoke that is lost is harmless,
            # because the task finds the run cancelled and exits.
            try:
                app.control.revoke(run.celery_task_id)
            except Exception:
                log.warning("revoke of run %s failed", run.pk, exc_info=True)
    return outcome


# --- the worker side -------------------------------------------------------------------------


class RunRecorder:
    """The worker's pen: every event goes to the DB, then (throttled) to the browsers.

    Bounded: a long run records every k-th step (at most RUN_MAX_STEP_EVENTS step events), so
    the replay, the results and the compare pages stay small whatever the run's length. A
    resumed run redoes the steps after its checkpoint; their events were recorded by the lost
    attempt, so steps and validations up to the last recorded one are not recorded twice.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        self._throttle = Throttle(NOTIFY_INTERVAL_S)
        self.recorded = {kind: _last_recorded_step(run_id, kind) for kind in ("step", "eval")}

    def _keep(self, kind: str, event: dict) -> bool:
        step = event.get("step", 0)
        if step <= self.recorded[kind]:
            return False
        if kind == "step":
            total = event.get("total_steps") or step
            stride = -(-total // settings.RUN_MAX_STEP_EVENTS)
            if not (step == 1 or step == total or step % stride == 0):
                return False
        self.recorded[kind] = step
        return True

    def event(self, type: str, payload: dict, *, force: bool = True) -> None:
        event_append(run_id=self.run_id, type=type, payload=payload, notify=self._throttle.ready(force=force))

    def log(self, message: str) -> None:
        self.event("log", {"message": message})

    def should_stop(self) -> bool:
        """One indexed read: has the learner cancelled, is the worker shutting down (pause), or
        has the reaper given up on us?"""
        cancel, pause, status = Run.objects.filter(pk=self.run_id).values_list(
            "cancel_requested", "pause_requested", "status").get()
        return cancel or pause or status != Run.Status.RUNNING

    def report(self, event: dict):
        """mlcore.train's report callback: record, then answer "stop" when cancelled or paused."""
        event = dict(event)
        kind = event.pop("type")
        if kind == "step":
            if self._keep("step", event):
                self.event("step", event, force=event.get("step") == event.get("total_steps"))
            return "stop" if self.should_stop() else None
        if kind == "eval":
            if self._keep("eval", event):
                self.event("eval", event)
        elif kind == "done":
            self.log(f"Training stopped after {event.get('steps')} steps." if event.get("cancelled")
                     else f"Training done: {event.get('steps')} steps. Scored on the test split.")
        return None


def _last_recorded_step(run_id: int, kind: str) -> int:
    payload = RunEvent.objects.filter(run_id=run_id, type=kind).order_by("-seq").values_list("payload", flat=True).first()
    return int((payload or {}).get("step", 0))


class Heartbeat:
    """Touches Run.heartbeat_at from a thread every interval while the worker holds the run,
    whatever the main thread is doing (loading a model, a long step, evaluating)."""

    def __init__(self, run_id: int, interval: float):
        self.run_id, self.interval = run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    Run.objects.filter(pk=self.run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())
                except Exception:  # a locked or briefly unreachable DB: try again next beat
                    log.warning("heartbeat of run %s failed", self.run_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection


def _claim(run_id: int, task_id: str, host: str) -> tuple[Run | None, bool]:
    """Move the run to running for this worker: (run, resume), or (None, False) for nothing to do.

    queued -> running is a fresh start (or a resumption, when an earlier attempt was paused or
    lost: the run's attempts count says so). A redelivered task (acks_late: the worker process
    that had it died) finds its run still running: once the old attempt's heartbeat has stopped,
    this delivery takes the run over and resumes it from its last checkpoint. A run whose
    heartbeat is still fresh belongs to a live worker, and this delivery does nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED, cancel_requested=False).update(
            status=Run.Status.RUNNING, heartbeat_at=now, worker_host=host, pause_requested=False,
            celery_task_id=task_id or F("celery_task_id"), attempts=F("attempts") + 1,
        )
        if claimed:
            Run.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
            attempts = Run.objects.filter(pk=run_id).values_list("attempts", flat=True).get()
            message = f"Started on worker {host}." if attempts == 1 else (
                f"Resumed on worker {host} from its last checkpoint (attempt {attempts}).")
            event_append(run_id=run_id, type="status", payload={"status": "running", "message": message})
    run = Run.objects.select_related("upload", "continue_from").filter(pk=run_id).first()
    if run is None:
        log.info("run %s no longer exists; nothing to do", run_id)
        return None, False
    if claimed:
        return run, run.attempts > 1
    if run.status == Run.Status.RUNNING and _previous_attempt_dead(run, task_id):
        return (run, True) if run_take_over(run=run, task_id=task_id, host=host) else (None, False)
    log.info("run %s is %s; this delivery does nothing", run_id, run.status)
    return None, False


def _previous_attempt_dead(run: Run, task_id: str) -> bool:
    """True once the attempt holding `run` has stopped beating. A redelivery of the same task
    means its worker process died (a task id runs once at a time), so wait only until the
    heartbeat is overdue (~2.5 beats) rather than the reaper's full timeout."""
    if run.heartbeat_at and run.heartbeat_at < timezone.now() - _heartbeat_timeout():
        return True
    if not task_id or task_id != run.celery_task_id:
        return False
    overdue = timedelta(seconds=2.5 * settings.RUN_HEARTBEAT_INTERVAL_S)
    deadline = time.monotonic() + 4 * settings.RUN_HEARTBEAT_INTERVAL_S
    while time.monotonic() < deadline:
        run.refresh_from_db(fields=["status", "heartbeat_at"])
        if run.status != Run.Status.RUNNING:
            return False
        if run.heartbeat_at is None or run.heartbeat_at < timezone.now() - overdue:
            return True
        time.sleep(settings.RUN_HEARTBEAT_INTERVAL_S / 2)
    return False


def run_take_over(*, run: Run, task_id: str, host: str) -> bool:
    """Resume a running run whose worker died, here; or fail it when its attempts are used up."""
    if run.attempts >= settings.RUN_MAX_ATTEMPTS:
        run_mark_lost(run)
        return False
    with transaction.atomic():
        # heartbeat_at in the filter: if the old attempt beats after all, it keeps the run.
        taken = Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            heartbeat_at=timezone.now(), worker_host=host, celery_task_id=task_id or F("celery_task_id"),
            attempts=F("attempts") + 1, pause_requested=False,
        )
        if taken:
            event_append(run_id=run.pk, type="status", payload={
                "status": "running", "message": f"The previous worker process died; resumed on worker {host} "
                f"from the last checkpoint (attempt {run.attempts + 1})."})
    run.refresh_from_db()
    return bool(taken)


def _finish(run_id: int, status: str, *, message: str, error: str = "", **fields) -> bool:
    """running -> a final status, with its event, in one transaction (the consumer relies on
    a finished run having all its events). False if the run was not running any more."""
    with transaction.atomic():
        done = Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(
            status=status, finished_at=timezone.now(), error=error, **fields
        )
        if done:
            event_append(run_id=run_id, type="status", payload={"status": status, "message": message, "error": error})
    if done:
        _settle_continuations(run_id, succeeded=status == Run.Status.SUCCEEDED)
        _dispatch_now()  # this run's gpu slot is free
    return bool(done)


def _dispatch_now() -> None:
    try:
        runs_dispatch()
    except Exception:  # the periodic dispatcher (Celery beat) will fill the slot
        log.warning("dispatch after a run failed", exc_info=True)


def run_requeue(*, run_id: int, message: str, status_from: str = Run.Status.RUNNING, **match) -> bool:
    """Put a run back in the outbox to be resumed from its checkpoint by the next free worker."""
    with transaction.atomic():
        moved = Run.objects.filter(pk=run_id, status=status_from, **match).update(
            status=Run.Status.QUEUED, dispatched_at=None, pause_requested=False, heartbeat_at=None,
        )
        if moved:
            event_append(run_id=run_id, type="status", payload={"status": "queued", "message": message})
    if moved:
        _dispatch_now()
    return bool(moved)


def runs_request_pause(*, worker_host: str) -> int:
    """A worker is shutting down: its runs stop after the current step, checkpoint and requeue."""
    return Run.objects.filter(status=Run.Status.RUNNING, worker_host=worker_host).update(pause_requested=True)


def _settle_continuations(run_id: int, *, succeeded: bool) -> None:
    """Runs waiting to continue this run's adapter: the dispatcher may send them now, or they fail."""
    waiting = Run.objects.filter(continue_from_id=run_id, status=Run.Status.QUEUED)
    for child in waiting:
        if succeeded:
            event_append(run_id=child.pk, type="log", payload={"message": f"Run {run_id} succeeded: queued for a worker."})
        else:
            reason = f"The run this one continues (run {run_id}) did not succeed, so there is no adapter to continue."
            with transaction.atomic():
                if Run.objects.filter(pk=child.pk, status=Run.Status.QUEUED).update(
                    status=Run.Status.FAILED, error=reason, finished_at=timezone.now()
                ):
                    event_append(run_id=child.pk, type="status", payload={"status": "failed", "message": reason, "error": reason})


def describe_error(exc: BaseException) -> str:
    """The learner-facing reason of a failure (the traceback goes to the worker's log)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from labs.training import RunError
    from mlcore.config import ConfigError
    from mlcore.data import DatasetError
    from mlcore.masking import MaskingError
    from mlcore.registry import ModelNotAvailable

    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The run exceeded its time limit of {settings.RUN_TIME_LIMIT_S} s and was stopped."
    if isinstance(exc, (RunError, ConfigError, DatasetError, MaskingError, ModelNotAvailable)):
        return str(exc)  # already written for the learner
    return f"{type(exc).__name__}: {exc}"


def run_execute(*, run_id: int, task_id: str = "", host: str | None = None) -> None:
    """The body of the training task: claim the run, train (or prompt) it, record the outcome.

    `host` is the Celery node name (gpu@machine): runs_request_pause() finds a shutting-down
    worker's runs by it."""
    from labs import training

    host = host or socket.gethostname()
    run, resume = _claim(run_id, task_id, host)
    if run is None:
        return
    recorder = RunRecorder(run.pk)
    with Heartbeat(run.pk, settings.RUN_HEARTBEAT_INTERVAL_S):
        try:
            outcome = training.execute(run, recorder, resume=resume)
        except Exception as exc:
            log.exception("run %s failed", run.pk)
            error = describe_error(exc)
            _finish(run.pk, Run.Status.FAILED, message=f"Failed: {error}", error=error)
            return
    if outcome.cancelled and run_requeue(
        run_id=run.pk, pause_requested=True, cancel_requested=False,
        message="Paused: the worker is shutting down. The run continues from its checkpoint on the next free worker.",
    ):
        return
    if outcome.cancelled:
        _finish(run.pk, Run.Status.CANCELLED, message="Cancelled: stopped after the current step.")
    else:
        _finish(run.pk, Run.Status.SUCCEEDED, message=outcome.summary, metrics=outcome.metrics,
                predictions=outcome.predictions)


# --- the reaper ------------------------------------------------------------------------------


def _heartbeat_timeout() -> timedelta:
    return timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT_S)


def run_mark_lost(run: Run) -> bool:
    """Fail a running run whose worker stopped sending heartbeats and that cannot be resumed."""
    beat = run.heartbeat_at or run.started_at or run.created_at
    reason = (
        f"The worker {run.worker_host or '(unknown host)'} stopped sending heartbeats at "
        f"{beat:%Y-%m-%d %H:%M:%S} UTC, and this run was already started {run.attempts} time(s) "
        f"(the limit is {settings.RUN_MAX_ATTEMPTS}); the worker process was probably killed (out of memory, "
        "a crash or a restart). Clone the run to try again."
    )
    with transaction.atomic():
        # heartbeat_at in the filter: a beat that lands between our read and this write wins.
        lost = Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=Run.Status.FAILED, error=reason, finished_at=timezone.now()
        )
        if lost:
            event_append(run_id=run.pk, type="status", payload={"status": "failed", "message": reason, "error": reason})
    if lost:
        _settle_continuations(run.pk, succeeded=False)
        _dispatch_now()
    return bool(lost)


def run_reap(run: Run) -> bool:
    """A running run whose worker vanished: back to the queue to resume from its checkpoint, or
    failed with the reason once it has used its attempts."""
    if run.attempts >= settings.RUN_MAX_ATTEMPTS:
        return run_mark_lost(run)
    return run_requeue(
        run_id=run.pk, heartbeat_at=run.heartbeat_at,
        message=f"The worker {run.worker_host or '(unknown)'} stopped sending heartbeats; the run goes back to the "
        "queue and continues from its last checkpoint.",
    )


def runs_reap(*, now=None) -> list[int]:
    """Resume (or fail) every running run whose heartbeat is older than the timeout."""
    cutoff = (now or timezone.now()) - _heartbeat_timeout()
    stale = Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff).only(
        "pk", "heartbeat_at", "worker_host", "started_at", "created_at", "attempts"
    )
    return [run.pk for run in stale if run_reap(run)]
