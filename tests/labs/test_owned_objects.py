"""Runs, run groups and dataset uploads share one access rule (labs.access): the owner or staff
may see each; anyone else gets the same 404 as for an object that does not exist."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from labs.access import get_group_for_user, get_run_for_user, get_upload_for_user, uploads_for_user
from labs.forms import dataset_choices
from labs.models import DatasetUpload, Lab, RunGroup
from tests.labs.conftest import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def owned(owner):
    lab = Lab.objects.create(slug="x", title="X", goal="g", preset={})
    upload = DatasetUpload.objects.create(owner=owner, filename="mine.csv", examples=[{"text": "ok", "label": "positive"}],
                                          labels=["positive"])
    return {
        get_run_for_user: make_run(owner).pk,
        get_group_for_user: RunGroup.objects.create(owner=owner, lab=lab, title="X").pk,
        get_upload_for_user: upload.pk,
    }


@pytest.mark.parametrize("get", [get_run_for_user, get_group_for_user, get_upload_for_user], ids=lambda f: f.__name__)
def test_the_owner_and_staff_may_see_it_and_nobody_else(owned, get, owner, other_user, staff_user):
    pk = owned[get]
    assert get(owner, pk).pk == pk and get(staff_user, pk).pk == pk
    for stranger in (other_user, AnonymousUser()):
        with pytest.raises(Http404):
            get(stranger, pk)
    with pytest.raises(Http404):
        get(owner, "not-a-number")


def test_the_launch_form_offers_only_uploads_the_learner_may_use(owned, owner, other_user, staff_user):
    key = f"upload:{owned[get_upload_for_user]}"
    assert key in dict(dataset_choices(owner)) and key in dict(dataset_choices(staff_user))
    assert key not in dict(dataset_choices(other_user))
    assert not uploads_for_user(other_user).exists() and not uploads_for_user(AnonymousUser()).exists()
