import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct-horse-battery-staple"
# Servers the tests start serve static files from static/ (edits are seen at once), not from a
# collected copy under var/ that another checkout's collectstatic may have left stale.
os.environ.setdefault("TUNELAB_STATIC_FROM_SOURCE", "true")
# Under pytest-xdist the parallelism is the workers: one torch/OpenMP thread each (set before
# torch is imported), or N workers x N threads spin against each other on N cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Served classifiers compute with torch in the suite: with OpenVINO, every model a test loads
# would start an export in a child process. tests/mlcore/test_onnx_serving.py and
# tests/inference/test_served_runtime.py turn it on where it is the subject.
os.environ.setdefault("TUNELAB_INFERENCE_BACKEND", "torch")
# Those OpenVINO builds run at the same priority as the tests around them (mlcore.onnx_serving).
os.environ.setdefault("TUNELAB_EXPORT_NICE", "0")
# Worker children warming up torch ahead of runs would cost the suite's many short-lived workers
# CPU for nothing; tests/labs/test_warm_start.py turns it on where it is the subject.
os.environ.setdefault("TUNELAB_WORKER_PRELOAD", "false")


# Names whose use starts other processes (the servers of tests/servers.py and
# scripts/redis_server.py, manage.py, a bench): a test that reaches one of them is marked `live`.
LIVE_NAMES = {"celery_worker", "daphne_server", "RedisServer", "subprocess"}


def _reaches(code, names: set[str], namespace: dict, seen: set) -> bool:
    """Whether `code` names one of `names`, itself or through the tests' own helpers it calls
    (module-level functions of tests/, followed a few calls deep)."""
    if code in seen or len(seen) > 200:
        return False
    seen.add(code)
    if names & set(code.co_names):
        return True
    for const in code.co_consts:  # nested functions and lambdas
        if hasattr(const, "co_names") and _reaches(const, names, namespace, seen):
            return True
    for name in code.co_names:
        helper = namespace.get(name)
        helper_code = getattr(helper, "__code__", None)
        if helper_code and getattr(helper, "__module__", "").startswith("tests.") and \
                _reaches(helper_code, names, helper.__globals__, seen):
            return True
    return False


# pytest-django's fixtures through which a test reaches the test database (db, transactional_db,
# live_server and every fixture built on them request the first).
DATABASE_FIXTURES = {"_django_db_helper", "django_db_setup"}


def _database_dependent(item) -> bool:
    """Whether the database backend can change the test's outcome: it uses the test database, or it
    starts processes, which read DATABASE_URL, unless marked `own_database` (a bench's smoke run
    builds its own SQLite stack whatever the suite runs on). pytest-django refuses the database to
    any other test, so nothing else can depend on it."""
    if item.get_closest_marker("own_database"):
        return False
    return bool(item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.get_closest_marker("live"))


def _starts_servers(item) -> bool:
    functions = [getattr(item, "function", None)]
    for defs in getattr(item, "_fixtureinfo", None) and item._fixtureinfo.name2fixturedefs.values() or ():
        functions += [fixturedef.func for fixturedef in defs]
    seen: set = set()
    return any(f is not None and hasattr(f, "__code__") and _reaches(f.__code__, LIVE_NAMES, f.__globals__, seen)
               for f in functions)


def pytest_collection_modifyitems(config, items):
    """Mark what each test costs, so `-m` can leave it out (README, "Tests"): `browser` for a
    test that drives chromium, `slow` for one that loads the real default model, `live` for one
    that starts other processes (Daphne, Celery workers, Redis, manage.py, a bench), `database` for one
    whose outcome the database backend can change (`make test-postgres` runs those). Then run browser tests last:
    Playwright's sync API leaves an event loop running in the main thread for the rest of the
    session, and asyncio.run() in later websocket tests would refuse. (Under pytest-xdist each
    worker runs its share in this order: the default `load` scheduling keeps it; `loadgroup`
    cannot group here, xdist 3.8 renames nodes in a way pytest 9.2 ignores.)"""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)
        if "smollm2" in fixtures:
            item.add_marker(pytest.mark.slow)
        if _starts_servers(item):
            item.add_marker(pytest.mark.live)
        if _database_dependent(item):
            item.add_marker(pytest.mark.database)
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(autouse=True)
def serving_backend(settings):
    """Settings were read before this file set TUNELAB_INFERENCE_BACKEND (the servers tests start
    get it from the environment): the same choice in this process."""
    settings.INFERENCE_BACKEND = os.environ["TUNELAB_INFERENCE_BACKEND"]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Every user fixture hashes a password; the production hasher costs ~0.4 s each on this CPU."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def clear_limit_counts(settings):
    """Rate limits, login throttling and spend reservations count in the test Redis, by user id
    (ids repeat between tests): every test starts with none."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter("tunelab:limit:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def own_artifacts_dir(request, settings, tmp_path_factory, monkeypatch):
    """Each test that runs in this process gets its own run artifacts folder: run ids repeat
    between tests (a rolled-back insert gives its id back), and this test's run 1 must not find
    the adapter another test left in run-1/ (under xdist, a worker's order of tests is not the
    file order). A `live` test keeps the session's folder, the one its servers were started with."""
    if request.node.get_closest_marker("live"):
        return
    path = tmp_path_factory.mktemp("artifacts")
    settings.ARTIFACTS_DIR = path
    monkeypatch.setenv("TUNELAB_ARTIFACTS_DIR", str(path))


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user("owner", password=PASSWORD)


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("intruder", password=PASSWORD)


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("curator", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright; never a downloaded browser."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`.ci/run` does it).")
    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls stay sync.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    # Generous: the browser tests run last, beside the suite's heaviest tests, and on a loaded
    # machine a page that answers in 0.3 s alone once took over 20 s (a CI-like run).
    page.set_default_timeout(45_000)
    yield page
    context.close()


SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"  # git-ignored; open the PNGs to review
SCREENSHOT_WIDTHS = (1280, 390)
# The outermost elements whose right edge passes the screen's: what to fix when a page is too wide.
WIDEST_ELEMENTS = """width => [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > width + 1 && !el.closest('.table-scroll, .overflow-auto'))
  .filter(el => !(el.parentElement && el.parentElement.getBoundingClientRect().right > width + 1))
  .slice(0, 5).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : ''))"""


@pytest.fixture
def screenshot():
    """shoot(page, name): full-page PNGs of the current page at desktop and phone widths, into
    var/screenshots/<name>-<width>.png, so a reviewer sees layout regressions."""

    def shoot(page, name: str) -> list[Path]:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        before = page.viewport_size
        paths = []
        for width in SCREENSHOT_WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            path = SCREENSHOTS / f"{name}-{width}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
            overflow = page.evaluate("document.documentElement.scrollWidth") - width
            if overflow > 0:
                culprits = page.evaluate(WIDEST_ELEMENTS, width)
                pytest.fail(f"{name} is {overflow}px wider than a {width}px screen (see {path}); widest: {culprits}")
        if before:
            page.set_viewport_size(before)
        return paths

    return shoot


def log_in_browser(page, client, user, base_url):
    """Give the browser a session for `user` without going through the login form."""
    from urllib.parse import urlparse

    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "domain": urlparse(base_url).hostname, "path": "/"}])


def boxes_overlap(a: dict, b: dict) -> bool:
    """Whether two Playwright bounding boxes overlap by more than a pixel."""
    return (a["x"] + a["width"] - 1 > b["x"] and b["x"] + b["width"] - 1 > a["x"]
            and a["y"] + a["height"] - 1 > b["y"] and b["y"] + b["height"] - 1 > a["y"])
