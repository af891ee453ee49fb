"""The daily GPU quota reserves what a launch will take: its own estimated seconds and what the
learner's queued and running runs are still estimated to take, not only the time already used.
Before, a learner with a minute left could queue any number of hour-long runs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from labs.models import Run
from labs.scheduling import estimated_seconds, gpu_seconds_reserved, run_cost
from labs.services import build_config
from tests.labs.conftest import TINY, make_run
from tests.labs.test_launch import LAUNCH, form_data


@pytest.fixture
def tiny_tokens(labs):
    return run_cost(build_config(TINY), None).tokens


@pytest.fixture
def priced(settings, tiny_tokens):
    """The tiny launch priced at 100 s of gpu time (no finished runs to calibrate from)."""
    settings.RUN_LOAD_S = 0
    settings.RUN_TOKENS_PER_S = tiny_tokens / 100
    settings.GPU_SECONDS_PER_DAY = 600
    settings.MAX_ACTIVE_RUNS_PER_USER = 5  # the limit on active runs is not what is tested


def test_a_launch_that_does_not_fit_what_is_left_is_refused_before_its_time_is_used(owner_client, owner, priced):
    now = timezone.now()
    make_run(owner, status=Run.Status.SUCCEEDED, started_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=2))
    response = owner_client.post(LAUNCH, form_data())  # 480 s used, 100 s needed: fits
    assert response.status_code == 302
    response = owner_client.post(LAUNCH, form_data())  # + 100 s queued: 680 > 600
    assert response.status_code == 400
    page = response.content.decode()
    assert "This launch needs about 1.7 min of GPU time, and 0.3 min of your 10 minutes per 24 hours are left" in page
    assert "8.0 min used and about 1.7 min for your queued and running runs" in page
    assert Run.objects.filter(owner=owner).count() == 2


def test_queued_and_running_runs_reserve_what_they_still_need(owner_client, owner, priced):
    now = timezone.now()
    make_run(owner, status=Run.Status.QUEUED, estimated_s=300)
    running = make_run(owner, status=Run.Status.RUNNING, estimated_s=300, started_at=now - timedelta(seconds=120))
    # 300 queued + (300 - 120) still to run; the 120 s it ran count as used.
    assert gpu_seconds_reserved(owner.pk) == pytest.approx(480, abs=2)
    response = owner_client.post(LAUNCH, form_data())  # 120 used + 480 reserved + 100 > 600
    assert response.status_code == 400 and "for your queued and running runs" in response.content.decode()
    Run.objects.filter(pk=running.pk).update(status=Run.Status.CANCELLED, finished_at=now)  # frees its 180 s
    assert owner_client.post(LAUNCH, form_data()).status_code == 302


def test_the_launch_stores_its_estimate(owner_client, owner, priced, tiny_tokens):
    assert owner_client.post(LAUNCH, form_data()).status_code == 302
    run = Run.objects.get(owner=owner)
    assert run.estimated_tokens == tiny_tokens and run.estimated_s == pytest.approx(100)


def test_finished_runs_price_a_token_once_there_are_a_few(owner, settings):
    settings.RUN_LOAD_S, settings.RUN_TOKENS_PER_S = 20, 500
    assert estimated_seconds(5000) == pytest.approx(30)  # no history: the settings
    now = timezone.now()
    for seconds in (8, 10, 12):  # 30 s for 3,000 tokens: 0.01 s a token on these workers
        make_run(owner, status=Run.Status.SUCCEEDED, attempts=1, estimated_tokens=1000,
                 started_at=now - timedelta(seconds=seconds), finished_at=now)
    make_run(owner, status=Run.Status.SUCCEEDED, attempts=2, estimated_tokens=1000,  # resumed: not a clean measurement
             started_at=now - timedelta(hours=1), finished_at=now)
    assert estimated_seconds(5000) == pytest.approx(50)


def test_accounts_with_the_permission_are_exempt_staff_alone_are_not(client, owner, priced, django_user_model):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("staffer", password="x", is_staff=True)
    make_run(staff, status=Run.Status.QUEUED, estimated_s=600)
    client.force_login(staff)
    assert client.post(LAUNCH, form_data()).status_code == 400  # staff are held to the quota
    staff.user_permissions.add(Permission.objects.get(codename="launch_without_limits"))
    staff = django_user_model.objects.get(pk=staff.pk)  # a fresh permission cache
    client.force_login(staff)
    assert client.post(LAUNCH, form_data()).status_code == 302
    assert Run.objects.filter(owner=staff).order_by("-pk").first().estimated_s == 0  # exempt: nothing reserved
