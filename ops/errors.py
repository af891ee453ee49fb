"""Errors on the API paths (/api/, /v1/): always JSON, in the OpenAI error shape.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "texts", "code": "too_many_texts"}}

so the official `openai` client raises its usual exceptions (BadRequestError, RateLimitError...)
and scripts never have to parse an HTML page. The API views build their errors here, and the
middleware turns every other error on these paths (unknown URL, CSRF, an unexpected exception,
a body too large) into the same shape.
"""

from __future__ import annotations

from django.http import JsonResponse

API_PREFIXES = ("/api/", "/v1/")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}

# What a status means when nothing more specific was said (Django's own error pages).
DEFAULT_MESSAGES = {
    400: ("Bad request: the request could not be read.", "bad_request"),
    401: ("Authentication required: send the header 'Authorization: Bearer <token>'.", "missing_api_key"),
    403: ("Forbidden.", "forbidden"),
    404: ("No such endpoint. The API has POST /api/classify, GET /v1/models, GET /v1/models/<id> and "
          "POST /v1/chat/completions.", "not_found"),
    405: ("Method not allowed on this endpoint.", "method_not_allowed"),
    413: ("The request body is too large.", "request_too_large"),
    429: ("Too many requests: slow down.", "rate_limit_exceeded"),
    500: ("Internal error: the server failed on this request. It has been logged; try again or report it.",
          "internal_error"),
    503: ("The service is unavailable right now: try again shortly.", "service_unavailable"),
}


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def error_body(status: int, message: str | None = None, *, code: str | None = None, param: str | None = None,
               extra: dict | None = None) -> dict:
    default_message, default_code = DEFAULT_MESSAGES.get(status, (f"HTTP {status}.", None))
    return {"error": {"message": message or default_message,
                      "type": ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                      "param": param, "code": code or default_code, **(extra or {})}}


def error_response(status: int, message: str | None = None, *, code: str | None = None, param: str | None = None,
                   extra: dict | None = None, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(error_body(status, message, code=code, param=param, extra=extra), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response
