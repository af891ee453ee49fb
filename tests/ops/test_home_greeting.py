"""The home page greets a new learner as new (issue 25 item 12)."""

from labs.models import Run
from tests.labs.conftest import make_run


def test_a_new_learner_is_welcomed_not_welcomed_back(owner_client, owner):
    page = owner_client.get("/").content.decode()
    assert "Welcome, owner" in page and "Welcome back" not in page and "where you left off" not in page
    make_run(owner, status=Run.Status.SUCCEEDED)
    page = owner_client.get("/").content.decode()
    assert "Welcome back, owner" in page and "Pick up where you left off." in page
