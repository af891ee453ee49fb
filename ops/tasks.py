import socket
import time

from celery import shared_task

from ops.models import PingJob
from ops.services import ping_record_step


@shared_task(name="ops.tasks.ping")
def ping(job_id: int, delay_s: float = 0.2) -> None:
    """A model-free job on the gpu queue: a few numbered events, each persisted then broadcast."""
    job = PingJob.objects.filter(pk=job_id).first()
    if job is None or job.status == PingJob.Status.SUCCEEDED:
        return  # idempotent: a redelivered finished job does nothing
    host = socket.gethostname()
    for step in range(1, job.steps + 1):
        ping_record_step(job=job, step=step, host=host)
        time.sleep(delay_s)
