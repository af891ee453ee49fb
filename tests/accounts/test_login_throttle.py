"""Login throttling on both login pages, counted in the real (test) Redis."""

import time

import pytest

from tests.conftest import PASSWORD

PAGES = ["/accounts/login/", "/admin/login/"]


def attempt(client, page, username, password, address="10.0.0.1"):
    return client.post(page, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(response) -> bool:
    return response.status_code == 302


@pytest.mark.parametrize("page", PAGES)
def test_an_account_is_locked_after_its_failures_even_with_the_right_password(client, staff_user, settings, page):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    for _ in range(3):
        assert attempt(client, page, "curator", "wrong").status_code == 200
    refused = attempt(client, page, "curator", PASSWORD, address="10.0.0.2")  # another address: the account counts
    assert not logged_in(refused)
    assert "Too many failed logins for this account" in refused.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("page", PAGES)
def test_an_address_is_locked_after_failures_on_many_accounts(client, staff_user, settings, page):
    settings.LOGIN_FAILURES_PER_ADDRESS = 4
    for i in range(4):
        attempt(client, page, f"guess{i}", "wrong", address="10.9.9.9")
    refused = attempt(client, page, "curator", PASSWORD, address="10.9.9.9")
    assert not logged_in(refused) and "Too many failed logins from your address" in refused.content.decode()
    assert logged_in(attempt(client, page, "curator", PASSWORD, address="10.1.1.1"))  # elsewhere: fine


def test_the_lock_lifts_when_the_window_slides_and_a_success_clears_the_count(client, owner, settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 2
    settings.LOGIN_THROTTLE_WINDOW_S = 1
    attempt(client, "/accounts/login/", "owner", "wrong")
    attempt(client, "/accounts/login/", "OWNER ", "wrong")  # the same account, however it is typed
    assert not logged_in(attempt(client, "/accounts/login/", "owner", PASSWORD))
    time.sleep(1.1)
    assert logged_in(attempt(client, "/accounts/login/", "owner", PASSWORD))
    client.logout()
    settings.LOGIN_THROTTLE_WINDOW_S = 60
    attempt(client, "/accounts/login/", "owner", "wrong")
    assert logged_in(attempt(client, "/accounts/login/", "owner", PASSWORD))  # clears the one failure
    client.logout()
    attempt(client, "/accounts/login/", "owner", "wrong")
    assert logged_in(attempt(client, "/accounts/login/", "owner", PASSWORD))  # 1 failure, not 2


@pytest.mark.parametrize("page", PAGES)
def test_without_the_counter_sign_in_is_refused_with_a_message(client, staff_user, settings, page):
    from scripts.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis down: fail closed
    refused = attempt(client, page, "curator", PASSWORD)
    assert not logged_in(refused) and "Signing in is paused" in refused.content.decode()
