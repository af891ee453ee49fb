"""Who may see what: owner and staff see a run, everyone else gets a 404 from every endpoint."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from labs.access import get_group_for_user, get_run_for_user
from labs.models import Run, RunGroup
from tests.labs.conftest import make_run

RUN_PAGES = ("", "results/", "download/", "clone/")


@pytest.fixture
def owned(owner, labs):
    group = RunGroup.objects.create(owner=owner, title="rank sweep", sweep="lora_r")
    first = make_run(owner, group=group, label="r = 4", lora_r=4, status=Run.Status.SUCCEEDED,
                     metrics={"test": {"accuracy": 0.5, "macro_f1": 0.4}, "train": {"steps": 2}})
    second = make_run(owner, group=group, label="r = 16", lora_r=16, status=Run.Status.SUCCEEDED,
                      metrics={"test": {"accuracy": 0.75, "macro_f1": 0.7}, "train": {"steps": 2}})
    return group, first, second


def test_the_access_helpers_refuse_strangers_and_anonymous_users(owned, other_user, staff_user, owner):
    group, run, _ = owned
    for user in (other_user, AnonymousUser()):
        with pytest.raises(Http404):
            get_run_for_user(user, run.pk)
        with pytest.raises(Http404):
            get_group_for_user(user, group.pk)
    with pytest.raises(Http404):
        get_run_for_user(owner, "not-a-number")
    assert get_run_for_user(owner, run.pk) == run and get_run_for_user(staff_user, run.pk) == run
    assert get_group_for_user(staff_user, group.pk) == group


def test_another_users_run_pages_are_404(owned, client, other_user):
    group, run, second = owned
    client.force_login(other_user)
    for path in RUN_PAGES:
        assert client.get(f"/labs/runs/{run.pk}/{path}").status_code == 404, path
    assert client.post(f"/labs/runs/{run.pk}/cancel/").status_code == 404
    assert client.get(f"/labs/groups/{group.pk}/").status_code == 404
    assert client.get(f"/labs/compare/?ids={run.pk},{second.pk}").status_code == 404
    assert client.get(f"/labs/sentiment-lora/launch/?clone={run.pk}").status_code == 404
    assert f"Run {run.pk}<" not in client.get("/labs/runs/").content.decode()


def test_anonymous_visitors_are_sent_to_log_in(owned, client):
    _, run, _ = owned
    for path in RUN_PAGES:
        assert client.get(f"/labs/runs/{run.pk}/{path}")["Location"].startswith("/accounts/login/")


def test_staff_see_every_run(owned, client, staff_user):
    group, run, second = owned
    client.force_login(staff_user)
    assert client.get(f"/labs/runs/{run.pk}/").status_code == 200
    assert client.get(f"/labs/groups/{group.pk}/").status_code == 200
    assert client.get(f"/labs/compare/?ids={run.pk},{second.pk}").status_code == 200


def test_compare_shows_only_the_differences_and_the_metric_against_the_swept_value(owned, owner_client):
    group, first, second = owned
    response = owner_client.get(f"/labs/compare/?ids={first.pk},{second.pk}")
    diff = response.context["config_diff"]
    assert diff == [{"field": "LoRA r", "values": ["4", "16"]}]
    assert [p["x"] for p in response.context["sweep_points"]] == [4, 16]
    assert b'id="sweep-table"' in response.content
    # The same view from the runs list's checkboxes, without JavaScript.
    assert owner_client.get(f"/labs/compare/?id={first.pk}&id={second.pk}").context["config_diff"] == diff
    picker = owner_client.get(f"/labs/compare/?ids={first.pk}")  # one run: a picker, not a dead end
    assert picker.status_code == 200 and first.pk in picker.context["ticked"]
    assert owner_client.get("/labs/compare/?ids=1,x").status_code == 400
    group_page = owner_client.get(f"/labs/groups/{group.pk}/")
    assert group_page.context["sweep_points"] and b"Metric against LoRA r" in group_page.content
