"""A curator edits questions in the admin and sees no learner data; powers over other learners'
runs are the permission labs.view_all_runs, never implied by is_staff (before, every staff
account, curators included, could read, cancel and export every learner's run)."""

import pytest
from django.contrib.auth.models import Group, Permission

from accounts.roles import CURATORS, make_curator
from labs.models import Run
from tests.conftest import PASSWORD
from tests.labs.conftest import make_run

LEARNER_DATA_ADMIN = ["/admin/labs/run/", "/admin/labs/datasetupload/", "/admin/labs/runevent/", "/admin/quiz/attempt/",
                      "/admin/quiz/practicecard/", "/admin/quiz/judgecall/", "/admin/inference/apitoken/",
                      "/admin/inference/baselineresult/", "/admin/auth/user/"]


@pytest.fixture
def curator(django_user_model):
    user = django_user_model.objects.create_user("curie", password=PASSWORD)
    make_curator(user)
    return django_user_model.objects.get(pk=user.pk)


@pytest.fixture
def learners_run(owner):
    return make_run(owner, status=Run.Status.SUCCEEDED, metrics={"test": {"accuracy": 0.5, "macro_f1": 0.4}})


def test_the_curators_group_holds_only_the_question_banks_permissions(db):
    granted = {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name=CURATORS).permissions.all()}
    assert "quiz.change_question" in granted and "quiz.add_quiz" in granted and "quiz.view_questionrevision" in granted
    assert {name.split(".")[0] for name in granted} == {"quiz"}
    assert not granted & {"quiz.view_attempt", "quiz.view_practicecard", "quiz.view_judgecall", "quiz.view_interview",
                          "quiz.change_questionrevision"}


def test_a_curator_edits_questions_in_the_admin_and_opens_no_learner_data(client, curator, db):
    client.force_login(curator)
    assert client.get("/admin/quiz/question/").status_code == 200
    assert client.get("/admin/quiz/question/add/").status_code == 200
    assert client.get("/admin/quiz/quiz/").status_code == 200
    for url in LEARNER_DATA_ADMIN:
        assert client.get(url).status_code == 403, url
    index = client.get("/admin/").content.decode()
    assert "Questions" in index and "Runs" not in index and "Attempts" not in index


def test_a_curator_cannot_see_cancel_or_export_a_learners_run(client, curator, learners_run, labs):
    client.force_login(curator)
    for suffix in ("", "results/", "download/", "gguf/"):
        assert client.get(f"/labs/runs/{learners_run.pk}/{suffix}").status_code == 404, suffix
    assert client.post(f"/labs/runs/{learners_run.pk}/cancel/").status_code == 404
    assert client.post(f"/labs/runs/{learners_run.pk}/gguf/", {"quant": "q8_0"}).status_code == 404
    listing = client.get("/labs/runs/").content.decode()
    assert "Your runs" in listing and f"/labs/runs/{learners_run.pk}/" not in listing


def test_the_view_all_runs_permission_gives_an_operator_every_run(client, django_user_model, learners_run, owner, labs):
    operator = django_user_model.objects.create_user("oper", password=PASSWORD)  # not even staff: the permission decides
    operator.user_permissions.add(Permission.objects.get(codename="view_all_runs"))
    client.force_login(operator)
    assert client.get(f"/labs/runs/{learners_run.pk}/").status_code == 200
    listing = client.get("/labs/runs/").content.decode()
    assert "All runs" in listing and owner.username in listing


def test_a_curators_api_token_serves_no_learners_run(client, curator, learners_run):
    from inference.models import ApiToken

    _, raw = ApiToken.issue(user=curator, name="curie")
    response = client.post("/api/classify", data={"run": learners_run.pk, "texts": ["Nice."]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 404
