"""reverse() kept per process: a page's links are reversed once, not on every render.

The URLconf does not change while a process runs, so a reversed address depends only on what is
asked (view name, arguments, current app) and the script prefix. Django's reverse() costs ~30 us a
call, and a quiz page links 10-25 addresses (its nav, its forms, one or two per listed question):
about a tenth of such a page's CPU. Arguments that are not plain strings and integers (a model
instance is reversed through its str(), which can change) are reversed every time.
"""

from __future__ import annotations

from functools import lru_cache

from django.urls import get_script_prefix, get_urlconf, reverse

PLAIN = (str, int)


def cached_reverse(viewname: str, args=(), kwargs=None, current_app: str | None = None) -> str:
    kwargs = kwargs or {}
    values = (*args, *kwargs.values())
    if not isinstance(viewname, str) or not all(isinstance(v, PLAIN) for v in values):
        return reverse(viewname, args=args, kwargs=kwargs, current_app=current_app)
    return _reversed(get_script_prefix(), get_urlconf(), viewname, tuple(args), tuple(sorted(kwargs.items())), current_app)


@lru_cache(maxsize=8192)
def _reversed(prefix, urlconf, viewname, args, kwargs, current_app) -> str:
    return reverse(viewname, urlconf=urlconf, args=args, kwargs=dict(kwargs), current_app=current_app)
