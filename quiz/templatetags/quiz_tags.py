from django import template
from django.template.defaultfilters import floatformat

from content.markdown import render_markdown
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
