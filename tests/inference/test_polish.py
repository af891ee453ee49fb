"""What a first visit trips over in the playground, the account examples and the API (issue 25)."""

import json

from labs.models import Run
from mlcore.metrics import compute_metrics

LABELS = ["positive", "negative", "neutral"]


def scored(run: Run, predicted: list[str]) -> Run:
    """Give a finished run the test macro-F1 of these predictions of ["positive", "negative", "neutral"]."""
    metrics = {"test": compute_metrics(LABELS, predicted, LABELS), "validation": [], "train": {}}
    Run.objects.filter(pk=run.pk).update(metrics=metrics)
    run.refresh_from_db()
    return run


def test_the_playground_answers_with_the_best_run_not_the_newest(owner_client, make_run, owner):
    best = scored(make_run(owner), ["positive", "negative", "neutral"])  # macro-F1 1.0
    scored(make_run(owner), ["neutral", "neutral", "neutral"])  # newer, and bad: a 1-epoch clone
    response = owner_client.get("/playground/")
    assert response.context["form"].initial["target"] == f"run-{best.pk}"
    assert f"Your best run is chosen (by test macro-F1): run {best.pk}." in response.content.decode()
    titles = dict(response.context["form"].fields["target"].widget.choices)
    assert titles[f"run-{best.pk}"].startswith(f"Run {best.pk} · macro-F1 1.000 · ")
    # The answer says which run gave it.
    answered = owner_client.post("/playground/", {"target": f"run-{best.pk}", "text": "Arrived broken."})
    assert f"Run {best.pk} · macro-F1 1.000" in answered.content.decode()


def test_the_account_examples_use_the_best_run_and_import_only_what_they_use(owner_client, make_run, owner):
    best = scored(make_run(owner), ["positive", "negative", "neutral"])
    scored(make_run(owner), ["neutral", "neutral", "neutral"])
    page = owner_client.get("/accounts/me/").content.decode()
    assert f"your best run, <code>run-{best.pk}</code>" in page and "(test macro-F1 1.000)" in page
    assert f'{{&quot;run&quot;: {best.pk}' in page or f'{{"run": {best.pk}' in page
    assert "import os" in page  # the example reads TUNELAB_TOKEN from the environment
    created = owner_client.post("/account/api-tokens/", {"name": "laptop"}).content.decode()
    example = created.split('id="python-example"', 1)[1].split("</pre>", 1)[0]
    assert "import os" not in example and "os.environ" not in example  # the new token is written in


def test_api_refuses_a_string_for_texts_and_names_run_for_an_unknown_run(client, bearer, run):
    def post(body):
        return client.post("/api/classify", json.dumps(body), content_type="application/json", **bearer)

    response = post({"run": run.pk, "texts": "Arrived broken."})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "texts" and "list of strings" in response.json()["error"]["message"]
    assert post({"run": run.pk, "text": "Arrived broken."}).status_code == 200  # one review, by its name
    missing = post({"run": 999_999, "texts": ["Arrived broken."]})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "run"


def test_learners_are_told_a_model_is_not_installed_and_operators_how_to_install_it(
        client, owner, staff_user, db, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_QWEN_PATH", str(tmp_path / "no-weights-here"))
    client.force_login(owner)
    learner = client.get("/playground/").content.decode()
    assert "is not installed on this server" in learner
    assert "hf download" not in learner and "TUNELAB_QWEN_PATH" not in learner
    client.force_login(staff_user)
    assert "hf download Qwen/Qwen2.5-0.5B-Instruct" in client.get("/playground/").content.decode()
