"""Item 1 of issue 11: safe defaults. Production mode by default, `check --deploy` clean for a
deployment, every error on /api/ and /v1/ in the OpenAI JSON shape, body-size limits before
Django reads a body (through a real Daphne)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import path

from tests.servers import ROOT, daphne_server

DEPLOYMENT = {"DJANGO_ALLOWED_HOSTS": "tunelab.example.org", "DJANGO_SECRET_KEY": "k" * 20 + "-production-key-0123456789abcdef"}


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_for_a_deployment_with_the_documented_settings(tmp_path):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env={**DEPLOYMENT, "TUNELAB_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_on_loopback_only_https_is_off_and_check_deploy_says_exactly_that(tmp_path):
    result = _manage("check", "--deploy", env={"TUNELAB_VAR_DIR": str(tmp_path)})
    found = {code for code in ("W004", "W008", "W012", "W016", "W009", "W018", "W020") if f"security.{code}" in result.stderr}
    assert found == {"W004", "W008", "W012", "W016"}, result.stderr  # the plain-http ones, nothing else
    https = _manage("check", "--deploy", "--fail-level", "WARNING",
                    env={"TUNELAB_VAR_DIR": str(tmp_path), "DJANGO_HTTPS": "true"})
    assert https.returncode == 0, https.stderr


def test_a_deployment_without_a_secret_key_refuses_to_start(tmp_path):
    result = _manage("check", env={"DJANGO_ALLOWED_HOSTS": "tunelab.example.org", "TUNELAB_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr


# --- JSON errors on the API paths (test client) ----------------------------------------------


def _explode(request):
    raise RuntimeError("secret internals: /etc/passwd")


def _needs_csrf(request):
    return HttpResponse("ok")


urlpatterns = [path("api/explode", _explode), path("api/needs-csrf", _needs_csrf), path("page/explode", _explode)]


def _assert_openai_error(response, status):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_paths_and_wrong_methods_answer_json(client, db, settings, debug):
    settings.DEBUG = debug
    _assert_openai_error(client.get("/api/no-such-thing"), 404)
    _assert_openai_error(client.get("/v1/nope/nope"), 404)
    error = _assert_openai_error(client.put("/v1/chat/completions"), 405)
    assert error["code"] == "method_not_allowed"


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_exception_on_the_api_is_a_json_500_without_internals(db, settings, debug):
    settings.DEBUG = debug  # even with debug pages on, the API answers JSON
    client = Client(raise_request_exception=False)
    error = _assert_openai_error(client.get("/api/explode"), 500)
    assert error["type"] == "server_error" and "passwd" not in json.dumps(error)
    page = client.get("/page/explode")  # pages keep Django's HTML error page
    assert page.status_code == 500 and not page["Content-Type"].startswith("application/json")


@pytest.mark.urls(__name__)
def test_a_csrf_failure_on_the_api_is_json(db):
    client = Client(enforce_csrf_checks=True)
    error = _assert_openai_error(client.post("/api/needs-csrf", {"a": "b"}), 403)
    assert error["code"] == "csrf_failed" and "Bearer" in error["message"]


# --- through a real Daphne: production mode, body limits -------------------------------------


@pytest.fixture(scope="module")
def daphne(tmp_path_factory, django_db_setup, django_db_blocker):
    with daphne_server(tmp_path_factory.mktemp("daphne"), TUNELAB_API_MAX_BODY_BYTES="20000",
                       TUNELAB_MAX_BODY_BYTES="50000") as address:
        yield address


def _raw(address: str, request: bytes, *, body_chunks=(), timeout=10) -> tuple[int, dict, bytes]:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: the point
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2:]
    return out


def test_an_api_body_over_the_limit_is_refused_from_its_content_length_with_json_413(daphne):
    # The headers promise 5 MB and nothing follows: the answer comes without reading a body.
    request = (f"POST /api/classify HTTP/1.1\r\nHost: {daphne}\r\nContent-Type: application/json\r\n"
               "Content-Length: 5000000\r\n\r\n").encode()
    # Read the whole answer: its body can arrive in a later segment than its headers.
    status, _headers, raw_body = _raw(daphne, request, body_chunks=[b"{" * 1000])  # the rest never comes
    body = json.loads(raw_body)
    assert status == 413
    assert body["error"]["code"] == "request_too_large" and "20,000 bytes" in body["error"]["message"]


def test_a_chunked_api_body_is_cut_off_once_it_streams_past_the_limit(daphne):
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {daphne}\r\nContent-Type: application/json\r\n"
               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunk = b"x" * 8000
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 4 + [b"0\r\n\r\n"]
    status, headers, body = _raw(daphne, request, body_chunks=chunks)
    assert status == 413 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_page_body_over_the_site_limit_is_a_plain_413(daphne):
    request = (f"POST /accounts/login/ HTTP/1.1\r\nHost: {daphne}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               "Content-Length: 900000\r\nConnection: close\r\n\r\n").encode()
    status, headers, body = _raw(daphne, request)
    assert status == 413 and headers["content-type"].startswith("text/plain")
    assert b"50,000 bytes" in body


def test_the_served_site_shows_no_debug_page_and_api_errors_are_json(daphne):
    status, headers, body = _raw(daphne, f"GET /no/such/page HTTP/1.1\r\nHost: {daphne}\r\nConnection: close\r\n\r\n".encode())
    assert status == 404 and b"URLconf" not in body and b"DEBUG" not in body
    status, headers, body = _raw(daphne, f"GET /v1/nope HTTP/1.1\r\nHost: {daphne}\r\nConnection: close\r\n\r\n".encode())
    assert status == 404 and json.loads(body)["error"]["type"] == "invalid_request_error"
    request = f"GET /static/js/event-stream.js HTTP/1.1\r\nHost: {daphne}\r\nConnection: close\r\n\r\n"
    status, headers, _ = _raw(daphne, request.encode())
    assert status == 200 and "javascript" in headers["content-type"]  # WhiteNoise, with DEBUG off


def test_a_malformed_multipart_body_on_the_api_is_answered_by_the_app_in_json(daphne):
    # Twisted would parse multipart bodies itself and answer a broken one with a bare,
    # header-less 400; Daphne never uses that parse, so it is off and the API answers.
    body = b'{"texts": ["x"]}'
    request = (f"POST /api/classify HTTP/1.1\r\nHost: {daphne}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    status, headers, answer = _raw(daphne, request)
    assert status == 401 and headers["content-type"] == "application/json"  # no token: the API's own answer
    assert json.loads(answer)["error"]["type"] == "authentication_error"
