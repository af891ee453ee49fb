from functools import lru_cache

from django import template
from django.template.defaultfilters import floatformat
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from content.markdown import render_markdown
from ops.reversing import cached_reverse
from quiz import grading, selectors
from quiz.vocab import topic_label as _topic_label

register = template.Library()


@register.filter
def markdown(text: str):
    """Sanitized HTML from markdown (see content.markdown)."""
    return render_markdown(text)


@register.filter
def topic_label(topic: str) -> str:
    return _topic_label(topic)


@register.simple_tag
def question_badges(question):
    """A question's kind, difficulty, topics (each a link to the list filtered by it) and "asked
    very often". Built here once per distinct question and kept, rather than by an included
    template: the question list shows 25 a page, and that include was a quarter of its CPU."""
    return _badges(cached_reverse("quiz:questions"), question.get_kind_display(), question.get_difficulty_display(),
                   tuple(question.topics), question.very_often)


@lru_cache(maxsize=4096)
def _badges(topics_url: str, kind: str, difficulty: str, topics: tuple, very_often: bool) -> str:
    links = format_html_join("", '<a class="badge topic" href="{}?topic={}">{}</a> ',
                             ((topics_url, topic, _topic_label(topic)) for topic in topics))
    return format_html('<span class="badge">{}</span>\n<span class="badge">{}</span>\n{}\n{}', kind, difficulty, links,
                       mark_safe('<span class="badge hot">asked very often</span>') if very_often else "")


@register.filter
def percent(value) -> str:
    return "–" if value is None else f"{round(float(value) * 100)}%"


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.simple_tag
def lab_questions(lab) -> list[dict]:
    """The questions a lab answers, for its page: `{% lab_questions lab as questions %}`. A tag
    of the quiz app, so that labs' code never imports the quiz app (which stands on labs)."""
    return selectors.lab_questions(lab)


@register.filter
def numeric_answer(question) -> str:
    """A numeric question's answer with its unit (4×, 16 GB) and tolerance, as plain text."""
    number = floatformat(question.numeric_answer, "-4")
    tolerance = f" (± {floatformat(question.tolerance, '-4')})" if question.tolerance else ""
    return grading.with_unit(number, question.unit) + tolerance


register.filter("unit_hint", grading.unit_hint)  # what to type: "how many times, e.g. 4 for 4×" for a ratio
