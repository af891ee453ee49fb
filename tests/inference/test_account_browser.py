"""The account page's API examples run as pasted, against a real Daphne server."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import log_in_browser
from tests.inference.conftest import SERVER_ENV
from tests.servers import daphne_server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path):
    with daphne_server(tmp_path, **SERVER_ENV) as address:
        yield f"http://{address}"


def test_the_python_example_runs_as_pasted_with_the_learners_own_run(server, page, client, make_run, owner,
                                                                     other_user, tmp_path, screenshot):
    make_run(other_user)  # someone else's newer-numbered runs must not appear in this learner's examples
    run = make_run(owner)
    make_run(other_user)
    log_in_browser(page, client, owner, server)
    page.goto(f"{server}/accounts/me/")
    page.fill("#token-create input[name=name]", "laptop script")
    page.click("#token-create button[type=submit]")
    page.locator("#new-token-value").wait_for()
    assert page.locator(".api-examples").get_attribute("open") is not None
    screenshot(page, "account")

    curl = page.locator("#curl-example").inner_text()
    assert f"""'{{"run": {run.pk}, "texts": [""" in curl
    script = page.locator("#python-example").inner_text()
    assert f'model="run-{run.pk}"' in script
    path = tmp_path / "example.py"
    path.write_text(script)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no TUNELAB_TOKEN: the example carries the token
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    models, label = done.stdout.strip().splitlines()
    assert f"run-{run.pk}" in json.loads(models.replace("'", '"'))
    assert label in ("positive", "negative", "neutral")

    # The curl example too, through a real shell.
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [p["label"] in ("positive", "negative", "neutral") for p in json.loads(done.stdout)["predictions"]] == [True, True]
    assert re.search(r"tl_", page.locator("#new-token-value").inner_text())
