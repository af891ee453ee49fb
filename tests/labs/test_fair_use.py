"""Fair GPU use: a run's cost is estimated before it is queued and refused over the per-run
budget; a learner's daily GPU time is capped; free gpu slots go to the learner with the fewest
runs on the workers and the least recent GPU time, not first come first served. Staff are exempt."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from labs.models import DatasetUpload, Run
from labs.scheduling import gpu_seconds_used, run_cost, runs_dispatch
from labs.services import build_config
from tests.labs.conftest import SERVER_ENV, TINY, logged_in_http, make_run, purge_queues
from tests.labs.test_launch import LAUNCH, form_data

# The attack from issue 11: epochs 100, batch 1, max_length 8192, validate every step, r 256, on a
# 5,000-row upload (~325,000 steps).
HOG = dict(epochs=100, batch_size=1, max_length=8192, eval_every=1, lora_r=256, lora_alpha=512, train_limit=None)


def big_upload(rows=5000) -> SimpleUploadedFile:
    labels = ("positive", "negative", "neutral")
    body = "text,label\n" + "".join(f"review {i}: it was {labels[i % 3]} overall,{labels[i % 3]}\n" for i in range(rows))
    return SimpleUploadedFile("big.csv", body.encode())


def test_the_estimate_counts_the_steps_exactly_as_training_does():
    # TINY: 16 examples, batch 8, 1 epoch = 2 steps, validated at the end of the epoch.
    cost = run_cost(build_config(TINY), None)
    assert (cost.steps, cost.evals) == (2, 1)
    assert 20 < cost.example_tokens <= 128 and cost.train_tokens == pytest.approx(16 * cost.example_tokens, abs=16)
    longer = run_cost(build_config({**TINY, "epochs": 3, "grad_accum": 2, "eval_every": 1}), None)
    assert (longer.steps, longer.evals) == (3, 3)  # 2 batches per step: 1 step per epoch
    assert longer.tokens > cost.tokens


def test_a_hog_run_is_refused_before_anything_is_saved_with_what_to_lower(owner_client, owner, labs):
    response = owner_client.post(LAUNCH, {**form_data(**HOG), "upload": big_upload()})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "optimizer steps; the limit is 2,000" in errors["epochs"][0] and "Lower the epochs (100)" in errors["epochs"][0]
    assert "would validate" in errors["eval_every"][0] and "Raise 'validate every' (now 1)" in errors["eval_every"][0]
    assert "the max length (8192)" in errors["max_length"][0]
    page = response.content.decode()
    assert "over the per-run compute budget" in page and 'id="error-epochs"' in page
    assert not Run.objects.exists() and not DatasetUpload.objects.exists()  # the upload is not kept either


def test_the_budget_comes_from_settings_and_staff_are_exempt(owner_client, labs, settings, client, staff_user):
    settings.RUN_MAX_TOKENS = 1000  # below even the tiny run
    response = owner_client.post(LAUNCH, form_data())
    assert response.status_code == 400 and "the limit per run is 1,000" in response.context["form"].errors["max_length"][0]
    client.force_login(staff_user)
    assert client.post(LAUNCH, form_data()).status_code == 302


def test_each_run_of_a_group_is_checked_and_named(owner_client, labs, settings):
    settings.RUN_MAX_STEPS = 3
    response = owner_client.post("/labs/rank-sweep/launch/", form_data(epochs=2))  # 4 steps each
    assert response.status_code == 400
    assert response.context["form"].errors["epochs"][0].startswith("r = 4: This run needs 4 optimizer steps")
    assert not Run.objects.exists()


def test_the_daily_gpu_quota_refuses_a_launch_once_used_up_but_not_staff(owner_client, owner, labs, settings,
                                                                           client, staff_user):
    settings.GPU_SECONDS_PER_DAY = 600
    settings.RUN_TOKENS_PER_S, settings.RUN_LOAD_S = 10_000, 0  # the launch's own estimate (~6 s) fits: time used is tested
    now = timezone.now()
    make_run(owner, status=Run.Status.SUCCEEDED, started_at=now - timedelta(hours=30), finished_at=now - timedelta(hours=29))
    make_run(owner, status=Run.Status.SUCCEEDED, started_at=now - timedelta(minutes=20), finished_at=now - timedelta(minutes=12))
    assert gpu_seconds_used([owner.pk], now=now)[owner.pk] == pytest.approx(480)  # the 30-hour-old run is outside
    assert owner_client.post(LAUNCH, form_data()).status_code == 302

    make_run(owner, status=Run.Status.FAILED, started_at=now - timedelta(minutes=5), finished_at=now - timedelta(minutes=2))
    response = owner_client.post(LAUNCH, form_data())
    assert response.status_code == 400
    assert "You have used 11 of your 10 minutes of GPU time" in response.content.decode()
    assert Run.objects.filter(owner=owner).count() == 4

    client.force_login(staff_user)
    make_run(staff_user, status=Run.Status.SUCCEEDED, started_at=now - timedelta(hours=2), finished_at=now)
    assert client.post(LAUNCH, form_data()).status_code == 302


def test_free_slots_go_to_the_learner_with_fewest_runs_on_workers_then_least_gpu_time(owner, other_user, staff_user,
                                                                                       settings):
    settings.GPU_WORKER_SLOTS = 2
    now = timezone.now()
    # The owner queued a 3-run group first; the others queued one run each, later.
    hog = [make_run(owner) for _ in range(3)]
    late = make_run(other_user)
    staff_run = make_run(staff_user)
    # The staff member trained for an hour today; the other two learners not at all.
    make_run(staff_user, status=Run.Status.SUCCEEDED, started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1))

    assert runs_dispatch() == [hog[0].pk, late.pk]  # one each first, oldest first among equals
    assert runs_dispatch() == []  # both slots are taken (sent, not started yet)
    Run.objects.filter(pk=hog[0].pk).update(status=Run.Status.SUCCEEDED, started_at=now - timedelta(minutes=1),
                                            finished_at=now)
    # The owner has a run's worth of GPU time now; the staff member more. Nobody else waits.
    assert runs_dispatch() == [hog[1].pk]
    Run.objects.filter(pk=late.pk).update(status=Run.Status.SUCCEEDED, started_at=now - timedelta(seconds=30),
                                          finished_at=now)
    # Fewer runs on the workers beats less GPU time: the owner holds a slot (hog[1]), the staff member none.
    assert runs_dispatch() == [staff_run.pk]


def test_a_run_waiting_for_its_parent_is_not_sent_until_the_parent_succeeds(owner, settings):
    settings.GPU_WORKER_SLOTS = 3
    parent = make_run(owner, status=Run.Status.RUNNING)
    child = make_run(owner, continue_from=parent)
    assert runs_dispatch() == []
    Run.objects.filter(pk=parent.pk).update(status=Run.Status.SUCCEEDED)
    assert runs_dispatch() == [child.pk]


@pytest.mark.django_db(transaction=True)
def test_a_learners_group_does_not_delay_another_learners_first_run_on_a_real_worker(tmp_path, client, owner,
                                                                                     other_user, labs):
    """One gpu worker: the owner launches the 3-run rank sweep, then the other learner one run.
    The other learner's run starts second, not fourth."""
    from tests.labs.test_live_runs import wait_for
    from tests.servers import celery_worker, daphne_server

    purge_queues()
    with celery_worker(tmp_path, queues="gpu", **SERVER_ENV), daphne_server(tmp_path, **SERVER_ENV) as address:
        with logged_in_http(client, owner, address) as http:
            data = {**form_data(), "csrfmiddlewaretoken": http.cookies["csrftoken"]}
            assert http.post("/labs/rank-sweep/launch/", data=data).status_code == 302
        with logged_in_http(client, other_user, address) as http:
            data = {**form_data(), "csrfmiddlewaretoken": http.cookies["csrftoken"]}
            assert http.post(LAUNCH, data=data).status_code == 302
        wait_for(lambda: not Run.objects.exclude(status=Run.Status.SUCCEEDED).exists(), timeout=300, what="all runs")
    order = [run.owner_id for run in Run.objects.order_by("started_at")]
    assert order == [owner.pk, other_user.pk, owner.pk, owner.pk]
