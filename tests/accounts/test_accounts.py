import pytest
from django.contrib.auth import get_user_model

from tests.conftest import PASSWORD


def test_signup_creates_the_user_and_logs_them_in(client, db):
    response = client.post("/accounts/signup/", {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="newbie").exists()
    assert client.get("/accounts/me/").status_code == 200


def test_signup_with_mismatched_passwords_shows_the_error_and_creates_nothing(client, db):
    response = client.post("/accounts/signup/", {"username": "newbie", "password1": PASSWORD, "password2": "nope"})
    assert response.status_code == 200
    assert "password fields didn" in response.content.decode()
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_account_page_needs_login(client, db):
    response = client.get("/accounts/me/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_password_change_works(owner_client, owner):
    new = "another-long-passphrase-42"
    response = owner_client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": new,
                                                               "new_password2": new})
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(new)


def test_diagnostics_are_staff_only(owner_client, client, staff_user):
    assert owner_client.get("/ops/diagnostics/").status_code == 302
    client.force_login(staff_user)
    assert client.get("/ops/diagnostics/").status_code == 200


@pytest.mark.browser
def test_a_visitor_signs_up_logs_in_and_sees_the_home_page(live_server, page, transactional_db):
    page.goto(f"{live_server.url}/accounts/signup/")
    page.fill("input[name=username]", "browser-user")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Welcome, browser-user"  # a new learner is welcomed, not welcomed back
    page.click("text=Log out")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "browser-user")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("text=browser-user").first.is_visible()
    # A signed-in learner lands on their own home: what is due, last quiz, last run, next lab.
    assert page.locator("#learner-home").is_visible()
