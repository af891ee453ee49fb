from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from ops.access import get_ping_for_user
from ops.dashboard import learner_home
from ops.errors import error_response, is_api_path
from ops.health import cached_health_report
from ops.services import ping_launch


def home(request):
    if request.user.is_authenticated:
        return render(request, "ops/home.html", learner_home(user=request.user))
    return render(request, "ops/home.html")


@never_cache
def healthz(request):
    """Public: the status only (ok/down, 200/503). Staff also see each check's detail, which
    names hosts and workers: nothing an anonymous visitor needs to know."""
    healthy, checks = cached_health_report()
    body = {"status": "ok" if healthy else "down"}
    if request.user.is_authenticated and request.user.is_staff:
        body["checks"] = checks
    return JsonResponse(body, status=200 if healthy else 503)


@staff_member_required
def diagnostics(request):
    return render(request, "ops/diagnostics.html")


@staff_member_required
@require_POST
def ping_start(request):
    job = ping_launch(user=request.user)
    return redirect("ping-detail", pk=job.pk)


@staff_member_required
def ping_detail(request, pk: int):
    job = get_ping_for_user(request.user, pk)
    queued_at = job.created_at.timestamp()
    # Each step's time since the job was queued: the web -> Redis -> worker -> database part of the path.
    steps = [dict(event, after_ms=round((event.get("t", queued_at) - queued_at) * 1000)) for event in job.events]
    return render(request, "ops/ping.html", {"job": job, "steps": steps, "queued_at": queued_at})


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: the API paths answer JSON, pages Django's usual explanation."""
    if is_api_path(request.path_info):
        return error_response(403, f"CSRF verification failed ({reason}). The API authenticates with "
                                   "'Authorization: Bearer <token>', not with a session cookie.", code="csrf_failed")
    return django_csrf_failure(request, reason=reason)
