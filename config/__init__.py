"""The project package: it wires the apps together (the top floor of the imports). Modules:

    settings  one settings module, configured by environment variables
    env       the strict environment helpers settings uses (ImproperlyConfigured on a bad value)
    urls      the root URLconf: each app's urls
    asgi      the ASGI entry point: HTTP through Django, websockets through Channels
    routing   websocket routes, collected from the apps that stream
    celery    the Celery app; importing this package loads it so @shared_task binds to it
"""

# Load the Celery app with Django so that @shared_task binds to it.
from .celery import app as celery_app

__all__ = ["celery_app"]
