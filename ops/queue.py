"""The Celery queue as the apps see it: send a task by its name, reach the workers.

A service enqueues a task by name instead of importing the task module (which imports the
service back), and no app imports the project package's Celery app (config.celery): celery's
current_app is that app in every process Django starts (config/__init__.py loads it).
"""

from celery import current_app


def enqueue(name: str, *args, **options):
    """Send task `name` with positional `args`; `options` as apply_async takes them (task_id,
    retry_policy, ...). Routing comes from settings.CELERY_TASK_ROUTES by name. Through the
    task itself when this process has it registered, so an eager app (TUNELAB_CELERY_EAGER) runs
    it here as before; a plain send_task would ignore eagerness."""
    return current_app.signature(name, args=args).apply_async(**options)


def control():
    """The Celery app's remote control (ping workers, revoke a task)."""
    return current_app.control
