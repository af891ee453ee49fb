"""Every main page at desktop and phone widths: saved into var/screenshots/ for a reviewer, and
none wider than the screen (the screenshot fixture fails a page that scrolls sideways)."""

import io

import pytest
from django.core.management import call_command

from labs.models import Run
from tests.conftest import log_in_browser
from tests.labs.conftest import make_run
from tests.quiz.conftest import make_question  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser

VISITOR_PAGES = {"home": "/", "login": "/accounts/login/", "signup": "/accounts/signup/", "labs-list": "/labs/",
                 "quiz-questions-anonymous": "/quiz/"}
LEARNER_PAGES = {"quiz-home": "/quiz/quizzes/", "quiz-practice": "/quiz/practice/", "quiz-progress": "/quiz/progress/",
                 "labs-runs": "/labs/runs/", "playground-learner": "/playground/"}


def test_the_main_pages_fit_a_desktop_and_a_phone(live_server, page, transactional_db, client, owner, make_question,  # noqa: F811
                                                   screenshot):
    call_command("load_labs", stdout=io.StringIO())
    for kind in ("single", "open", "numeric"):
        make_question(kind)
    make_run(owner, status=Run.Status.SUCCEEDED, label="r=16")
    for name, path in VISITOR_PAGES.items():
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        screenshot(page, name)
    log_in_browser(page, client, owner, live_server.url)
    for name, path in LEARNER_PAGES.items():
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        screenshot(page, name)
