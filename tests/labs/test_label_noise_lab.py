"""The "Label noise" lab: its catalog entry, the setting in the launch form, a real group of its
runs on the tiny model (flipped labels recorded, calibration measured) compared on the group page,
and the questions it links both ways, whose numeric answers are computed here."""

import io
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from labs.catalog import load_catalog
from labs.models import Lab, Run
from labs.services import group_launch
from labs.worker import run_execute
from mlcore.config import flip_labels, select_examples
from mlcore.data import load_bundled
from mlcore.metrics import calibration
from quiz.bank import BANK_DIR, parse_question_file
from tests.labs.conftest import TINY

SLUG = "label-noise"
SHARES = [0.0, 0.1, 0.25, 0.4]


def test_the_lab_is_the_default_lab_swept_over_the_share_of_flipped_labels():
    labs = {spec.slug: spec for spec in load_catalog()}
    spec = labs[SLUG]
    assert spec.sweep == "label_noise" and [v["overrides"] for v in spec.variants] == [{"label_noise": p} for p in SHARES]
    assert spec.preset == {**labs["sentiment-lora"].preset, "label_noise": 0.0}


@pytest.mark.django_db
def test_the_launch_form_shows_label_noise_and_refuses_a_share_over_half(labs, owner_client):
    url = reverse("labs:launch", args=["sentiment-lora"])
    page = owner_client.get(url).content.decode()
    assert 'name="label_noise"' in page and "Label noise" in page
    lab = Lab.objects.get(slug="sentiment-lora")
    response = owner_client.post(url, {**lab.preset, **TINY, "label_noise": 0.7})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["label_noise"] == ["Label noise must be a number in [0, 0.5]."]
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("one_torch_thread")
def test_a_group_of_the_lab_flips_more_labels_per_run_and_the_group_page_compares_f1_and_calibration(
        labs, owner, owner_client):
    lab = Lab.objects.get(slug=SLUG)
    group = group_launch(user=owner, lab=lab, config={**lab.preset, **TINY})
    runs = list(group.runs.order_by("pk"))
    assert [r.config["label_noise"] for r in runs] == SHARES
    for run in runs:
        run_execute(run_id=run.pk)
        run.refresh_from_db()
        assert run.status == Run.Status.SUCCEEDED, run.error

    train = select_examples(load_bundled("reviews").train, TINY["train_limit"], 0)
    for run, share in zip(runs, SHARES, strict=True):
        noise = run.metrics["train"]["label_noise"]
        assert noise["rows"] == flip_labels(train, ["positive", "negative", "neutral"], share, 0)[1]
        assert noise["flipped"] == round(share * TINY["train_limit"])
        assert [p["label"] for p in run.predictions] == [e.label for e in load_bundled("reviews").test]
        assert run.metrics["test_calibration"] == calibration([p["label"] for p in run.predictions],
                                                              [p["probs"] for p in run.predictions])

    page = owner_client.get(reverse("labs:group", args=[group.pk])).content.decode()
    sweep = page[page.index('id="sweep-table"'):page.index("</table>", page.index('id="sweep-table"'))]
    rows = re.findall(r"<tr><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td></tr>", sweep)
    assert [float(r[0]) for r in rows] == SHARES
    for (_, accuracy, f1, ece, confidence), run in zip(rows, runs, strict=True):
        found = run.metrics["test_calibration"]
        assert (accuracy, f1) == (f"{run.metrics['test']['accuracy']:.3f}", f"{run.metrics['test']['macro_f1']:.3f}")
        assert (ece, confidence) == (f"{found['ece']:.3f}", f"{found['mean_confidence']:.3f}")
    assert '"ece":' in page  # the chart's points carry it

    noisiest = runs[-1]
    results = owner_client.get(reverse("labs:results", args=[noisiest.pk])).content.decode()
    flipped = noisiest.metrics["train"]["label_noise"]["flipped"]
    assert re.search(rf"<strong>{flipped}</strong> of its\s+{TINY['train_limit']} training labels", results)
    assert f"{noisiest.metrics['test_calibration']['ece']:.3f}" in results and 'id="reliability-table"' in results
    clean = owner_client.get(reverse("labs:results", args=[runs[0].pk])).content.decode()
    assert 'id="label-noise"' not in clean and 'id="calibration"' in clean


@pytest.mark.django_db
def test_the_lab_page_links_its_questions_and_each_links_back(labs, owner_client):
    call_command("load_bank", stdout=io.StringIO())
    lab_url = reverse("labs:lab", args=[SLUG])
    page = owner_client.get(lab_url).content.decode()
    spec = next(spec for spec in load_catalog() if spec.slug == SLUG)
    for slug in spec.questions:
        question_url = reverse("quiz:question", args=[slug])
        assert f'href="{question_url}"' in page, slug
        assert f'href="{lab_url}"' in owner_client.get(question_url).content.decode(), slug


def question(slug):
    return parse_question_file(BANK_DIR / f"{slug}.md")


def test_the_ece_question_is_what_mlcore_computes_for_its_table():
    # The table's bins: (examples, mean confidence, right), rebuilt as predictions.
    table = [(80, 0.55, 56), (80, 0.65, 60), (40, 0.74, 26)]
    y_true, probs = [], []
    for n, confidence, right in table:
        rest = (1 - confidence) / 2
        for i in range(n):
            probs.append({"positive": confidence, "negative": rest, "neutral": rest})
            y_true.append("positive" if i < right else "negative")
    found = calibration(y_true, probs)
    q = question("expected-calibration-error-from-bins")
    assert abs(q.numeric_answer - found["ece"]) <= q.tolerance
    assert found["gap"] == pytest.approx(0.628 - 0.710)  # the overall gap the answer quotes
    for wrong in (sum(abs(a - c) for _, c, a in [(n, c, r / n) for n, c, r in table]) / 3,  # unweighted mean
                  abs(found["mean_confidence"] - found["accuracy"])):  # one global gap
        assert abs(q.numeric_answer - wrong) > q.tolerance


def test_the_plurality_threshold_question_is_where_the_true_label_stops_being_most_frequent():
    q = question("noisy-labels-plurality-threshold")
    k = 3
    threshold = (k - 1) / k  # 1 - p = p / (k - 1)
    assert abs(q.numeric_answer - threshold) <= q.tolerance
    assert abs(q.numeric_answer - 0.5) > q.tolerance  # the two-label intuition
    # and flip_labels' noise has those frequencies: at p = 0.4, 60% true, 20% each other label
    examples = select_examples(load_bundled("reviews").train, None, 0)
    noisy, _ = flip_labels(examples, ["positive", "negative", "neutral"], 0.4, 0)
    kept = sum(a.label == b.label for a, b in zip(examples, noisy, strict=True)) / len(examples)
    assert kept == pytest.approx(0.6, abs=0.001)
