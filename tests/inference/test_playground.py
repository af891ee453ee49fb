"""The playground without JavaScript (plain form posts) and with htmx (partial responses)."""

import base64
import csv
import io

from django.core.files.uploadedfile import SimpleUploadedFile

from labs.models import Run


def test_the_playground_needs_a_login(client, db):
    response = client.get("/playground/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_playground_offers_my_finished_runs_and_base_models_only(owner_client, make_run, owner, other_user):
    mine = make_run(owner)
    running = make_run(owner, status=Run.Status.RUNNING)
    theirs = make_run(other_user)
    response = owner_client.get(f"/playground/?run={mine.pk}")
    assert response.status_code == 200
    choices = dict(response.context["form"].fields["target"].widget.choices)
    assert f"run-{mine.pk}" in choices and "smollm2-135m-instruct" in choices
    assert f"run-{running.pk}" not in choices and f"run-{theirs.pk}" not in choices
    assert response.context["form"].initial["target"] == f"run-{mine.pk}"


def test_another_users_run_is_a_404_on_the_playground(owner_client, make_run, other_user):
    theirs = make_run(other_user)
    assert owner_client.get(f"/playground/?run={theirs.pk}").status_code == 404
    response = owner_client.post("/playground/", {"target": f"run-{theirs.pk}", "text": "Nice."})
    assert response.status_code == 404


def test_one_review_shows_its_label_probability_bars_and_latency(owner_client, run):
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": "Works well."})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="predicted-label"' in html and 'id="probs"' in html and 'id="latency"' in html
    assert html.count('<tr data-label="') == 3
    assert response.context["rows"][0]["label"] in ("positive", "negative", "neutral")


def test_an_empty_review_is_a_400_with_a_message(owner_client, run):
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": "   "})
    assert response.status_code == 400
    assert b"The text is empty" in response.content


def test_many_lines_give_a_table_and_a_csv_download(owner_client, run):
    lines = "Great.\n\nTerrible.\nIt is a cable."
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": lines, "per_line": "on"})
    assert response.status_code == 200
    assert response.content.count(b"<tr") == 1 + 3  # header + one row per non-empty line
    uri = response.context["csv_data_uri"]
    rows = list(csv.reader(io.StringIO(base64.b64decode(uri.split(",", 1)[1]).decode())))
    assert rows[0] == ["text", "label", "p_positive", "p_negative", "p_neutral", "truncated"]
    assert [r[0] for r in rows[1:]] == ["Great.", "Terrible.", "It is a cable."]


def test_a_csv_upload_is_classified_and_its_labels_compared(owner_client, run):
    content = b'label,text\npositive,Love it\nnegative,"Broke, sadly"\n'
    upload = SimpleUploadedFile("reviews.csv", content, content_type="text/csv")
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "csv_file": upload})
    assert response.status_code == 200, response.content
    assert [r["text"] for r in response.context["rows"]] == ["Love it", "Broke, sadly"]
    assert response.context["accuracy"] is not None


def test_too_many_reviews_is_a_413_naming_the_limit(owner_client, run, settings):
    settings.PLAYGROUND_MAX_TEXTS = 2
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": "a\nb\nc", "per_line": "on"})
    assert response.status_code == 413
    assert b"at most 2" in response.content


def test_a_base_model_classifies_zero_shot_in_the_playground(owner_client, db):
    response = owner_client.post("/playground/", {"target": "tiny-test", "text": "Fine."})
    assert response.status_code == 200
    assert "zero-shot" in response.context["target"].title


def test_htmx_gets_only_the_results_fragment(owner_client, run):
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": "Nice."}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode().lstrip()
    assert html.startswith('<section id="playground-results"') and "<html" not in html


def test_the_playground_says_which_run_and_prompt_version_answered(owner_client, run):
    import json

    from mlcore.prompt import PROMPT_FILE, labels_system_prompt

    # A run trained before the default prompt changed keeps answering with its own.
    system = labels_system_prompt(["positive", "negative", "neutral"], 2)
    (run.artifact_dir / PROMPT_FILE).write_text(json.dumps({"version": 2, "system": system}))
    response = owner_client.post("/playground/", {"target": f"run-{run.pk}", "text": "Works well."})
    assert response.status_code == 200
    answered = response.content.decode().split('id="answered-with">', 1)[1].split("</span>", 1)[0]
    assert f"Run {run.pk}" in answered and "prompt version 2" in answered and system in answered
