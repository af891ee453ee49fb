"""A refused websocket, as a browser sees it: the page says why and stops retrying.

Real Daphne, real chromium. The learner opens their running run's page, then their session
ends (signed out in another tab): the page's stream reconnects, the server accepts and closes
with 4403, and the page shows the reason and opens no further socket.
"""

import pytest

from labs.models import Run
from labs.services import build_config
from tests.servers import daphne_server

TINY = dict(base_model="tiny-test", dataset="reviews", epochs=1, batch_size=8, train_limit=16, max_length=128)

# Count the sockets the page opens, before any of its scripts run.
COUNT_SOCKETS = """
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (...args) { const s = new NativeWebSocket(...args); window.__sockets.push(s); return s; };
window.WebSocket.prototype = NativeWebSocket.prototype;
"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_refused_stream_says_why_and_stops_retrying(tmp_path, browser, client, owner):
    run = Run.objects.create(owner=owner, config=build_config(TINY), status=Run.Status.RUNNING)
    client.force_login(owner)
    cookie = client.cookies["sessionid"].value
    with daphne_server(tmp_path, TUNELAB_ALLOW_TEST_MODEL="1") as address:
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": f"http://{address}"}])
        page = context.new_page()
        page.add_init_script(COUNT_SOCKETS)
        page.goto(f"http://{address}/labs/runs/{run.pk}/")
        page.wait_for_function("document.getElementById('run-connection').textContent === 'live'", timeout=20_000)

        context.clear_cookies()  # the session ends, e.g. signed out in another tab
        page.evaluate("window.__sockets[0].close()")  # the next connect is a reconnect without a session
        page.wait_for_function("document.getElementById('run-connection').textContent.startsWith('stopped')",
                               timeout=20_000)
        status = page.text_content("#run-connection")
        page.wait_for_timeout(3000)  # the page would have retried after 0.5, 1 and 2 s
        assert "you may not follow this run" in status and "reload the page" in status
        assert page.evaluate("window.__sockets.length") == 2  # the first, the refused one, no more
        assert page.evaluate("window.__sockets[1].readyState") == 3  # closed
        context.close()
