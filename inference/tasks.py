from celery import shared_task

from inference.baselines import baselines_compute


@shared_task(name="inference.tasks.compute_baselines")
def compute_baselines(run_id: int) -> None:
    """Evaluate the run's queued baselines (default queue: CPU work, no GPU needed)."""
    baselines_compute(run_id=run_id)
