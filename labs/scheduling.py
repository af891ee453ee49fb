"""Fair use of the gpu workers: what a run may cost, how much GPU time a learner has used, and
which waiting run a free worker slot gets next.

Runs wait in the database as `queued` (the outbox). The dispatcher sends at most one task per
free gpu slot (settings.GPU_WORKER_SLOTS), choosing the learner with the fewest runs on the
workers, then the least GPU time over the last 24 h, then the oldest run: a learner's 3-run
group cannot hold back other learners' first runs, and Redis only ever holds a handful of
tasks, so a Redis crash loses nothing that the database does not still have.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from labs.access import is_unlimited
from labs.events import event_append
from labs.models import DatasetUpload, Run
from labs.training import dataset_of
from mlcore.config import TrainConfig
from mlcore.cost import estimate_cost, estimate_fewshot_cost
from mlcore.prompt import DEFAULT_MAX_TEXT_TOKENS
from mlcore.registry import DEFAULT_BASE_MODEL, ModelNotAvailable, load_tokenizer
from ops import queue
from ops.health import redis_answers

log = logging.getLogger(__name__)

DAY = timedelta(hours=24)
# Any constant: the key of the PostgreSQL advisory lock that serialises dispatchers.
_DISPATCH_LOCK_KEY = 7_402_311


class LaunchRefused(Exception):
    """The launch is not allowed; the message is for the learner. `errors` maps form fields to
    what to change there (empty when the refusal is not about a field)."""

    def __init__(self, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.errors = errors or {}


# --- cost ------------------------------------------------------------------------------------


_tokenizer_lock = threading.Lock()


@functools.cache
def estimate_tokenizer(base_model: str):
    """The base model's real tokenizer, loaded once per process (the default model's when the
    chosen one is not available here: the estimate only needs token counts of the same order)."""
    with _tokenizer_lock:
        try:
            return load_tokenizer(base_model)
        except (ModelNotAvailable, OSError, ValueError):
            return load_tokenizer(DEFAULT_BASE_MODEL)


def prepare_estimate(base_model: str) -> None:
    """Load what run_cost() needs for this base model now (outside any transaction)."""
    estimate_tokenizer(base_model)


@dataclass(frozen=True)
class Planned:
    """One run a launch would queue: its variant label ("" for a single run), config and mode."""

    label: str
    config: dict
    mode: str = Run.Mode.FINETUNE
    shots: int = 0


@dataclass(frozen=True)
class Estimate:
    tokens: int  # RunCost.tokens
    seconds: float  # of gpu worker time, here (estimated_seconds)


def run_cost(config: dict, upload: DatasetUpload | None, *, mode: str = Run.Mode.FINETUNE, shots: int = 0):
    train_config = TrainConfig.from_dict(config)
    dataset, tokenizer = dataset_of(config, upload), estimate_tokenizer(train_config.base_model)
    if mode == Run.Mode.FEWSHOT:
        return estimate_fewshot_cost(train_config, dataset, tokenizer, shots)
    return estimate_cost(train_config, dataset, tokenizer)


def cost_problems(config: dict, cost, *, mode: str = Run.Mode.FINETUNE) -> dict[str, str]:
    """Form field -> what to lower, for every per-run limit this config goes over."""
    errors: dict[str, str] = {}
    if mode == Run.Mode.FEWSHOT:
        if cost.tokens > settings.RUN_MAX_TOKENS:
            # Not a form field: the lab fixes the number of examples; the dataset is the learner's.
            errors["shots"] = (
                f"Its prompts would put about {cost.tokens:,} tokens through the model (the examples add "
                f"{cost.shot_tokens:,} tokens to each test prompt, cut to {DEFAULT_MAX_TEXT_TOKENS} tokens each); "
                f"the limit per run is {settings.RUN_MAX_TOKENS:,}. Use a dataset with a smaller test split or "
                "shorter texts.")
        return errors
    if cost.steps > settings.RUN_MAX_STEPS:
        errors["epochs"] = (
            f"This run needs {cost.steps:,} optimizer steps; the limit is {settings.RUN_MAX_STEPS:,}. "
            f"Lower the epochs ({config['epochs']}) or the training examples, or raise the batch size "
            f"({config['batch_size']}) or gradient accumulation ({config['grad_accum']})."
        )
    if cost.evals > settings.RUN_MAX_EVALS:
        errors["eval_every"] = (
            f"This run would validate {cost.evals:,} times; the limit is {settings.RUN_MAX_EVALS:,}. "
            f"Raise 'validate every' (now {config['eval_every'] or 'each epoch'})."
        )
    if cost.tokens > settings.RUN_MAX_TOKENS:
        errors["max_length"] = (
            f"This run would put about {cost.tokens:,} tokens through the model ({cost.steps:,} steps of "
            f"examples averaging {cost.example_tokens} tokens, plus validation); the limit per run is "
            f"{settings.RUN_MAX_TOKENS:,}. Lower the epochs ({config['epochs']}), the training examples, "
            f"the max length ({config['max_length']}) or validate less often."
        )
    return errors


def launch_check(*, user, runs: list[Planned], upload: DatasetUpload | None) -> list[Estimate]:
    """Refuse a launch over the per-run budget or over what is left of the learner's daily GPU
    time; else each run's estimate, for its row. Every run of a group is checked.

    The daily quota counts what this launch and the learner's queued and running runs are
    estimated to take, not only the time already used: otherwise a learner with an hour left
    could queue ten hour-long runs at once. Accounts with labs.launch_without_limits are exempt
    (and their runs carry no estimate)."""
    if is_unlimited(user):
        return [Estimate(0, 0.0) for _ in runs]
    errors: dict[str, str] = {}
    costs = []
    for run in runs:
        cost = run_cost(run.config, upload, mode=run.mode, shots=run.shots)
        costs.append(cost)
        for name, message in cost_problems(run.config, cost, mode=run.mode).items():
            errors.setdefault(name, f"{run.label}: {message}" if run.label else message)
    if errors:
        raise LaunchRefused("This launch is over the per-run compute budget (the fields marked below say what to "
                            "lower). Nothing was queued.", errors)
    estimates = [Estimate(cost.tokens, estimated_seconds(cost.tokens)) for cost in costs]
    used = gpu_seconds_used([user.pk])[user.pk]
    quota = settings.GPU_SECONDS_PER_DAY
    if used >= quota:
        raise LaunchRefused(
            f"You have used {used / 60:.0f} of your {quota / 60:.0f} minutes of GPU time for the last 24 hours. "
            "Runs you launched more than 24 hours ago stop counting; launch again then."
        )
    reserved = gpu_seconds_reserved(user.pk)
    needed = sum(e.seconds for e in estimates)
    if used + reserved + needed > quota:
        waiting = f" and about {_minutes(reserved)} for your queued and running runs" if reserved else ""
        raise LaunchRefused(
            f"This launch needs about {_minutes(needed)} of GPU time, and {_minutes(max(0.0, quota - used - reserved))} "
            f"of your {quota / 60:.0f} minutes per 24 hours are left ({_minutes(used)} used{waiting}). Launch fewer "
            "epochs or examples, cancel a queued run, or wait for runs to finish or to pass 24 hours."
        )
    return estimates


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


# --- GPU time --------------------------------------------------------------------------------


def gpu_seconds_used(owner_ids, *, now=None) -> dict[int, float]:
    """Seconds of worker time each learner's runs took in the last 24 h (running runs count up to now)."""
    now = now or timezone.now()
    since = now - DAY
    used: dict[int, float] = defaultdict(float)
    rows = Run.objects.filter(owner_id__in=list(owner_ids), started_at__isnull=False).filter(
        Q(finished_at__isnull=True) | Q(finished_at__gt=since)
    ).values_list("owner_id", "started_at", "finished_at")
    for owner_id, started, finished in rows:
        used[owner_id] += max(0.0, ((finished or now) - max(started, since)).total_seconds())
    return used


def gpu_seconds_reserved(owner_id: int, *, now=None) -> float:
    """What the learner's queued and running runs are estimated to take still: each run's
    estimate less the time it has run (which gpu_seconds_used already counts)."""
    now = now or timezone.now()
    reserved = 0.0
    for estimate, started in Run.objects.filter(owner_id=owner_id).active().values_list("estimated_s", "started_at"):
        reserved += max(0.0, estimate - ((now - started).total_seconds() if started else 0.0))
    return reserved


CALIBRATION_RUNS = 50  # the latest finished runs whose durations price a token
CALIBRATION_MIN_RUNS = 3  # fewer than this: the settings' rate


def estimated_seconds(tokens: int) -> float:
    """Seconds of gpu worker time a run of `tokens` (RunCost.tokens) takes on these workers:
    priced by the latest runs that finished in one attempt (their real start-to-finish time over
    their estimated tokens, model loading included) once there are a few, else by the settings
    (RUN_LOAD_S + tokens / RUN_TOKENS_PER_S). A GPU cluster needs no tuning: its runs price it."""
    rows = list(Run.objects.filter(status=Run.Status.SUCCEEDED, attempts=1, estimated_tokens__gt=0,
                                   started_at__isnull=False, finished_at__isnull=False)
                .order_by("-finished_at").values_list("estimated_tokens", "started_at", "finished_at")[:CALIBRATION_RUNS])
    if len(rows) >= CALIBRATION_MIN_RUNS:
        seconds = sum((finished - started).total_seconds() for _, started, finished in rows)
        return tokens * seconds / sum(t for t, _, _ in rows)
    return settings.RUN_LOAD_S + tokens / settings.RUN_TOKENS_PER_S


# --- dispatch --------------------------------------------------------------------------------


def _lock_dispatch() -> None:
    """One dispatcher at a time. SQLite needs nothing: tunelab's transactions BEGIN IMMEDIATE,
    which already takes the database's single write lock."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK_KEY])


def _on_workers():
    """Runs holding a gpu slot: running, or sent and not started yet."""
    return Run.objects.filter(Q(status=Run.Status.RUNNING) | Q(status=Run.Status.QUEUED, dispatched_at__isnull=False))


def _waiting():
    """Queued runs not sent yet whose parent (if they continue one) has its adapter."""
    return Run.objects.filter(status=Run.Status.QUEUED, dispatched_at__isnull=True, cancel_requested=False).filter(
        Q(continue_from__isnull=True) | Q(continue_from__status=Run.Status.SUCCEEDED)
    )


def runs_dispatch(*, now=None) -> list[int]:
    """Send the fairest waiting runs to the free gpu slots; returns the ids sent."""
    now = now or timezone.now()
    sent: list[int] = []
    with transaction.atomic():
        _lock_dispatch()
        holders = list(_on_workers().values_list("owner_id", flat=True))
        free = settings.GPU_WORKER_SLOTS - len(holders)
        if free <= 0:
            return sent
        waiting = list(_waiting().order_by("created_at", "pk").only("pk", "owner_id", "created_at")[:1000])
        if not waiting:
            return sent
        on_workers = Counter(holders)
        used = gpu_seconds_used({run.owner_id for run in waiting}, now=now)
        for _ in range(min(free, len(waiting))):
            run = min(waiting, key=lambda r: (on_workers[r.owner_id], used[r.owner_id], r.created_at, r.pk))
            waiting.remove(run)
            on_workers[run.owner_id] += 1
            task_id = str(uuid.uuid4())
            if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED, dispatched_at__isnull=True).update(
                dispatched_at=now, celery_task_id=task_id
            ):
                # A worker must never pick up an id whose row it cannot see yet.
                transaction.on_commit(functools.partial(_send, run.pk, task_id))
                sent.append(run.pk)
    return sent


def _send(run_id: int, task_id: str) -> None:
    """Put the task on the gpu queue; if Redis refuses, put the run back in the outbox."""
    try:  # by name: labs.tasks imports this module
        queue.enqueue("labs.tasks.train_run", run_id, task_id=task_id,
                      retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})
    except Exception:
        log.warning("sending run %s to the gpu queue failed; it stays queued for the next dispatch", run_id, exc_info=True)
        Run.objects.filter(pk=run_id, status=Run.Status.QUEUED, celery_task_id=task_id).update(dispatched_at=None)


def dispatch_soon() -> None:
    """Dispatch after the current transaction commits; a failure here only delays the run
    until the next periodic dispatch, it never fails the request that queued it."""

    def dispatch():
        try:
            runs_dispatch()
        except Exception:
            log.warning("dispatch failed; the periodic dispatcher will retry", exc_info=True)

    transaction.on_commit(dispatch)


def dispatch_now() -> None:
    """Dispatch at once (a gpu slot just came free); a failure leaves it to the periodic dispatcher."""
    try:
        runs_dispatch()
    except Exception:  # the periodic dispatcher (Celery beat) will fill the slot
        log.warning("dispatch after a run failed", exc_info=True)


def continuations_settle(run_id: int, *, succeeded: bool) -> None:
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


def runs_resend_lost(*, now=None) -> list[int]:
    """Queued runs sent longer than RUN_DISPATCH_TIMEOUT_S ago that no worker started: their task
    was lost (Redis restarted without it, or the send failed half-way). Back to the outbox."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.RUN_DISPATCH_TIMEOUT_S)
    lost = []
    for run in Run.objects.filter(status=Run.Status.QUEUED, dispatched_at__lt=cutoff).only("pk", "celery_task_id"):
        with transaction.atomic():
            if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED, celery_task_id=run.celery_task_id,
                                  dispatched_at__lt=cutoff).update(dispatched_at=None):
                event_append(run_id=run.pk, type="log",
                             payload={"message": "No worker picked this run up; sending it to the queue again."})
                lost.append(run.pk)
    return lost


def queue_available() -> bool:
    """Is the broker reachable right now (1 s at most)? Checked before a launch writes anything."""
    return redis_answers(settings.CELERY_BROKER_URL)[0]
