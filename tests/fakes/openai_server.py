"""A real local HTTP server speaking enough of the OpenAI API for the real `openai` client.

It stands in for a paid external API (the LLM judge, the prompting baselines) and nothing else:
the code under test builds its real client with `base_url=fake.base_url` and talks HTTP to it.

    POST /v1/chat/completions   (plain JSON, or server-sent events when "stream": true)
    GET  /v1/models

The reply comes from `responder(request_json)`, settable at any time:
    str                        → the assistant message content
    dict with "choices"        → sent as the whole response body
    any other dict / list      → JSON-encoded into the assistant message content
    SLEEP                      → no reply for `sleep_s` seconds (longer than a test client's timeout)
    HTTP_500                   → HTTP 500 with an OpenAI-style error body
    Reply(status=..., ...)     → full control: status, body or content, delay before answering
    raising an exception       → HTTP 500 whose message is the exception's text

Usage: the `fake_openai` fixture (import it into a conftest), or `with FakeOpenAI() as fake: ...`.
"""

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SLEEP = "__fake_openai_sleep__"
HTTP_500 = "__fake_openai_http_500__"


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # assistant message content (when body is None)
    body: Any = None  # the whole JSON body, sent as is
    delay: float = 0.0
    finish_reason: str = "stop"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict
    json: Any = None


def _tokens(text: str) -> int:
    # A rough count (about 4 characters a token), enough for code that sums usage.
    return max(1, len(text) // 4) if text else 0


def _message_text(messages) -> str:
    parts = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else ""
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)


class FakeOpenAI:
    def __init__(self, responder=None, *, model: str = "fake-model", sleep_s: float = 10.0):
        self.responder = responder or (lambda request: "OK")
        self.model = model
        self.sleep_s = sleep_s
        self.requests: list[dict] = []  # chat-completions request bodies, in order
        self.log: list[RecordedRequest] = []  # every request, any path
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (and so every test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers that are sleeping on SLEEP
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- replies -----------------------------------------------------------------------------
    def reply_for(self, request_json: dict) -> Reply:
        try:
            result = self.responder(request_json)
        except Exception as exc:  # noqa: BLE001 - the test's responder failing is a server error, as in real life
            return Reply(status=500, body={"error": {"message": str(exc), "type": "server_error", "code": None}})
        if isinstance(result, Reply):
            return result
        if isinstance(result, str) and result == SLEEP:
            return Reply(delay=self.sleep_s, content="(too late)")
        if isinstance(result, str) and result == HTTP_500:
            return Reply(status=500, body={"error": {"message": "internal error (fake)", "type": "server_error", "code": None}})
        if isinstance(result, str):
            return Reply(content=result)
        if isinstance(result, dict) and "choices" in result:
            return Reply(body=result)
        return Reply(content=json.dumps(result))

    def completion_body(self, request_json: dict, reply: Reply) -> dict:
        content = reply.content or ""
        prompt_tokens, completion_tokens = _tokens(_message_text(request_json.get("messages"))), _tokens(content)
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request_json.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _send_json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body=None) -> None:
        self.owner.log.append(RecordedRequest(self.command, self.path, dict(self.headers), body))

    def do_GET(self):
        self._record()
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": self.owner.model, "object": "model", "created": 0, "owned_by": "fake"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._record(raw.decode(errors="replace"))
            self._send_json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        self._record(body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        self.owner.requests.append(body)
        reply = self.owner.reply_for(body)
        if reply.delay and self.owner._stop.wait(reply.delay):
            return  # the server is stopping
        try:
            if reply.status != 200:
                self._send_json(reply.status, reply.body or {"error": {"message": "fake error", "type": "server_error"}})
            elif body.get("stream"):
                self._stream(body, reply)
            else:
                self._send_json(200, reply.body if reply.body is not None else self.owner.completion_body(body, reply))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout), as a real server would see

    def _stream(self, request_json: dict, reply: Reply) -> None:
        full = reply.body if reply.body is not None else self.owner.completion_body(request_json, reply)
        content = full["choices"][0]["message"]["content"] or ""
        base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"], "model": full["model"]}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        for start in range(0, len(content), 16):
            delta = {"content": content[start:start + 16]}
            chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": full["choices"][0]["finish_reason"]}]})
        if (request_json.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": full.get("usage")})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def fake_openai():
    """A running FakeOpenAI (responder: always "OK"); stopped at teardown."""
    with FakeOpenAI() as fake:
        yield fake
