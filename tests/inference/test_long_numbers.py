"""A JSON integer longer than Python converts is a 400 naming the field, never a 500."""

import json

import pytest

LONG = "9" * 5000


def body(template: str) -> str:
    return template.replace("N", LONG)


@pytest.mark.parametrize(("url", "data", "param"), [
    ("/api/classify", body('{"run": N, "texts": ["fine"]}'), "run"),
    ("/v1/chat/completions", body('{"model": "tiny-test", "messages": [{"role": "user", "content": "a"}], "max_tokens": N}'),
     "max_tokens"),
    ("/v1/chat/completions", body('{"model": "tiny-test", "messages": [{"role": "user", "content": N}]}'),
     "messages[0].content"),
    ("/api/classify", "-" + LONG, None),
])
def test_an_over_long_integer_is_a_400_naming_where_it_is(client, bearer, url, data, param):
    response = client.post(url, data=data, content_type="application/json", **bearer)
    assert response.status_code == 400
    error = json.loads(response.content)["error"]
    assert error["code"] == "number_too_long" and error["param"] == param
    assert "5,000 digits" in error["message"] and (param or "the body") in error["message"]


def test_an_integer_at_the_limit_is_still_a_number(client, bearer):
    from ops.text import MAX_INT_DIGITS

    data = '{"run": N, "texts": ["fine"]}'.replace("N", "9" * MAX_INT_DIGITS)
    response = client.post("/api/classify", data=data, content_type="application/json", **bearer)
    assert response.status_code == 404 and json.loads(response.content)["error"]["param"] == "run"
