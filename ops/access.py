from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from ops.models import PingJob


def get_ping_for_user(user, pk) -> PingJob:
    """Diagnostics jobs are for operators: staff only, for views and sockets alike."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied
    return get_object_or_404(PingJob, pk=pk)
