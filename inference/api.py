"""The JSON API (POST /api/classify) and the OpenAI-compatible API (/v1/models, /v1/chat/completions).

Both authenticate with the learner's API tokens (`Authorization: Bearer <token>`), are rate
limited per learner in texts (inference.ratelimit), check every field's type before using it,
and answer errors in the OpenAI error shape (ops.errors):
    {"error": {"message": "...", "type": "invalid_request_error", "param": "texts", "code": "too_many_texts"}}
so the official `openai` client raises its usual exceptions (NotFoundError, RateLimitError...).

The views are async: the model's forward pass runs in a worker thread (asyncio.to_thread), so
a long classification never holds the thread that serves Django's other (sync) pages.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import timedelta
from functools import wraps

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from inference import ratelimit, services
from inference.models import ApiToken, hash_token
from inference.services import json_type
from inference.serving import LoadsBusy
from ops import errors
from ops import text as json_text

LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most once a minute per token


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, *, code: str | None = None, param: str | None = None,
                 headers: dict | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.param = message, status, code, param
        self.headers, self.extra = headers or {}, extra or {}


def error_response(exc: ApiError) -> JsonResponse:
    return errors.error_response(exc.status, exc.message, code=exc.code, param=exc.param, extra=exc.extra,
                                 headers=exc.headers)


async def authenticate(request) -> ApiToken:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError("Missing API token: send the header 'Authorization: Bearer <token>'. "
                       "Create a token on your account page.", 401, code="missing_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    token = await (ApiToken.objects.active().select_related("user")
                   .filter(token_hash=hash_token(raw.strip()), user__is_active=True).afirst())
    if token is None:
        raise ApiError("Invalid or revoked API token.", 401, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
    return token


async def charge(request, user, texts: int) -> None:
    """Count texts against the learner's allowance (RateLimited / LimiterUnavailable)."""
    if texts > 0:
        request.rate_charge = await asyncio.to_thread(ratelimit.charge_texts, user, texts)


async def charge_texts(request, user, texts: list[str]) -> None:
    """Count a request's texts: its first was charged with the request; for more, the request's
    charge is replaced by one for all of them, so a refused request costs nothing."""
    if len(texts) > 1:
        await asyncio.to_thread(ratelimit.release, request.rate_charge)
        await charge(request, user, len(texts))


def _rate_limited(exc: ratelimit.RateLimited) -> ApiError:
    return ApiError(exc.message, 429, code="rate_limit_exceeded",
                    headers={"Retry-After": str(exc.charge.retry_after_s), "X-RateLimit-Limit": str(exc.charge.limit),
                             "X-RateLimit-Remaining": str(exc.charge.remaining)})


def _api_errors(exc: Exception) -> ApiError | None:
    """The API error for an exception a view may raise, or None for an unexpected one."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, services.InputError):
        return ApiError(exc.message, exc.status, code=exc.code, param=exc.param,
                        extra={"limit": exc.limit} if exc.limit else None)
    if isinstance(exc, ratelimit.RateLimited):
        return _rate_limited(exc)
    if isinstance(exc, ratelimit.LimiterUnavailable):
        # Fail closed: without a count there is no limit, and an unlimited API is not served.
        return ApiError("The rate limiter is unavailable right now, so requests are not being served: "
                        "retry in a few seconds.", 503, code="rate_limiter_unavailable", headers={"Retry-After": "5"})
    if isinstance(exc, Http404):
        return ApiError(str(exc) or "Not found.", 404, code="model_not_found", param="model")
    if isinstance(exc, LoadsBusy):
        return ApiError(str(exc), 503, code="model_loads_busy", param="model",
                        headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, services.ModelUnavailable):
        return ApiError(str(exc), 503, code="model_unavailable", param="model")
    return None


def api_view(methods: tuple[str, ...]):
    """Token auth, method check and OpenAI-shaped errors around an async API view. Unexpected
    exceptions reach Django's handler (logged with the traceback) and ops.middleware answers
    them as a JSON 500."""

    def decorate(view):
        @csrf_exempt  # token auth, no cookies: cross-site request forgery does not apply
        @wraps(view)
        async def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    raise ApiError(f"Method {request.method} not allowed; use {' or '.join(methods)}.", 405,
                                   code="method_not_allowed", headers={"Allow": ", ".join(methods)})
                token = await authenticate(request)
                await charge(request, token.user, 1)  # every request costs at least one text
                response = await view(request, token.user, *args, **kwargs)
            except Exception as exc:
                api_error = _api_errors(exc)
                if api_error is None:
                    raise
                return error_response(api_error)
            charged = getattr(request, "rate_charge", None)
            if charged is not None:
                response["X-RateLimit-Limit"] = str(charged.limit)
                response["X-RateLimit-Remaining"] = str(charged.remaining)
            return response

        return wrapper

    return decorate


def _refuse_constant(name: str):
    raise ApiError(f"The request body must be JSON: {name} is not a JSON number.", 400, code="invalid_json")


def json_body(request) -> dict:
    try:
        body = json_text.loads(request.body or b"null", parse_constant=_refuse_constant)
    except json_text.NumberTooLong as exc:
        raise ApiError(f"{exc}.", 400, param=exc.path or None, code="number_too_long") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError("The request body must be JSON (UTF-8).", 400, code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(f"The request body must be a JSON object, not {json_type(body)}.", 400, code="invalid_json")
    return body


# Optional fields and the JSON types they must have; a field of another type is a 400 naming it.
_NUMBER, _INTEGER, _BOOLEAN, _STRING, _OBJECT = "a number", "an integer", "true or false", "a string", "an object"
CLASSIFY_FIELDS = {"run": _INTEGER, "model": _STRING}
CHAT_FIELDS = {"model": _STRING, "stream": _BOOLEAN, "stream_options": _OBJECT, "temperature": _NUMBER,
               "top_p": _NUMBER, "max_tokens": _INTEGER, "max_completion_tokens": _INTEGER, "n": _INTEGER,
               "seed": _INTEGER, "user": _STRING, "logprobs": _BOOLEAN, "presence_penalty": _NUMBER,
               "frequency_penalty": _NUMBER}


def _has_type(value, expected: str) -> bool:
    if expected == _NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if expected == _INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {_BOOLEAN: bool, _STRING: str, _OBJECT: dict}[expected])


def check_fields(body: dict, fields: dict[str, str], prefix: str = "") -> None:
    """Each present, non-null field must have its type; strings must be valid text."""
    for name, expected in fields.items():
        value = body.get(name)
        if value is None:
            continue
        if not _has_type(value, expected):
            raise ApiError(f"{prefix}{name} must be {expected}, not {json_type(value)}.", 400, param=prefix + name,
                           code="invalid_type")
        if isinstance(value, str) and services.text_problem(value):
            raise ApiError(f"{prefix}{name} {services.text_problem(value)}.", 400, param=prefix + name, code="invalid_text")


async def _classify(target, texts, user):
    return await asyncio.to_thread(services.classify, target=target, texts=texts, user=user)


# --- POST /api/classify ----------------------------------------------------------------------


@api_view(("POST",))
async def classify(request, user):
    """{"run": 12 | "model": "smollm2-135m-instruct", "texts": [...]} ->
    {"model", "predictions": [{"label", "probs", "truncated"}], "latency_ms"}."""
    body = json_body(request)
    check_fields(body, CLASSIFY_FIELDS)
    if "texts" in body or not isinstance(body.get("text"), str):
        raw = body.get("texts", body.get("text"))
    else:
        raw = [body["text"]]  # "text": one review, by its name
    texts = services.clean_texts(raw, limit=settings.API_MAX_TEXTS)
    await charge_texts(request, user, texts)
    if body.get("run") is not None:
        try:
            target = await sync_to_async(services.target_for_run)(user, body["run"])
        except Http404 as exc:  # the field the caller sent is "run", not "model"
            raise ApiError(str(exc) or "No such run.", 404, code="model_not_found", param="run") from None
    elif body.get("model") is not None:
        model = body["model"]
        if isinstance(model, str) and not model.startswith("run") and body.get("labels") is not None:
            target = services.target_for_base(model, body["labels"])
        else:
            target = await sync_to_async(services.target_for_model_id)(user, model)
    else:
        raise ApiError('Name what classifies: "run": <run id> (one of your fine-tuned runs) or '
                       f'"model": a base model ({", ".join(services.base_model_names())}).', 400, param="run")
    result = await _classify(target, texts, user)
    return JsonResponse({
        "model": target.model_id,
        "labels": list(result.labels),
        "predictions": [services.prediction_json(p) for p in result.predictions],
        "latency_ms": round(result.latency_ms, 2),
    })


# --- OpenAI-compatible: GET /v1/models, POST /v1/chat/completions ----------------------------


def _model_json(target) -> dict:
    return {"id": target.model_id, "object": "model", "created": target.created,
            "owned_by": "you" if target.run_id else "tunelab", "title": target.title}


@api_view(("GET",))
async def models(request, user):
    targets = await sync_to_async(services.targets_for_user)(user)
    return JsonResponse({"object": "list", "data": [_model_json(t) for t in targets]})


@api_view(("GET",))
async def model_detail(request, user, model_id: str):
    target = await sync_to_async(services.target_for_model_id)(user, model_id)
    return JsonResponse(_model_json(target))


def _message_text(i: int, message) -> str | None:
    """The text of messages[i] if it is a user message, checked by type; None for other roles."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ApiError(f"{where} must be an object with a role and a content, not {json_type(message)}.", 400,
                       param="messages", code="invalid_type")
    if not isinstance(message.get("role"), str):
        raise ApiError(f"{where}.role must be a string (user, system or assistant).", 400, param="messages", code="invalid_type")
    if message["role"] != "user":
        return None
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ApiError(f"{where}.content[{j}] must be an object with a type.", 400, param="messages", code="invalid_type")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise ApiError(f"{where}.content[{j}].text must be a string.", 400, param="messages", code="invalid_type")
                parts.append(part["text"])
        content = "\n".join(parts)
    if not isinstance(content, str):
        raise ApiError(f"{where}.content must be a string or a list of text parts, not {json_type(content)}.", 400,
                       param="messages", code="invalid_type")
    problem = services.text_problem(content)
    if problem:
        raise ApiError(f"{where}.content {problem}.", 400, param="messages", code="invalid_text")
    return content


def last_user_text(messages) -> str:
    """The review: the text of the last user message (string content or text parts). Every
    message is checked, not only the last user one: a malformed request is refused whole."""
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of chat messages.", 400, param="messages")
    texts = [_message_text(i, message) for i, message in enumerate(messages)]
    for text in reversed(texts):
        if text is not None:
            return text
    raise ApiError("messages has no user message: the last user message is the review to classify.", 400,
                   param="messages")


@api_view(("POST",))
async def chat_completions(request, user):
    """The last user message is the review; the reply's content is the label.

    Earlier messages (a system prompt, example turns) are ignored: a fine-tuned model is served
    with exactly the prompt it was trained with. Sampling options make no difference, since the
    label is chosen by comparing the label tokens' scores, deterministically.
    """
    body = json_body(request)
    check_fields(body, CHAT_FIELDS)
    check_fields(body.get("stream_options") or {}, {"include_usage": _BOOLEAN}, prefix="stream_options.")
    text = last_user_text(body.get("messages"))
    texts = services.clean_texts([text], limit=1)
    target = await sync_to_async(services.target_for_model_id)(user, body.get("model"))
    result = await _classify(target, texts, user)
    prediction = result.predictions[0]
    usage = await asyncio.to_thread(services.usage, result.loaded, text, prediction.label)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    extension = {"probs": prediction.probs, "truncated": prediction.truncated, "latency_ms": round(result.latency_ms, 2)}
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _stream(completion_id, created, target.model_id, prediction.label, usage if include_usage else None)
    return JsonResponse({
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": target.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": prediction.label, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
        "tunelab": extension,
    })


def _stream(completion_id: str, created: int, model: str, label: str, usage: dict | None) -> StreamingHttpResponse:
    """Server-sent events, for clients that ask for stream=true: the label arrives as one chunk."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": label}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if usage is not None:
        chunks.append({**base, "choices": [], "usage": usage})

    async def events():
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response
