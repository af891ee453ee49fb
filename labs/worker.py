"""The worker side of a run: claim it, beat a heartbeat, train it (labs.training), record every
event, finish it; and the reaper, which resumes or fails runs whose worker stopped beating.

State changes are conditional UPDATEs (`filter(status=...).update(...)`), as in labs.services: a
redelivered task, a second worker and the reaper racing on one run cannot both win.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
import time
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from labs import training
from labs.events import event_append
from labs.models import Run, RunEvent
from labs.scheduling import continuations_settle, dispatch_now
from labs.training import RunError
from mlcore.config import ConfigError
from mlcore.data import DatasetError
from mlcore.masking import MaskingError
from mlcore.registry import ModelNotAvailable
from ops.realtime import Throttle

log = logging.getLogger(__name__)

# Live notifications per run and second at most; a throttled one is harmless (the browser
# reads events from the DB on the next one) and status/log/eval events always go through.
NOTIFY_INTERVAL_S = 0.25


# --- recording -------------------------------------------------------------------------------


class RunRecorder:
    """The worker's pen: every event goes to the DB, then (throttled) to the browsers.

    Bounded: a long run records every k-th step (at most RUN_MAX_STEP_EVENTS step events), so
    the replay, the results and the compare pages stay small whatever the run's length. A
    resumed run redoes the steps after its checkpoint; their events were recorded by the lost
    attempt, so steps and validations up to the last recorded one are not recorded twice.
    """

    def __init__(self, run_id: int, attempt: int | None = None):
        self.run_id, self.attempt = run_id, attempt
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
        """One indexed read: has the learner cancelled, is the worker shutting down (pause), has
        the reaper given up on us, or has another attempt taken the run over (we were presumed dead)?"""
        cancel, pause, status, attempts = Run.objects.filter(pk=self.run_id).values_list(
            "cancel_requested", "pause_requested", "status", "attempts").get()
        superseded = self.attempt is not None and attempts != self.attempt
        return cancel or pause or status != Run.Status.RUNNING or superseded

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


# --- a gpu worker's pool child, before its run arrives ------------------------------------------

TRAINING_QUEUE = "gpu"  # settings.CELERY_TASK_ROUTES sends labs.tasks.train_run there
# What every run imports first (torch, peft, transformers and the Llama model code): ~3.5 s of one
# core, paid by each run since every run gets a fresh child (--max-tasks-per-child 1).
TRAINING_IMPORTS = ("mlcore.train", "transformers.models.llama.modeling_llama")


def consumes_training_queue(queue_names) -> bool:
    return TRAINING_QUEUE in set(queue_names)


def child_warm_start() -> threading.Thread:
    """Import TRAINING_IMPORTS in a background thread of a freshly forked pool child, so that they
    are loaded while the child waits for its run rather than after the run arrives. In a thread:
    Celery kills a child that is not ready within a few seconds, and a run that arrives meanwhile
    simply waits on Python's import lock for what is still loading."""

    def warm() -> None:
        tick = time.perf_counter()
        try:
            for name in TRAINING_IMPORTS:
                importlib.import_module(name)
        except Exception:  # the run will meet the same error and report it to the learner
            log.warning("warming the training imports failed", exc_info=True)
            return
        log.info("training imports ready in %.1f s", time.perf_counter() - tick)

    thread = threading.Thread(target=warm, name="training-imports", daemon=True)
    thread.start()
    return thread


def _last_recorded_step(run_id: int, kind: str) -> int:
    payload = RunEvent.objects.filter(run_id=run_id, type=kind).order_by("-seq").values_list("payload", flat=True).first()
    return int((payload or {}).get("step", 0))


# --- claiming, running, finishing ---------------------------------------------------------------


class Heartbeat:
    """Touches Run.heartbeat_at from a thread every interval while the worker holds the run,
    whatever the main thread is doing (loading a model, a long step, evaluating)."""

    def __init__(self, run_id: int, interval: float, attempt: int):
        self.run_id, self.interval, self.attempt = run_id, interval, attempt
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
                    # Fenced by attempt: a worker presumed dead must not keep its successor's run "alive".
                    Run.objects.filter(pk=self.run_id, status=Run.Status.RUNNING, attempts=self.attempt).update(
                        heartbeat_at=timezone.now())
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


def _finish(run_id: int, attempt: int, status: str, *, message: str, error: str = "", **fields) -> bool:
    """running -> a final status, with its event, in one transaction (the consumer relies on
    a finished run having all its events). False if the run was not running any more, or is now
    held by a later attempt (this worker was presumed dead and the run resumed elsewhere: the
    later attempt's outcome is the one that counts)."""
    with transaction.atomic():
        done = Run.objects.filter(pk=run_id, status=Run.Status.RUNNING, attempts=attempt).update(
            status=status, finished_at=timezone.now(), error=error, **fields
        )
        if done:
            event_append(run_id=run_id, type="status", payload={"status": status, "message": message, "error": error})
    if done:
        continuations_settle(run_id, succeeded=status == Run.Status.SUCCEEDED)
        dispatch_now()  # this run's gpu slot is free
    return bool(done)


def run_requeue(*, run_id: int, message: str, status_from: str = Run.Status.RUNNING, **match) -> bool:
    """Put a run back in the outbox to be resumed from its checkpoint by the next free worker."""
    with transaction.atomic():
        moved = Run.objects.filter(pk=run_id, status=status_from, **match).update(
            status=Run.Status.QUEUED, dispatched_at=None, pause_requested=False, heartbeat_at=None,
        )
        if moved:
            event_append(run_id=run_id, type="status", payload={"status": "queued", "message": message})
    if moved:
        dispatch_now()
    return bool(moved)


def runs_request_pause(*, worker_host: str) -> int:
    """A worker is shutting down: its runs stop after the current step, checkpoint and requeue."""
    return Run.objects.filter(status=Run.Status.RUNNING, worker_host=worker_host).update(pause_requested=True)


def describe_error(exc: BaseException) -> str:
    """The learner-facing reason of a failure (the traceback goes to the worker's log)."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The run exceeded its time limit of {settings.RUN_TIME_LIMIT_S} s and was stopped."
    if isinstance(exc, (RunError, ConfigError, DatasetError, MaskingError, ModelNotAvailable)):
        return str(exc)  # already written for the learner
    return f"{type(exc).__name__}: {exc}"


def run_execute(*, run_id: int, task_id: str = "", host: str | None = None) -> None:
    """The body of the training task: claim the run, train (or prompt) it, record the outcome.

    `host` is the Celery node name (gpu@machine): runs_request_pause() finds a shutting-down
    worker's runs by it."""
    host = host or socket.gethostname()
    run, resume = _claim(run_id, task_id, host)
    if run is None:
        return
    attempt = run.attempts  # every write below is fenced by it
    recorder = RunRecorder(run.pk, attempt)
    with Heartbeat(run.pk, settings.RUN_HEARTBEAT_INTERVAL_S, attempt):
        try:
            outcome = training.execute(run, recorder, resume=resume)
        except Exception as exc:
            log.exception("run %s failed", run.pk)
            error = describe_error(exc)
            _finish(run.pk, attempt, Run.Status.FAILED, message=f"Failed: {error}", error=error)
            return
    if outcome.cancelled and run_requeue(
        run_id=run.pk, pause_requested=True, cancel_requested=False, attempts=attempt,
        message="Paused: the worker is shutting down. The run continues from its checkpoint on the next free worker.",
    ):
        return
    if outcome.cancelled:
        _finish(run.pk, attempt, Run.Status.CANCELLED, message="Cancelled: stopped after the current step.")
    else:
        _finish(run.pk, attempt, Run.Status.SUCCEEDED, message=outcome.summary, metrics=outcome.metrics,
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
        continuations_settle(run.pk, succeeded=False)
        dispatch_now()
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
