"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the allowed-hosts origin check and the session auth middleware, so consumers
see request.user exactly as views do.
"""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Build the Django app first: it sets up the app registry the consumers import from.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from ops.middleware import BodySizeLimit  # noqa: E402

if "daphne" in sys.modules:  # served by Daphne: refuse big bodies while they arrive (ops.daphne_limits)
    from ops import daphne_limits

    daphne_limits.install()

# BodySizeLimit outside Django: Django's handler reads the whole body before any middleware runs.
application = BodySizeLimit(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
))
