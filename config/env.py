"""Strict environment helpers.

A typo in an environment variable must stop the process at start-up with a message naming the
variable, not silently fall back to a default that behaves differently in production.
"""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = _raw(name)
    if value is None:
        if required:
            raise ImproperlyConfigured(f"{name} must be set.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false, 1/0, yes/no), got {value!r}.")


def env_int(name: str, default: int, *, min_value: int | None = None, max_value: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name} must be >= {min_value}, got {number}.")
    if max_value is not None and number > max_value:
        raise ImproperlyConfigured(f"{name} must be <= {max_value}, got {number}.")
    return number


def env_float(name: str, default: float, *, min_value: float | None = None) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}.") from None
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name} must be >= {min_value}, got {number}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(item == "" for item in items):
        raise ImproperlyConfigured(f"{name} must be a comma-separated list without empty items, got {value!r}.")
    return items
