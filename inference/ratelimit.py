"""Per-learner classification limits, counted in texts over a sliding minute.

Counted per learner, not per API token (a learner may hold 20 tokens), and in texts, not
requests (one request may carry API_MAX_TEXTS of them): the API, the playground and every
token share one allowance, CLASSIFY_TEXTS_PER_MINUTE. A request costs at least one text, so
a flood of malformed or empty requests is limited too. Baseline launches have their own
hourly allowance: each one runs three local evaluations of the whole test split.

The counts live in Redis (ops.limits). When Redis is down nothing is counted, so nothing is
served: the caller answers 503 (fail closed), never an unlimited API.
"""

from __future__ import annotations

from django.conf import settings

from ops import limits
from ops.limits import Charge, LimiterUnavailable

__all__ = ["Charge", "LimiterUnavailable", "RateLimited", "charge_texts", "charge_model_load", "charge_baselines",
           "release"]

MINUTE_S = 60.0
HOUR_S = 3600.0


class RateLimited(Exception):
    def __init__(self, message: str, charge: Charge):
        super().__init__(message)
        self.message, self.charge = message, charge


def charge_texts(user, texts: int) -> Charge:
    """Count `texts` (at least one) against the learner's per-minute allowance, or RateLimited."""
    limit = settings.CLASSIFY_TEXTS_PER_MINUTE
    amount = max(1, texts)
    charge = limits.take(f"texts:user:{user.pk}", amount, limit=limit, window_s=MINUTE_S)
    if not charge.charged:
        used = charge.used
        raise RateLimited(f"Rate limit reached: {limit} texts per minute per learner (API, playground and every token "
                          f"together); {max(0, limit - used)} left now, this request has {amount}. "
                          f"Retry in {charge.retry_after_s} s.", charge)
    return charge


def charge_model_load(user) -> Charge | None:
    """Count a model load (MODEL_LOAD_TEXTS texts) against the learner's per-minute allowance, or
    RateLimited: loading and merging a run's adapter costs the server a second or more and a
    model's memory, so asking for run-1, run-2, run-3... in turn is not free."""
    amount = settings.MODEL_LOAD_TEXTS
    if not amount:
        return None
    limit = settings.CLASSIFY_TEXTS_PER_MINUTE
    charge = limits.take(f"texts:user:{user.pk}", amount, limit=limit, window_s=MINUTE_S)
    if not charge.charged:
        raise RateLimited(f"Rate limit reached: loading a model that is not in memory costs {amount} of your {limit} texts "
                          f"per minute, and {max(0, limit - charge.used)} are left now. Retry in {charge.retry_after_s} s, "
                          "or use a model you used a moment ago.", charge)
    return charge


def charge_baselines(user) -> Charge:
    """Count one baseline launch against the learner's hourly allowance, or RateLimited."""
    limit = settings.BASELINES_PER_HOUR
    charge = limits.take(f"baselines:user:{user.pk}", 1, limit=limit, window_s=HOUR_S)
    if not charge.charged:
        raise RateLimited(f"You launched baselines {limit} times in the last hour, the limit: "
                          f"try again in {charge.retry_after_s // 60 + 1} min.", charge)
    return charge


def release(charge: Charge) -> None:
    """Give a charge back (the work it paid for did not happen)."""
    try:
        limits.adjust(charge, 0)
    except LimiterUnavailable:
        pass  # it expires with its window
