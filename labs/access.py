"""Object-level access to runs and run groups: ONE place, used by every view, the download,
the websocket consumer and the inference app."""

from django.http import Http404

from labs.models import Run, RunGroup


def get_run_for_user(user, pk) -> Run:
    """The run if `user` may see it (its owner, or staff); otherwise Http404.

    404 rather than 403: a stranger learns nothing, not even that the run exists.
    """
    try:
        # The upload's examples (up to megabytes) are read by the worker, never by a page.
        return Run.objects.visible_to(user).select_related("lab", "group", "upload").defer("upload__examples").get(pk=pk)
    except (Run.DoesNotExist, ValueError, TypeError):
        raise Http404("No such run.") from None


def get_group_for_user(user, pk) -> RunGroup:
    if not user.is_authenticated:
        raise Http404("No such run group.")
    groups = RunGroup.objects.all() if user.is_staff else RunGroup.objects.filter(owner=user)
    try:
        return groups.select_related("lab").get(pk=pk)
    except (RunGroup.DoesNotExist, ValueError, TypeError):
        raise Http404("No such run group.") from None
