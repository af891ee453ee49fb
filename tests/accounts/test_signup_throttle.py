"""Sign-up is throttled per client address, counted in the real (test) Redis."""

from django.contrib.auth import get_user_model

from tests.conftest import PASSWORD


def sign_up(client, username, address="10.0.0.7"):
    client.logout()
    return client.post("/accounts/signup/", {"username": username, "password1": PASSWORD, "password2": PASSWORD},
                       REMOTE_ADDR=address)


def test_an_address_can_make_only_so_many_accounts_in_the_window(client, db, settings):
    settings.SIGNUPS_PER_ADDRESS = 3
    assert [sign_up(client, f"learner{i}").status_code for i in range(3)] == [302, 302, 302]
    refused = sign_up(client, "learner3")
    assert refused.status_code == 429 and "Too many accounts created from your address" in refused.content.decode()
    assert not get_user_model().objects.filter(username="learner3").exists()
    assert sign_up(client, "learner4", address="10.0.0.8").status_code == 302  # another address is not affected


def test_a_form_with_errors_does_not_count(client, db, settings):
    settings.SIGNUPS_PER_ADDRESS = 1
    bad = client.post("/accounts/signup/", {"username": "x", "password1": PASSWORD, "password2": "other"}, REMOTE_ADDR="10.0.0.9")
    assert bad.status_code == 200 and not get_user_model().objects.exists()
    assert sign_up(client, "learner", address="10.0.0.9").status_code == 302


def test_without_the_counter_sign_up_is_refused_with_a_message(client, db, settings):
    from scripts.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis down: fail closed
    refused = sign_up(client, "learner")
    assert refused.status_code == 429 and "Signing up is paused" in refused.content.decode()
    assert not get_user_model().objects.exists()
