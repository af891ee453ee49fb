"""Celery tasks: thin. Take an id, call the service (labs.worker for a run). Nothing imports this
module: the services send its tasks by name (ops.queue). Routing (settings.CELERY_TASK_ROUTES): train_run -> gpu,
export_gguf and clean_exports -> export, the rest -> default."""

import logging

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init, worker_shutting_down
from django.conf import settings

from labs import scheduling, worker
from labs.exports import exports_clean, gguf_export_build

log = logging.getLogger(__name__)


@shared_task(name="labs.tasks.train_run", bind=True)
def train_run(self, run_id: int) -> None:
    """Train one run. Idempotent: a run that is not queued any more is never trained twice."""
    worker.run_execute(run_id=run_id, task_id=self.request.id or "", host=self.request.hostname or None)


@shared_task(name="labs.tasks.reap_runs")
def reap_runs() -> list[int]:
    """Celery beat, every RUN_REAPER_INTERVAL_S: resume (or fail) runs whose worker stopped beating."""
    return worker.runs_reap()


@shared_task(name="labs.tasks.dispatch_runs")
def dispatch_runs() -> list[int]:
    """Celery beat, every RUN_REAPER_INTERVAL_S: re-send runs whose task was lost, fill free gpu slots."""
    scheduling.runs_resend_lost()
    return scheduling.runs_dispatch()


@worker_shutting_down.connect
def pause_runs_on_shutdown(sender=None, **kwargs) -> None:
    """In the worker's main process, on a warm shutdown (SIGTERM): ask this worker's runs to stop
    after the current step and checkpoint, so Celery's wait for the task is one step long and
    the run resumes on the next worker instead of being lost."""
    try:
        paused = worker.runs_request_pause(worker_host=str(sender))
        if paused:
            log.info("asked %s run(s) on %s to pause for the shutdown", paused, sender)
    except Exception:  # the database may be gone too: the reaper resumes the run later
        log.warning("could not ask the runs on %s to pause", sender, exc_info=True)


_warm_children = False  # set in a worker's main process; its pool children inherit it by fork


@celeryd_after_setup.connect
def note_training_worker(sender=None, instance=None, **kwargs) -> None:
    """In the worker's main process: does it consume the training queue (then its children warm up)?"""
    global _warm_children
    queues = instance.app.amqp.queues
    _warm_children = settings.WORKER_PRELOAD and worker.consumes_training_queue((queues.consume_from or queues).keys())


@worker_process_init.connect
def warm_training_child(**kwargs) -> None:
    """In each fresh pool child of a training worker: load torch and the model code before the run comes."""
    if _warm_children:
        worker.child_warm_start()


@shared_task(name="labs.tasks.export_gguf")
def export_gguf(run_id: int, quant: str) -> str:
    """Build a run's llama.cpp / Ollama download (export queue: CPU work, minutes at most)."""
    return gguf_export_build(run_id=run_id, quant=quant).state


@shared_task(name="labs.tasks.clean_exports")
def clean_exports() -> dict:
    """Celery beat, hourly, on the export queue (the bundles lie on its worker's disk): expire old
    bundles and keep the rest within the disk budget."""
    return exports_clean()
