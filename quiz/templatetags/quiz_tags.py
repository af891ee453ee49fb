from django import template

from content.markdown import render_markdown
from quiz import selectors
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
