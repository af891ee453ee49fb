"""Uploads a database cannot store, or json cannot read, are refused on the form naming the line and field."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labs.models import DatasetUpload, Run
from tests.labs.test_launch import LAUNCH, form_data


def rows(*extra: str) -> str:
    good = [f'{{"text": "review number {i} is {label}", "label": "{label}"}}'
            for i in range(6) for label in ("positive", "negative")]
    return "\n".join([*good, *extra]) + "\n"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("nul.jsonl", rows('{"text": "a \\u0000 b", "label": "neutral"}'),
     'nul.jsonl, line 13: "text" contains a NUL character'),
    ("surrogate.jsonl", rows('{"text": "lone \\ud800 half", "label": "neutral"}'),
     'surrogate.jsonl, line 13: "text" contains a lone surrogate (U+D800)'),
    ("nul.csv", "text,label\n" + "".join(f"review {i},positive\nother {i},negative\n" for i in range(6)) + "a \x00 b,neutral\n",
     'nul.csv, line 14: "text" contains a NUL character'),
    ("long.jsonl", rows('{"text": "fine", "label": ' + "9" * 5000 + "}"),
     'long.jsonl, line 13: "label" is a number of 5,000 digits'),
])
def test_an_upload_the_database_cannot_store_is_refused_naming_line_and_field(owner_client, labs, name, content, message):
    response = owner_client.post(LAUNCH, {**form_data(), "upload": SimpleUploadedFile(name, content.encode())})
    assert response.status_code == 400
    errors = response.context["form"].errors["upload"]
    assert any(message in error for error in errors), errors
    assert not DatasetUpload.objects.exists() and not Run.objects.exists()
