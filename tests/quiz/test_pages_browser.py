"""Quiz pages in a real browser at desktop and phone widths: the filter bar, kind labels,
shuffled choices, wording. Every test saves screenshots into var/screenshots/."""

import itertools
import re

import pytest

from tests.conftest import boxes_overlap, log_in_browser

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", [1280, 390])
def test_the_filter_bar_is_readable_without_overlaps(live_server, page, transactional_db, client, owner,
                                                     make_question, width, screenshot):
    for kind in ("single", "multi", "open", "numeric"):
        make_question(kind)
    log_in_browser(page, client, owner, live_server.url)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/quiz/?kind=single&difficulty=intermediate&topic=lora")
    controls = page.locator("#question-filters select, #question-filters input[type=search], #filter-submit")
    assert controls.count() == 7  # search, button, topic, difficulty, kind, lab, practice
    boxes = [controls.nth(i).bounding_box() for i in range(controls.count())]
    for a, b in itertools.combinations(boxes, 2):
        assert not boxes_overlap(a, b), (a, b)
    for select in page.locator("#question-filters select").all():
        # Wide enough to read the current choice ("Multiple choice", "Any practice status").
        assert select.bounding_box()["width"] >= 150
        assert select.evaluate("s => s.scrollWidth <= s.clientWidth + 1")
    button = page.locator("#filter-submit").bounding_box()
    assert button["height"] < 70 and button["width"] < 200  # a button, not a blob
    assert page.locator("#id_kind").input_value() == "single"

    # The counts by kind read as people say them, not as the database stores them.
    page.click("text=Counts by topic, difficulty and kind")
    chips = page.locator("#kind-counts").inner_text()
    assert "Single choice (1)" in chips and "Multiple choice (1)" in chips and "Open answer (1)" in chips
    assert not re.search(r"\b(multi|open|single) \(", chips)
    screenshot(page, "quiz-questions")
