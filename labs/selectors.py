"""Read-only labs queries that other apps' pages show (the learner's home). Nothing here writes."""

from __future__ import annotations

from labs.models import Lab, Run


def last_run(*, user) -> Run | None:
    """The learner's most recent run, with its lab."""
    return Run.objects.filter(owner=user).select_related("lab").order_by("-created_at", "-id").first()


def next_lab(*, user) -> Lab | None:
    """The first active lab, in the catalog's order (the suggested path: the default lab first),
    that the learner has not run yet."""
    tried = Run.objects.filter(owner=user, lab__isnull=False).values("lab_id")
    return Lab.objects.filter(is_active=True).exclude(id__in=tried).order_by("order", "slug").first()
