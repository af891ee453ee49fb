"""Two guards in front of every request: a body-size limit (ASGI) and JSON errors on the API.

BodySizeLimit wraps the whole ASGI application (config/asgi.py): Django's ASGI handler reads the
entire body before any middleware runs, so a limit inside Django would come too late. It refuses
a declared Content-Length over the limit without reading a byte of the body, and stops a body
sent without one (chunked) as soon as it streams past the limit. (Daphne itself spools a large
body to a temporary file before the application sees it; in production a proxy's own limit,
e.g. nginx's client_max_body_size, stops it earlier still.)

ApiJsonErrorsMiddleware is the outermost Django middleware: on /api/ and /v1/ any error response
that is not already JSON (Django's 404 and 500 pages, a CSRF failure, a 400 from a malformed
request) is replaced by the same OpenAI-shaped JSON error the API views answer with.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

from ops.errors import error_body, error_response, is_api_path

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


def body_limit_for(path: str) -> int:
    return settings.API_MAX_BODY_BYTES if is_api_path(path) else settings.MAX_BODY_BYTES


async def _answer(send, path: str, status: int, message: str, code: str) -> None:
    if is_api_path(path):
        body, content_type = json.dumps(error_body(status, message, code=code)).encode(), b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over the limit, before Django reads it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, limit = scope.get("path", ""), body_limit_for(scope.get("path", ""))
        too_large = (f"The request body is larger than the limit of {limit:,} bytes"
                     + (" for the API (at most the API's texts per request)." if is_api_path(path) else "."))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await _answer(send, path, 400, "The Content-Length header is not a number.", "bad_content_length")
            if int(declared) > limit:
                return await _answer(send, path, 413, too_large, "request_too_large")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except BodyTooLarge:
            await _answer(send, path, 413, too_large, "request_too_large")


class ApiJsonErrorsMiddleware(MiddlewareMixin):
    """On the API paths, every error response is JSON in the OpenAI shape."""

    def process_response(self, request, response):
        if response.status_code < 400 or not is_api_path(request.path_info):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        replacement = error_response(response.status_code)
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in response:
                replacement[name] = response[name]
        return replacement
