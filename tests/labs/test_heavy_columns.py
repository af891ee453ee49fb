"""Lists never read the run columns only the run's own page shows (predictions, token view)."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from labs.models import Run
from mlcore.metrics import compute_metrics
from tests.labs.conftest import make_run

LABELS = ["positive", "negative", "neutral"]
PREDICTIONS = [{"text": f"review {i} " + "x" * 500, "label": "positive", "predicted": "negative", "correct": False,
                "probs": {"positive": 0.4, "negative": 0.6}} for i in range(300)]


def succeeded(owner) -> Run:
    run = make_run(owner, status=Run.Status.SUCCEEDED)
    Run.objects.filter(pk=run.pk).update(predictions=PREDICTIONS, token_view=[{"token": "x", "supervised": False}] * 200,
                                         metrics={"test": compute_metrics(LABELS, ["positive", "neutral", "negative"], LABELS),
                                                  "validation": [], "train": {}})
    return run


def heavy_reads(queries) -> list[str]:
    return [q["sql"] for q in queries if "labs_run" in q["sql"] and ('"predictions"' in q["sql"] or '"token_view"' in q["sql"])]


def test_the_run_list_does_not_read_predictions_or_token_views(owner_client, owner, labs):
    runs = [succeeded(owner) for _ in range(3)]
    with CaptureQueriesContext(connection) as queries:
        response = owner_client.get("/labs/runs/")
    assert response.status_code == 200 and all(f"/labs/runs/{run.pk}/" in response.content.decode() for run in runs)
    assert not heavy_reads(queries), heavy_reads(queries)


def test_the_launch_forms_run_menu_does_not_read_them(owner_client, owner, labs):
    run = succeeded(owner)
    with CaptureQueriesContext(connection) as queries:
        response = owner_client.get("/labs/sentiment-lora/launch/")
    assert f'value="{run.pk}"' in response.content.decode()
    assert not heavy_reads(queries), heavy_reads(queries)


def test_the_runs_own_page_still_shows_them(owner_client, owner, labs):
    run = succeeded(owner)
    response = owner_client.get(f"/labs/runs/{run.pk}/")
    assert response.status_code == 200 and "review 0 xxx" in response.content.decode()
