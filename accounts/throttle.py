"""Login throttling, for both login pages (the site's and the admin's), and sign-up throttling.

Failed attempts are counted per account and per client address over a sliding window
(ops.limits, in Redis, so every web node shares the count). Once either count reaches its limit
the form refuses before checking the password, with a message saying how long to wait; a
successful login clears the account's count. Per account stops guessing one password from many
addresses; per address stops one address trying many accounts.

Sign-ups are counted per client address (SIGNUPS_PER_ADDRESS per SIGNUP_WINDOW_S): every
per-learner limit (GPU seconds, texts per minute, uploads) would otherwise multiply with accounts.

When Redis is down nothing can be counted, so sign-in and sign-up are refused with a message
rather than left unthrottled (fail closed, like the API's rate limit).
"""

from __future__ import annotations

import hashlib

from django.conf import settings

from ops import limits

UNAVAILABLE = ("Signing in is paused for a moment: the service that counts login attempts is unavailable. "
               "Try again in a minute.")


def _account_key(username: str) -> str:
    # Hashed: the key names no account, and any username (however long or odd) makes a valid key.
    digest = hashlib.sha256(username.strip().casefold().encode("utf-8", "replace")).hexdigest()[:32]
    return f"login:account:{digest}"


def _address_key(address: str) -> str:
    return f"login:address:{address or 'unknown'}"


def _window() -> dict:
    return {"window_s": settings.LOGIN_THROTTLE_WINDOW_S}


def _wait(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{(seconds + 59) // 60} minutes"


def refusal(username: str, address: str) -> str | None:
    """Why this attempt is refused before the password is checked, or None to go ahead."""
    try:
        account = limits.peek(_account_key(username), limit=settings.LOGIN_FAILURES_PER_ACCOUNT, **_window())
        origin = limits.peek(_address_key(address), limit=settings.LOGIN_FAILURES_PER_ADDRESS, **_window())
    except limits.LimiterUnavailable:
        return UNAVAILABLE
    if account.retry_after_s:
        return f"Too many failed logins for this account: try again in {_wait(account.retry_after_s)}."
    if origin.retry_after_s:
        return f"Too many failed logins from your address: try again in {_wait(origin.retry_after_s)}."
    return None


def record_failure(username: str, address: str) -> None:
    try:
        limits.record(_account_key(username), limit=settings.LOGIN_FAILURES_PER_ACCOUNT, **_window())
        limits.record(_address_key(address), limit=settings.LOGIN_FAILURES_PER_ADDRESS, **_window())
    except limits.LimiterUnavailable:
        pass  # refusal() already refuses every attempt while the counter is down


def record_success(username: str) -> None:
    try:
        limits.clear(_account_key(username))
    except limits.LimiterUnavailable:
        pass


def take_signup(address: str) -> str | None:
    """Count one account created from `address`; why not (a message), or None to go ahead."""
    try:
        charge = limits.take(f"signup:address:{address or 'unknown'}", 1, limit=settings.SIGNUPS_PER_ADDRESS,
                             window_s=settings.SIGNUP_WINDOW_S)
    except limits.LimiterUnavailable:
        return ("Signing up is paused for a moment: the service that counts sign-ups is unavailable. "
                "Try again in a minute.")
    if not charge.charged:
        return (f"Too many accounts created from your address: try again in {_wait(charge.retry_after_s)}, "
                "or log in to the account you made.")
    return None
