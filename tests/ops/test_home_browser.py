"""After login the home page is the learner's: due cards, last quiz score, last run, next lab."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from labs.models import Lab, Run
from quiz.models import Attempt, PracticeCard
from quiz.services import card_add
from tests.conftest import log_in_browser
from tests.labs.conftest import make_run
from tests.quiz.conftest import make_question  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def test_the_home_page_after_login_shows_the_learners_own_state(live_server, page, transactional_db, client, owner,
                                                               other_user, make_question, screenshot):  # noqa: F811
    call_command("load_labs", stdout=io.StringIO())
    first_lab, second_lab = Lab.objects.filter(is_active=True).order_by("order", "slug")[:2]
    for question in (make_question("open"), make_question("single")):
        card_add(user=owner, question=question)
    PracticeCard.objects.filter(user=owner).update(due=timezone.now() - timedelta(minutes=1))
    Attempt.objects.create(user=owner, title="Quiz: LoRA", state=Attempt.State.GRADED, score=0.75,
                           submitted_at=timezone.now())
    Attempt.objects.create(user=other_user, title="Someone else's", state=Attempt.State.GRADED, score=0.1,
                           submitted_at=timezone.now())
    run = make_run(owner, status=Run.Status.RUNNING, lab=first_lab)

    page.goto(live_server.url)
    assert page.locator("#learner-home").count() == 0  # visitors get the introduction
    log_in_browser(page, client, owner, live_server.url)
    page.goto(live_server.url)
    assert "2 cards due now" in page.locator("#home-due").inner_text()
    assert page.locator("#home-quiz-score").inner_text() == "75%"
    assert f"Run {run.pk}" in page.locator("#home-run").inner_text()
    assert page.locator("#home-run-status").inner_text() == "Running"
    assert second_lab.title in page.locator("#home-next-lab").inner_text()  # the first lab was already run
    screenshot(page, "home-learner")
