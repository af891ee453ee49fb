"""Object-level access to what the labs app stores per learner: runs, run groups and dataset
uploads. ONE rule (the owner, or an account given `labs.view_all_runs`), in one place, used by
every view, form, download, the websocket consumer and the inference app.

Being staff is not enough: a question curator is staff (to use the admin) and sees no learner's
runs, and is held to every limit. Powers over other learners' work are permissions an operator
gives (a superuser has them all):
- labs.view_all_runs: see, cancel, export and serve every learner's runs and uploads;
- labs.launch_without_limits: launch past the per-learner limits (quota, budgets, exports).

Lookups answer 404 rather than 403: a stranger learns nothing, not even that the object exists.
"""

from django.db.models import QuerySet
from django.http import Http404

from labs.models import DatasetUpload, Run, RunGroup

VIEW_ALL_RUNS = "labs.view_all_runs"
WITHOUT_LIMITS = "labs.launch_without_limits"


def sees_every_run(user) -> bool:
    """May `user` see (cancel, export, serve) other learners' runs?"""
    return bool(user.is_authenticated and user.has_perm(VIEW_ALL_RUNS))


def is_unlimited(user) -> bool:
    """Is `user` exempt from the per-learner limits on runs and exports?"""
    return bool(user.is_authenticated and user.has_perm(WITHOUT_LIMITS))


def visible_to(user, queryset: QuerySet) -> QuerySet:
    """`queryset` narrowed to the rows `user` may see: every row with labs.view_all_runs, a
    learner's (or curator's) own (`owner`), an anonymous visitor none."""
    if not user.is_authenticated:
        return queryset.none()
    return queryset if sees_every_run(user) else queryset.filter(owner=user)


def _get_for_user(user, queryset: QuerySet, pk, what: str):
    try:
        return visible_to(user, queryset).get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404(f"No such {what}.") from None


def get_run_for_user(user, pk) -> Run:
    """The run if `user` may see it (its owner, or labs.view_all_runs); otherwise Http404."""
    # The run's own page shows its predictions and token view (left out of other queries, see
    # Run.HEAVY_FIELDS); the upload's examples (up to megabytes) are read by the worker, never by a page.
    runs = Run.objects.defer(None).select_related("lab", "group", "upload").defer("upload__examples")
    return _get_for_user(user, runs, pk, "run")


def get_group_for_user(user, pk) -> RunGroup:
    return _get_for_user(user, RunGroup.objects.select_related("lab"), pk, "run group")


def uploads_for_user(user) -> QuerySet:
    """The dataset uploads `user` may train on: their own; with labs.view_all_runs, any."""
    return visible_to(user, DatasetUpload.objects.all())


def get_upload_for_user(user, pk) -> DatasetUpload:
    return _get_for_user(user, DatasetUpload.objects.all(), pk, "dataset upload")
