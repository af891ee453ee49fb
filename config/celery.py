"""The Celery app. All settings come from Django settings under the CELERY_ namespace.

Queues (routes in settings.CELERY_TASK_ROUTES): `gpu` for training runs, `export` for GGUF builds
and their cleanup, `default` for the rest (the reaper and dispatcher among them)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tunelab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
