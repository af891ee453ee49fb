"""Uploads are kept once per content, counted against a per-learner budget, and listed without being read."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labs.models import DatasetUpload, Run
from labs.services import upload_create
from mlcore.data import Example
from tests.labs.conftest import make_run
from tests.labs.test_launch import LAUNCH, form_data

CSV = "text,label\n" + "".join(f"review number {i} is {label},{label}\n" for i in range(6) for label in ("positive", "negative"))
JSONL = "".join(f'{{"text": "review number {i} is {label}", "label": "{label}"}}\n'
                for i in range(6) for label in ("positive", "negative"))


def launch_with(client, name: str, content: str):
    return client.post(LAUNCH, {**form_data(), "upload": SimpleUploadedFile(name, content.encode())})


def examples(n: int, word: str) -> list[Example]:
    return [Example(f"{word} review {i} " + "x" * 200, "positive" if i % 2 else "negative") for i in range(n)]


def test_the_same_data_uploaded_again_is_stored_once(owner_client, owner, labs):
    assert launch_with(owner_client, "mine.csv", CSV).status_code == 302
    first = Run.objects.get()
    owner_client.post(f"/labs/runs/{first.pk}/cancel/")
    assert launch_with(owner_client, "again.jsonl", JSONL).status_code == 302  # the same rows, as JSONL
    upload = DatasetUpload.objects.get()
    assert {run.upload_id for run in Run.objects.all()} == {upload.pk}
    assert upload.n_examples == 12 and len(upload.sha256) == 64 and upload.size_bytes > 0


def test_another_learners_identical_upload_is_their_own(owner, other_user, db):
    mine = upload_create(user=owner, filename="a.csv", examples=examples(12, "same"))
    theirs = upload_create(user=other_user, filename="a.csv", examples=examples(12, "same"))
    assert mine.pk != theirs.pk and theirs.owner == other_user


def test_the_launch_form_lists_uploads_without_reading_their_examples(owner_client, owner, labs):
    for word in ("first", "second", "third"):
        upload_create(user=owner, filename=f"{word}.csv", examples=examples(12, word))
    with CaptureQueriesContext(connection) as queries:
        page = owner_client.get(LAUNCH).content.decode()
    assert "first.csv (12 examples)" in page and "third.csv (12 examples)" in page
    reads = [q["sql"] for q in queries if "labs_datasetupload" in q["sql"]]
    assert reads and not [sql for sql in reads if '"examples"' in sql], reads


def test_over_the_budget_unused_uploads_go_first_then_the_upload_is_refused(owner_client, owner, labs, settings):
    used = upload_create(user=owner, filename="used.csv", examples=examples(12, "used"))
    make_run(owner, upload=used)
    unused = upload_create(user=owner, filename="unused.csv", examples=examples(12, "unused"))
    settings.UPLOAD_BYTES_PER_USER = used.size_bytes + unused.size_bytes + 100
    fresh = upload_create(user=owner, filename="fresh.csv", examples=examples(12, "fresh"))
    assert set(DatasetUpload.objects.values_list("pk", flat=True)) == {used.pk, fresh.pk}  # the unused one made room
    make_run(owner, upload=fresh)
    response = launch_with(owner_client, "more.csv", CSV)
    assert response.status_code == 400
    assert "Over your upload budget" in " ".join(response.context["form"].errors["upload"])
    assert DatasetUpload.objects.count() == 2 and Run.objects.count() == 2
