"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the allowed-hosts origin check and the session auth middleware, so consumers
see request.user exactly as views do.
"""

import os
import sys

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.urls import Resolver404, resolve

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with a request for a sync view served in one hop to the sync thread.

    Under ASGI, Django runs each MiddlewareMixin middleware (sessions, CSRF, auth, messages, ...) in
    async mode: every process_request and process_response goes to the sync thread and back, about
    a dozen hops a request (measured: 1.2 ms of CPU of a question page's 7.6 through this handler,
    a fifth). A sync view (every page but the playground) gets the same middleware built for sync,
    run in one hop on the same thread (thread_sensitive, as before). An async view keeps the async
    chain, so what it awaits (the playground's model load) never holds the thread the sync pages share."""

    def __init__(self):
        super().__init__()
        sync_handler = BaseHandler()
        sync_handler.load_middleware(is_async=False)
        self._sync_response = sync_to_async(sync_handler.get_response, thread_sensitive=True)

    async def get_response_async(self, request):
        if _serves_sync_view(request.path_info):
            return await self._sync_response(request)
        return await super().get_response_async(request)


def _serves_sync_view(path: str) -> bool:
    try:
        return not iscoroutinefunction(resolve(path).func)
    except Resolver404:
        return True  # the 404 page is rendered by sync code either way


# Build the Django app first: it sets up the app registry the consumers import from.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

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
