import time

from django.db import transaction

from ops.models import PingJob
from ops.queue import enqueue
from ops.realtime import broadcast


def ping_launch(*, user) -> PingJob:
    job = PingJob.objects.create(created_by=user)
    # Enqueue after commit: a worker must never pick up an id whose row it cannot see yet. By
    # name: ops.tasks imports this module.
    transaction.on_commit(lambda: enqueue("ops.tasks.ping", job.pk))
    return job


def ping_record_step(*, job: PingJob, step: int, host: str) -> None:
    """Persist the step first, then notify: a browser that misses the message replays from the DB."""
    job.events.append({"type": "progress", "step": step, "total": job.steps, "host": host, "t": time.time()})
    job.worker_host = host
    job.status = PingJob.Status.SUCCEEDED if step >= job.steps else PingJob.Status.RUNNING
    job.save(update_fields=["events", "worker_host", "status"])
    broadcast(job.group_name, {"type": "stream.event"})
