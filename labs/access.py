"""Object-level access to what the labs app stores per learner: runs, run groups and dataset
uploads. ONE rule (the owner, or staff), in one place, used by every view, form, download, the
websocket consumer and the inference app.

Lookups answer 404 rather than 403: a stranger learns nothing, not even that the object exists.
"""

from django.db.models import QuerySet
from django.http import Http404

from labs.models import DatasetUpload, Run, RunGroup


def visible_to(user, queryset: QuerySet) -> QuerySet:
    """`queryset` narrowed to the rows `user` may see: staff every row, a learner their own
    (`owner`), an anonymous visitor none."""
    if not user.is_authenticated:
        return queryset.none()
    return queryset if user.is_staff else queryset.filter(owner=user)


def _get_for_user(user, queryset: QuerySet, pk, what: str):
    try:
        return visible_to(user, queryset).get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404(f"No such {what}.") from None


def get_run_for_user(user, pk) -> Run:
    """The run if `user` may see it (its owner, or staff); otherwise Http404."""
    # The run's own page shows its predictions and token view (left out of other queries, see
    # Run.HEAVY_FIELDS); the upload's examples (up to megabytes) are read by the worker, never by a page.
    runs = Run.objects.defer(None).select_related("lab", "group", "upload").defer("upload__examples")
    return _get_for_user(user, runs, pk, "run")


def get_group_for_user(user, pk) -> RunGroup:
    return _get_for_user(user, RunGroup.objects.select_related("lab"), pk, "run group")


def uploads_for_user(user) -> QuerySet:
    """The dataset uploads `user` may train on: their own; staff any."""
    return visible_to(user, DatasetUpload.objects.all())


def get_upload_for_user(user, pk) -> DatasetUpload:
    return _get_for_user(user, DatasetUpload.objects.all(), pk, "dataset upload")
