"""404 and 500 pages use the site's layout and offer a way back (issue 25 item 7)."""

from django.test import RequestFactory
from django.views.defaults import server_error


def test_a_missing_page_has_the_site_navigation_and_a_way_home(owner_client):
    response = owner_client.get("/labs/runs/999999/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and 'href="/labs/"' in page and 'href="/playground/"' in page  # the site nav
    assert "Go to your home page" in page and ">owner<" in page  # still signed in, as the header shows
    assert "The requested resource was not found" not in page


def test_an_unknown_url_names_the_path(client, db):
    page = client.get("/no/such/page/").content.decode()
    assert "<code>/no/such/page/</code>" in page and "Page not found" in page


def test_a_server_error_page_renders_without_a_request_context_and_has_a_way_back(db):
    response = server_error(RequestFactory().get("/labs/"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page and 'href="/quiz/"' in page and 'href="/"' in page
