"""Prompting baselines, measured: what fine-tuning is compared against.

Two ways to classify without training, each zero-shot or with k labelled examples (picked by
mlcore.prompt.pick_shots and written into the prompt by mlcore.prompt, as in labs' few-shot runs):
- through an LLM API (the `openai` client against any OpenAI-compatible endpoint: gpt-4o-mini,
  a vLLM server, this project's own /v1): the model answers in text, which we parse to a label
  (a reply naming no label is counted wrong and reported);
- with the local base model: label scoring, exactly as the fine-tuned classifier scores (the
  examples, when k > 0, go in as earlier user/assistant turns).

Every evaluation returns the same Evaluation: quality (accuracy, macro-F1), latency per
classification (p50/p95), tokens, and cost per 1,000 classifications from configurable prices.
Nothing here touches the database: baselines.py turns Evaluations into rows.
"""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import openai

from mlcore.prompt import chat_messages, prompt_token_count

UNPARSEABLE = "(unparseable)"  # stands for a reply naming no label: never equal to a true label
REPLY_MAX_TOKENS = 10  # an API reply is one label word: what each call may bill as completion
SAMPLE_REPLIES = 8  # unparseable replies kept for the results page


@dataclass
class Evaluation:
    n: int
    accuracy: float
    macro_f1: float
    unparseable: int = 0
    errors: int = 0  # API calls that failed (timeouts, 5xx): counted wrong, like unparseable replies
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    prompt_tokens: int = 0  # in total over the n classifications
    completion_tokens: int = 0
    busy_s: float = 0.0  # wall time of the whole evaluation
    details: dict = field(default_factory=dict)
    unreported: int = 0  # API replies that came without token usage (their tokens are unknown)

    def cost_per_1000(self, price_input_per_m: float, price_output_per_m: float) -> float:
        """USD per 1,000 classifications at the given prices (USD per million tokens)."""
        if not self.n:
            return 0.0
        per_call = (self.prompt_tokens * price_input_per_m + self.completion_tokens * price_output_per_m) / self.n / 1e6
        return per_call * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))  # ceil(q/100 * n)
    return ordered[rank - 1]


# --- replies ---------------------------------------------------------------------------------------


def parse_label(reply: str | None, labels) -> str | None:
    """The label a text reply names: the one label it mentions ("The sentiment is negative."),
    or its first word when that is a label ending a sentence ("Negative. It is not positive.");
    None when it names none, or several without committing ("positive or negative?")."""
    text = (reply or "").strip().lower()
    named = {word for word in re.findall(r"[a-z]+", text) if word in labels}
    if len(named) == 1:
        return named.pop()
    first = re.match(r"[^a-z]*([a-z]+)\s*(?:[.!:\n]|$)", text)
    if named and first and first.group(1) in labels:
        return first.group(1)
    return None


def is_local_url(base_url: str) -> bool:
    """True when an endpoint is on this machine (the data stays here)."""
    host = (urlparse(base_url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def api_tokens(tokenizer, text: str, labels, shots=()) -> int:
    """Tokens one API classification may bill: the prompt, as `tokenizer` counts it, and the
    longest reply evaluate_api allows."""
    return prompt_token_count(tokenizer, text, labels, shots) + REPLY_MAX_TOKENS


# --- through an LLM API --------------------------------------------------------------------------


class ApiConfigError(Exception):
    """The endpoint refused us as configured (bad key, unknown model): no point in going on."""


def evaluate_api(examples, labels, *, shots=(), base_url: str, api_key: str, model: str, timeout_s: float,
                 concurrency: int = 4, max_retries: int = 2) -> Evaluation:
    """Classify every example through the chat-completions API and score the parsed replies."""
    # mlcore.metrics imports scikit-learn (~1 s): only when metrics are computed
    from mlcore.metrics import compute_metrics

    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def call(example):
        tick = time.perf_counter()
        try:
            response = client.chat.completions.create(
                model=model, messages=chat_messages(example.text, labels, shots), temperature=0, max_tokens=REPLY_MAX_TOKENS,
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
            raise ApiConfigError(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}") from exc
        except openai.OpenAIError as exc:
            return None, None, time.perf_counter() - tick, f"{type(exc).__name__}: {exc}"
        latency = time.perf_counter() - tick
        reply = response.choices[0].message.content if response.choices else None
        return reply, response.usage, latency, None

    started = time.perf_counter()
    first = call(examples[0]) if examples else None  # fail fast on a bad key before fanning out
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = [first, *pool.map(call, examples[1:])] if examples else []
    busy = time.perf_counter() - started

    predicted, latencies, samples = [], [], []
    unparseable = errors = prompt_tokens = completion_tokens = unreported = 0
    for example, (reply, usage, latency, error) in zip(examples, results, strict=True):
        latencies.append(latency * 1000)
        if error is not None:
            errors += 1
            predicted.append(UNPARSEABLE)
            if len(samples) < SAMPLE_REPLIES:
                samples.append({"text": example.text, "reply": None, "error": error})
            continue
        if usage is not None:
            prompt_tokens += usage.prompt_tokens or 0
            completion_tokens += usage.completion_tokens or 0
        else:
            unreported += 1
        label = parse_label(reply, labels)
        if label is None:
            unparseable += 1
            if len(samples) < SAMPLE_REPLIES:
                samples.append({"text": example.text, "reply": reply})
        predicted.append(label or UNPARSEABLE)
    metrics = compute_metrics([e.label for e in examples], predicted, list(labels))
    return Evaluation(
        n=len(examples), accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], unparseable=unparseable,
        errors=errors, latency_p50_ms=percentile(latencies, 50), latency_p95_ms=percentile(latencies, 95),
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, busy_s=busy, unreported=unreported,
        details={"metrics": metrics, "unparseable_samples": samples, "concurrency": concurrency},
    )


# --- with a local model (label scoring) ------------------------------------------------------------


def evaluate_local(classifier, examples) -> Evaluation:
    """Score `classifier` one review at a time, as a served request would be: the latency is
    per classification at batch 1 (the prefix cache is built before the clock starts)."""
    # mlcore.metrics imports scikit-learn (~1 s): only when metrics are computed
    from mlcore.metrics import compute_metrics

    if examples:
        classifier.predict([examples[0].text], batch_size=1)  # warm-up: prefix cache, allocations
    predicted, latencies = [], []
    started = time.perf_counter()
    for example in examples:
        tick = time.perf_counter()
        predicted.append(classifier.predict([example.text], batch_size=1)[0].label)
        latencies.append((time.perf_counter() - tick) * 1000)
    busy = time.perf_counter() - started
    metrics = compute_metrics([e.label for e in examples], predicted, classifier.labels)
    # Tokens the model reads per classification, for comparison with the API rows (the shared
    # prefix is computed once per loaded model, but an API bills it on every call).
    prompt_tokens = sum(prompt_token_count(classifier.tokenizer, e.text, classifier.labels, classifier.shots)
                        for e in examples)
    return Evaluation(
        n=len(examples), accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
        latency_p50_ms=percentile(latencies, 50), latency_p95_ms=percentile(latencies, 95),
        prompt_tokens=prompt_tokens, completion_tokens=0, busy_s=busy,
        details={"metrics": metrics, "mean_latency_ms": statistics.fmean(latencies) if latencies else 0.0},
    )
