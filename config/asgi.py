"""ASGI entry point: HTTP through Django, websockets through Channels.

Websockets pass the allowed-hosts origin check and the session auth middleware, so consumers
see request.user exactly as views do.
"""

import asyncio
import contextvars
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import django
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.urls import Resolver404, resolve, set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class PooledSyncASGIHandler(ASGIHandler):
    """Django's ASGI handler, with a request for a sync view served on a small pool of threads.

    Django's own handler gives every request a fresh thread (a ThreadSensitiveContext each) and
    goes to it and back about a dozen times: each MiddlewareMixin middleware's process_request and
    process_response, the request_started and request_finished signals. A fresh thread also means
    a fresh database connection every request, whatever CONN_MAX_AGE says, since connections
    belong to threads. A sync view (every page but the playground) is served here in one hop:
    request_started, the middleware built for sync, the view and closing the response, on one of
    settings.WEB_SYNC_THREADS (TUNELAB_WEB_THREADS) long-lived threads, each keeping its database
    connection as a WSGI server's threads do. An async view keeps Django's async chain, so what it
    awaits (the playground's model load) never holds a pool thread."""

    def __init__(self):
        super().__init__()
        sync_handler = BaseHandler()
        sync_handler.load_middleware(is_async=False)
        self._sync_handler = sync_handler
        self._executor = ThreadPoolExecutor(max_workers=settings.WEB_SYNC_THREADS, thread_name_prefix="web-sync")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        script_name = get_script_prefix(scope)
        # The request's path_info, as ASGIRequest derives it.
        if not _serves_sync_view(scope["path"].removeprefix(script_name) if script_name else scope["path"]):
            return await super().__call__(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(script_name)
            response = await self._in_pool(self._respond_sync, scope, body_file)
            response._handler_class = self.__class__
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:  # its content was read while sending: closed after it
                    await self._in_pool(response.close)
        finally:
            body_file.close()

    def _in_pool(self, function, *args):
        """`function(*args)` on a pool thread, in a copy of this task's context (as sync_to_async
        does, at a fraction of its cost: this is paid by every page)."""
        context = contextvars.copy_context()
        return asyncio.get_running_loop().run_in_executor(self._executor, context.run, function, *args)

    def shutdown(self) -> None:
        """Stop the pool's threads; their database connections close with them (a test's handler:
        a server process simply exits)."""
        self._executor.shutdown(wait=True)
        gc.collect()

    def _respond_sync(self, scope, body_file):
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self._sync_handler.get_response(request)
        if not response.streaming:
            # Its body is already bytes: closing it here (request_finished, which closes this thread's
            # old database connections) saves a second trip to the pool after sending.
            response.close()
        return response


@lru_cache(maxsize=4096)  # (a page's path is resolved again by Django: this one decides the route)
def _serves_sync_view(path: str) -> bool:
    try:
        return not iscoroutinefunction(resolve(path).func)
    except Resolver404:
        return True  # the 404 page is rendered by sync code either way


# Build the Django app first: it sets up the app registry the consumers import from.
django.setup(set_prefix=False)
django_asgi_app = PooledSyncASGIHandler()

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
