"""Facts the question bank shares with the lab catalog are defined once: lab slugs come from the
catalog's files, lab links from the labs URLconf, and both kinds of file go through one front
matter reader and one markdown renderer."""

import pytest

from content.markdown import render_markdown
from labs.catalog import CatalogError, lab_slugs, lab_url, load_catalog, parse_lab
from quiz.bank import BankError, parse_question_file
from quiz.forms import QuestionFilterForm
from quiz.models import Question

BROKEN_FRONT_MATTER = "---\ntitle: [unclosed\n---\nbody\n"


def test_lab_slugs_are_the_catalog_files_slugs_and_need_no_quiz_migration():
    assert lab_slugs() == tuple(spec.slug for spec in load_catalog())
    assert not Question._meta.get_field("lab").choices  # a new lab file is all it takes
    offered = [value for value, _ in QuestionFilterForm().fields["lab"].choices if value]
    assert offered == list(lab_slugs())


def test_a_question_links_to_its_lab_page_through_the_labs_urlconf():
    for slug in lab_slugs():
        assert Question(lab=slug).lab_url == lab_url(slug) == f"/labs/{slug}/"
    assert Question(lab="").lab_url == ""


def test_the_bank_and_the_catalog_report_broken_front_matter_alike(tmp_path):
    path = tmp_path / "broken.md"
    path.write_text(BROKEN_FRONT_MATTER)
    with pytest.raises(BankError) as bank:
        parse_question_file(path)
    with pytest.raises(CatalogError) as catalog:
        parse_lab(BROKEN_FRONT_MATTER, "broken.md")
    assert bank.value.field == "front matter" and bank.value.reason.startswith("invalid YAML (line 2)")
    assert f"front matter: {bank.value.reason}" in str(catalog.value)


def test_a_lab_file_is_rendered_and_sanitized_like_a_question():
    body = "Train it.\n- one\n- two\n\n<script>alert(1)</script><a href=\"javascript:x\">y</a>"
    text = "---\nslug: hostile\ntitle: T\ngoal: G\npreset: {epochs: 1}\n---\n" + body
    html = parse_lab(text, "hostile.md").body_html
    assert html == str(render_markdown(body))
    assert "<li>one</li>" in html and "<script" not in html and "javascript:" not in html
