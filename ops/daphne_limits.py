"""The body-size limit inside Daphne, where the body is still arriving.

Daphne (on Twisted) reads a request's whole body, spooling it to a temporary file, before it
calls the application, so an ASGI middleware alone (ops.middleware.BodySizeLimit) can only
refuse a huge body after it has been received in full. These two hooks on Daphne's request
class act while the bytes arrive: a Content-Length over the limit is answered with 413 as
soon as the headers are in, and a body without one (chunked) is cut off at the limit. The
connection is then closed, so the rest is never read.

Twisted hands the request its length in gotLength() and the body in handleContentChunk(),
both documented hooks of twisted.web.http.Request; the path comes from the channel,
which has parsed the request line by then. installed() reports whether the hooks are in place
(tests check it, so a Daphne/Twisted upgrade that moves them fails a test, not silently).
"""

from __future__ import annotations

import json

from daphne.http_protocol import WebRequest

from ops.errors import error_body, is_api_path
from ops.middleware import body_limit_for

_installed = False


def _limit_and_path(request) -> tuple[int, str]:
    raw = getattr(request.channel, "_path", b"") or b""
    path = raw.split(b"?", 1)[0].decode("latin-1")
    return body_limit_for(path), path


def _refuse(request, limit: int, path: str) -> None:
    """Answer 413 directly on the connection and close it: the body is never read."""
    message = f"The request body is larger than the limit of {limit:,} bytes."
    if is_api_path(path):
        body, content_type = json.dumps(error_body(413, message, code="request_too_large")).encode(), b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    transport = request.channel.transport
    transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: " + content_type
                    + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    transport.loseConnection()
    request._tunelab_refused = True


def install() -> None:
    global _installed
    if _installed:
        return

    got_length, handle_chunk = WebRequest.gotLength, WebRequest.handleContentChunk

    def gotLength(self, length):
        # Twisted would also parse form bodies into request.args, which Daphne never reads (it
        # hands the application the raw body), and answers a malformed multipart body with a
        # bare, header-less 400 before Django can say what is wrong: off (Twisted's own
        # constructor option, parsePOSTFormSubmission).
        self._parsePOSTFormSubmission = False
        self._tunelab_limit, self._tunelab_path = _limit_and_path(self)
        self._tunelab_received, self._tunelab_refused = 0, False
        if length is not None and length > self._tunelab_limit:
            got_length(self, 0)  # no temporary file for a body that will not be read
            _refuse(self, self._tunelab_limit, self._tunelab_path)
            return
        got_length(self, length)

    def handleContentChunk(self, data):
        if getattr(self, "_tunelab_refused", False):
            return
        self._tunelab_received = getattr(self, "_tunelab_received", 0) + len(data)
        if self._tunelab_received > getattr(self, "_tunelab_limit", float("inf")):
            _refuse(self, self._tunelab_limit, self._tunelab_path)
            return
        handle_chunk(self, data)

    WebRequest.gotLength, WebRequest.handleContentChunk = gotLength, handleContentChunk
    _installed = True


def installed() -> bool:
    return _installed
