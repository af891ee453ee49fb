"""API tokens on the account page: created and shown once, listed by prefix, revoked."""

from inference.models import ApiToken, hash_token


def test_the_account_page_has_the_api_tokens_section(owner_client):
    response = owner_client.get("/accounts/me/")
    assert response.status_code == 200
    assert b'id="api-tokens"' in response.content and b"No tokens yet" in response.content


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(owner_client, owner):
    response = owner_client.post("/account/api-tokens/", {"name": "laptop"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=owner)
    raw = response.context["new_token"]
    assert raw.encode() in response.content
    assert token.token_hash == hash_token(raw) and token.name == "laptop"
    assert response["Cache-Control"] == "no-store"
    # Never again: the page lists the token by its prefix only.
    again = owner_client.get("/accounts/me/")
    assert raw.encode() not in again.content
    assert token.display_prefix.encode() in again.content


def test_creating_a_token_with_htmx_returns_the_section(owner_client):
    response = owner_client.post("/account/api-tokens/", {"name": "ci"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response.content.lstrip().startswith(b'<section id="api-tokens">')
    assert b'id="new-token-value"' in response.content


def test_a_revoked_token_stops_working_at_once(owner_client, owner, client, run):
    token, raw = ApiToken.issue(user=owner, name="old")
    response = owner_client.post(f"/account/api-tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    api = client.post("/api/classify", {"run": run.pk, "texts": ["x"]}, content_type="application/json",
                      HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 401


def test_someone_elses_token_cannot_be_revoked(client, owner, other_user):
    token, _ = ApiToken.issue(user=owner, name="mine")
    client.force_login(other_user)
    assert client.post(f"/account/api-tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_token_pages_need_a_login_and_a_post(client, owner):
    assert client.post("/account/api-tokens/", {"name": "x"}).status_code == 302  # to the login page
    client.force_login(owner)
    assert client.get("/account/api-tokens/").status_code == 405
