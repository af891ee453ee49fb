"""Celery tasks: thin. Take an id, call the service. Routing: train_run -> gpu, the rest -> default."""

from celery import shared_task

from labs import services


@shared_task(name="labs.tasks.train_run", bind=True)
def train_run(self, run_id: int) -> None:
    """Train one run. Idempotent: a run that is not queued any more is never trained again."""
    services.run_execute(run_id=run_id, task_id=self.request.id or "")


@shared_task(name="labs.tasks.reap_runs")
def reap_runs() -> list[int]:
    """Celery beat, every RUN_REAPER_INTERVAL_S: fail runs whose worker stopped sending heartbeats."""
    return services.runs_reap()
