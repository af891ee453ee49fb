"""The JSON API (POST /api/classify) and the OpenAI-compatible API (/v1/models, /v1/chat/completions).

Both authenticate with the learner's API tokens (`Authorization: Bearer <token>`), are rate
limited per token, and answer errors in the OpenAI error shape:
    {"error": {"message": "...", "type": "invalid_request_error", "param": "texts", "code": "too_many_texts"}}
so the official `openai` client raises its usual exceptions (NotFoundError, RateLimitError...).

The views are async: the model's forward pass runs in a worker thread (asyncio.to_thread), so
a long classification never holds the thread that serves Django's other (sync) pages.
"""

from __future__ import annotations

import asyncio
import json
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

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               503: "service_unavailable"}
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most once a minute per token


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, *, code: str | None = None, param: str | None = None,
                 headers: dict | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.param = message, status, code, param
        self.headers, self.extra = headers or {}, extra or {}


def error_response(exc: ApiError) -> JsonResponse:
    body = {"message": exc.message, "type": ERROR_TYPES.get(exc.status, "invalid_request_error"),
            "param": exc.param, "code": exc.code, **exc.extra}
    response = JsonResponse({"error": body}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


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
    decision = await asyncio.to_thread(ratelimit.check, f"token:{token.pk}")
    if not decision.allowed:
        raise ApiError(f"Rate limit reached: {decision.limit} requests per minute per token. "
                       f"Retry in {decision.retry_after_s} s.", 429, code="rate_limit_exceeded",
                       headers={"Retry-After": str(decision.retry_after_s), "X-RateLimit-Limit": str(decision.limit),
                                "X-RateLimit-Remaining": "0"})
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)
    request.rate_limit = decision
    return token


def api_view(methods: tuple[str, ...]):
    """Token auth, method check and OpenAI-shaped errors around an async API view."""

    def decorate(view):
        @csrf_exempt  # token auth, no cookies: cross-site request forgery does not apply
        @wraps(view)
        async def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    raise ApiError(f"Method {request.method} not allowed; use {' or '.join(methods)}.", 405,
                                   headers={"Allow": ", ".join(methods)})
                token = await authenticate(request)
                response = await view(request, token.user, *args, **kwargs)
                decision = request.rate_limit
                response["X-RateLimit-Limit"] = str(decision.limit)
                response["X-RateLimit-Remaining"] = str(decision.remaining)
                return response
            except ApiError as exc:
                return error_response(exc)
            except services.InputError as exc:
                return error_response(ApiError(exc.message, exc.status, code=exc.code, param=exc.param,
                                               extra={"limit": exc.limit} if exc.limit else None))
            except Http404 as exc:
                return error_response(ApiError(str(exc) or "Not found.", 404, code="model_not_found", param="model"))
            except services.ModelUnavailable as exc:
                return error_response(ApiError(str(exc), 503, code="model_unavailable", param="model"))

        return wrapper

    return decorate


def json_body(request) -> dict:
    try:
        body = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError("The request body must be JSON.", 400, code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.", 400, code="invalid_json")
    return body


async def _classify(target, texts):
    return await asyncio.to_thread(services.classify, target=target, texts=texts)


# --- POST /api/classify ----------------------------------------------------------------------


@api_view(("POST",))
async def classify(request, user):
    """{"run": 12 | "model": "smollm2-135m-instruct", "texts": [...]} ->
    {"model", "predictions": [{"label", "probs", "truncated"}], "latency_ms"}."""
    body = json_body(request)
    texts = services.clean_texts(body.get("texts", body.get("text")), limit=settings.API_MAX_TEXTS)
    if body.get("run") is not None:
        target = await sync_to_async(services.target_for_run)(user, body["run"])
    elif body.get("model") is not None:
        model = body["model"]
        if isinstance(model, str) and not model.startswith("run") and body.get("labels") is not None:
            target = services.target_for_base(model, body["labels"])
        else:
            target = await sync_to_async(services.target_for_model_id)(user, model)
    else:
        raise ApiError('Name what classifies: "run": <run id> (one of your fine-tuned runs) or '
                       f'"model": a base model ({", ".join(services.base_model_names())}).', 400, param="run")
    result = await _classify(target, texts)
    return JsonResponse({
        "model": target.model_id,
        "labels": list(result.loaded.labels),
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


def last_user_text(messages) -> str:
    """The review: the text of the last user message (string content or text parts)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of chat messages.", 400, param="messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = "\n".join(part.get("text", "") for part in content
                                    if isinstance(part, dict) and part.get("type") == "text")
            if not isinstance(content, str):
                raise ApiError("The last user message has no text content.", 400, param="messages")
            return content
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
    text = last_user_text(body.get("messages"))
    texts = services.clean_texts([text], limit=1)
    target = await sync_to_async(services.target_for_model_id)(user, body.get("model"))
    result = await _classify(target, texts)
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
