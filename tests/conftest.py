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


def pytest_collection_modifyitems(config, items):
    """Run browser tests last: Playwright's sync API leaves an event loop running in the main
    thread for the rest of the session, and asyncio.run() in later websocket tests would refuse."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


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
    page.set_default_timeout(20_000)
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
