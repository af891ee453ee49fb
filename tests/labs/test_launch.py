"""The launch form: prefilled from the lab, validated server-side, quota, uploads, groups, clone."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labs.forms import FORM_CONFIG_FIELDS, posted_form
from labs.models import DatasetUpload, Run, RunGroup
from tests.labs.conftest import TINY, make_run

LAUNCH = "/labs/sentiment-lora/launch/"


def form_data(**overrides):
    """The launch form as a browser posts it: TINY over the defaults, these LoRA settings, then
    `overrides` (None unticks a checkbox or empties a field)."""
    return posted_form(**{**TINY, "lora_r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
                          "lora_top_blocks": 8, **overrides})


def test_the_launch_form_needs_a_login(client, labs):
    response = client.get(LAUNCH)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.post(LAUNCH, form_data()).status_code == 302
    assert not Run.objects.exists()


def test_the_form_starts_from_the_lab_preset(owner_client, labs):
    response = owner_client.get(LAUNCH)
    form = response.context["form"]
    assert form.initial["lora_r"] == 16 and form.initial["train_limit"] is None and form.initial["mask_prompt"] is True
    assert form.initial["base_model"] == "smollm2-135m-instruct"
    assert b'value="smollm2-135m-instruct" selected' in response.content


def test_every_lab_form_starts_with_a_value_in_every_required_setting(owner_client, labs):
    """A setting added after a lab's preset (or a cloned run) was saved starts at its default: an
    empty required field made the unchanged form fail to launch (label_noise did)."""
    required = [f.name for f in FORM_CONFIG_FIELDS if not f.optional and f.kind not in ("bool", "tuple")]
    for lab in labs:
        lab.preset.pop("label_noise", None)
        lab.save()
        initial = owner_client.get(f"/labs/{lab.slug}/launch/").context["form"].initial
        assert [name for name in required if initial.get(name) is None] == [], lab.slug
        assert initial["label_noise"] == 0.0


def test_the_test_model_is_offered_only_when_the_setting_allows_it(owner_client, labs, settings):
    assert b'value="tiny-test"' in owner_client.get(LAUNCH).content
    settings.LABS_ALLOW_TEST_MODEL = False
    content = owner_client.get(LAUNCH).content
    assert b'value="tiny-test"' not in content and b'value="smollm2-135m-instruct"' in content
    response = owner_client.post(LAUNCH, form_data())
    assert response.status_code == 400 and "base_model" in response.context["form"].errors


def test_a_valid_launch_creates_a_queued_run_with_its_config_snapshot(owner_client, owner, labs,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(LAUNCH, form_data(lora_r=8))
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/labs/runs/{run.pk}/"
    assert run.owner == owner and run.lab.slug == "sentiment-lora" and run.status == "queued"
    assert run.config["lora_r"] == 8 and run.config["target_modules"] == ["q_proj", "v_proj"]
    assert run.config["zero_shot"] is True and run.config["train_limit"] == 16
    # The slot was free, so the dispatcher sent it at once: the task id is known before the
    # worker starts, so a queued run can be revoked.
    assert run.celery_task_id and run.dispatched_at
    assert [(e.seq, e.type) for e in run.events.all()] == [(1, "status")]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lora_r", 0, "must be a whole number from 1 to 256"),
    ("lora_r", 1000, "must be a whole number from 1 to 256"),
    ("lora_alpha", 0, "must be a whole number from 1 to 1024"),
    ("lora_dropout", 1.0, "must be a number in [0, 1)"),
    ("learning_rate", 0, "must be a number in (0, 0.1]"),
    ("learning_rate", 0.5, "must be a number in (0, 0.1]"),
    ("epochs", 0, "must be a whole number from 1 to 100"),
    ("batch_size", 0, "must be a whole number from 1 to 512"),
    ("grad_accum", 300, "must be a whole number from 1 to 256"),
    ("warmup_ratio", 1.5, "must be a number in [0, 1)"),
    ("max_length", 8, "must be a whole number from 32 to 8192"),
    ("seed", -1, "must be a whole number from 0 to 4294967295"),
    ("train_limit", 0, "must be a whole number from 1 to 10000000"),
    ("eval_every", -1, "must be a whole number from 0 to 1000000"),
])
def test_each_out_of_range_value_is_refused_with_its_message(owner_client, labs, field, value, message):
    response = owner_client.post(LAUNCH, form_data(**{field: value}))
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field]), response.context["form"].errors
    assert f'id="error-{field}"'.encode() in response.content
    assert not Run.objects.exists()


def test_every_bad_field_is_reported_at_once_and_unparseable_values_too(owner_client, labs):
    response = owner_client.post(LAUNCH, form_data(lora_r=0, epochs=0, learning_rate="fast", target_modules=[]))
    errors = response.context["form"].errors
    assert {"lora_r", "epochs", "learning_rate", "target_modules"} <= set(errors)
    assert "Enter a number." in errors["learning_rate"]


def test_the_active_run_limit_refuses_a_third_launch_but_not_staff(owner_client, owner, labs, settings, client, staff_user):
    settings.MAX_ACTIVE_RUNS_PER_USER = 2
    make_run(owner, status=Run.Status.RUNNING)
    make_run(owner)
    make_run(owner, status=Run.Status.SUCCEEDED)  # finished runs do not count
    response = owner_client.post(LAUNCH, form_data())
    assert response.status_code == 400
    assert "You already have 2 active runs" in response.content.decode()
    assert Run.objects.filter(owner=owner).count() == 3

    client.force_login(staff_user)
    for _ in range(3):
        make_run(staff_user, status=Run.Status.RUNNING)
    assert client.post(LAUNCH, form_data()).status_code == 302


def test_a_group_of_runs_counts_once_toward_the_limit(owner_client, owner, labs, settings):
    settings.MAX_ACTIVE_RUNS_PER_USER = 2
    response = owner_client.post("/labs/rank-sweep/launch/", form_data())
    group = RunGroup.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/labs/groups/{group.pk}/"
    assert owner_client.post(LAUNCH, form_data()).status_code == 302
    assert owner_client.post(LAUNCH, form_data()).status_code == 400


def test_a_sweep_launches_one_run_per_value_with_the_swept_field_fixed(owner_client, labs):
    # lora_r is set by each run: a value posted for it is ignored (the field is disabled).
    owner_client.post("/labs/rank-sweep/launch/", form_data(lora_r=2, epochs=2))
    runs = Run.objects.order_by("pk")
    assert [(r.label, r.config["lora_r"], r.config["lora_alpha"], r.config["epochs"]) for r in runs] == [
        ("r = 4", 4, 8, 2), ("r = 16", 16, 32, 2), ("r = 64", 64, 128, 2)]
    assert all(r.group_id == runs[0].group_id and r.status == "queued" for r in runs)


def test_the_mixed_label_run_that_continues_waits_for_its_parent(owner_client, labs):
    owner_client.post("/labs/mixed-label/launch/", form_data())
    three, retrain, continued = Run.objects.order_by("pk")
    assert three.config["dataset"] == "reviews" and retrain.config["dataset"] == "reviews-mixed"
    assert continued.continue_from == three and continued.dispatched_at is None  # not sent to a worker yet
    assert "Waiting for run" in continued.events.get().payload["message"]


def test_the_fewshot_lab_launches_a_prompting_run_and_two_fine_tunes(owner_client, labs):
    owner_client.post("/labs/fewshot-vs-finetune/launch/", form_data())
    fewshot, small, large = Run.objects.order_by("pk")
    assert (fewshot.mode, fewshot.shots, fewshot.config["train_limit"]) == ("fewshot", 12, 12)
    assert (small.mode, small.config["train_limit"], small.config["epochs"]) == ("finetune", 12, 5)
    assert large.config["train_limit"] == 240


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", b'{"text": "fine", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n{"text": broken\n',
     "bad.jsonl, line 3: invalid JSON"),
    ("bad.jsonl", b'{"text": "fine", "label": "positive"}\n{"text": "odd", "label": "sarcastic"}\n',
     "bad.jsonl, line 2: unknown label 'sarcastic'"),
    ("bad.csv", b"review,sentiment\nfine,positive\n", "bad.csv, line 1: the header must name the columns text and label"),
    ("few.csv", b"text,label\nfine,positive\nbad,negative\n", "only 2 example(s)"),
    ("data.txt", b"hello", "unsupported file type"),
    ("huge.jsonl", b"x" * 2_000_001, "huge.jsonl: the file is 2,000,001 bytes; the limit is 2,000,000 bytes"),
])
def test_an_upload_error_is_shown_on_the_form_naming_the_line(owner_client, labs, name, content, message):
    response = owner_client.post(LAUNCH, {**form_data(), "upload": SimpleUploadedFile(name, content)})
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors["upload"]), response.context["form"].errors
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert not DatasetUpload.objects.exists() and not Run.objects.exists()


def test_a_valid_upload_becomes_the_runs_dataset_and_a_choice_next_time(owner_client, owner, labs):
    rows = "text,label\n" + "".join(f"review number {i} is {label},{label}\n" for i in range(6)
                                    for label in ("positive", "negative"))
    response = owner_client.post(LAUNCH, {**form_data(), "upload": SimpleUploadedFile("mine.csv", rows.encode())})
    assert response.status_code == 302
    upload = DatasetUpload.objects.get()
    run = Run.objects.get()
    assert run.upload == upload and run.config["dataset"] == f"upload:{upload.pk}" and upload.labels == ["positive", "negative"]
    assert f'value="upload:{upload.pk}"'.encode() in owner_client.get(LAUNCH).content


def test_clone_and_edit_starts_the_form_from_the_old_runs_config(owner_client, owner, labs):
    from labs.models import Lab

    source = make_run(owner, lab=Lab.objects.get(slug="rank-sweep"), status=Run.Status.SUCCEEDED, lora_r=4, lora_alpha=8)
    response = owner_client.get(f"/labs/runs/{source.pk}/clone/")
    assert response["Location"] == f"/labs/rank-sweep/launch/?clone={source.pk}"
    form = owner_client.get(response["Location"]).context["form"]
    assert form.initial["lora_r"] == 4 and form.initial["base_model"] == "tiny-test"
    assert not form.fields["lora_r"].disabled  # a clone is one run: everything is editable
    response = owner_client.post(response["Location"], form_data(lora_r=32))
    clone = Run.objects.latest("pk")
    assert clone.cloned_from == source and clone.config["lora_r"] == 32 and clone.group is None


def test_the_lab_page_links_its_questions_both_ways(client, labs):
    from quiz.models import Question

    Question.objects.create(slug="a-linked-question", title="Why mask the prompt?", kind="open", difficulty="beginner",
                            lab="sentiment-lora", status="published", hint="h", prompt="p", answer="a")
    Question.objects.create(slug="a-draft", title="Draft question", kind="open", difficulty="beginner",
                            lab="sentiment-lora", status="draft", hint="h", prompt="p", answer="a")
    content = client.get("/labs/sentiment-lora/").content.decode()
    assert "Why mask the prompt?" in content and "Draft question" not in content
    assert "What is peft" in content  # named by the lab file (title from the bank once it is loaded)
    assert "Log in to launch this lab" in content
