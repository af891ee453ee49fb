"""/v1/models and the playground's menu never read the runs' predictions or token views."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from labs.models import Run


def test_v1_models_does_not_read_predictions_or_token_views(client, owner, make_run, bearer):
    runs = [make_run(owner) for _ in range(3)]
    Run.objects.update(predictions=[{"text": "x" * 500, "label": "positive"}] * 300, token_view=[{"token": "x"}] * 200)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v1/models", **bearer)
    assert response.status_code == 200
    assert {f"run-{run.pk}" for run in runs} <= {model["id"] for model in response.json()["data"]}
    heavy = [q["sql"] for q in queries if '"predictions"' in q["sql"] or '"token_view"' in q["sql"]]
    assert not heavy, heavy
