"""{% url %} (a template builtin, ops.templatetags.cached_url) renders what Django's renders, and
reverses each address once per process (ops.reversing)."""

import pytest
from django.template import Context, Engine, Template, TemplateSyntaxError
from django.urls import NoReverseMatch, reverse

from ops import reversing


def render(source: str, **context) -> str:
    return Template(source).render(Context(context))


def test_url_renders_what_djangos_reverse_gives_for_args_kwargs_and_as():
    assert render("{% url 'quiz:questions' %}") == reverse("quiz:questions")
    assert render("{% url 'quiz:question' slug %}", slug="lora-rank") == reverse("quiz:question", args=["lora-rank"])
    assert render("{% url 'quiz:question-in-attempt' pk=7 n=2 %}") == \
        reverse("quiz:question-in-attempt", kwargs={"pk": 7, "n": 2})
    assert render("{% url 'quiz:attempt' 3 as there %}[{{ there }}]") == f"[{reverse('quiz:attempt', args=[3])}]"
    assert render("{% url 'no-such-view' as there %}[{{ there }}]") == "[]"  # `as` swallows a miss, as Django's does
    with pytest.raises(NoReverseMatch):
        render("{% url 'no-such-view' %}")
    with pytest.raises(TemplateSyntaxError):
        Template("{% url %}")


def test_the_builtin_is_the_cached_tag_in_every_template():
    engine = Engine.get_default()
    assert "ops.templatetags.cached_url" in engine.builtins
    node = Template("{% url 'quiz:questions' %}").nodelist[0]
    assert type(node).__name__ == "CachedURLNode"


def test_an_address_is_reversed_once_and_a_model_argument_every_time(monkeypatch):
    calls = []
    real = reversing.reverse

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(reversing, "reverse", counted)
    reversing._reversed.cache_clear()
    for _ in range(3):
        assert render("{% url 'quiz:question' 'cached-slug' %}") == "/quiz/q/cached-slug/"
    assert calls == ["quiz:question"]

    class Slug:  # not a plain str or int: reversed through str(), which may change
        def __str__(self):
            return "from-str"

    for _ in range(2):
        assert render("{% url 'quiz:question' slug %}", slug=Slug()) == "/quiz/q/from-str/"
    assert calls == ["quiz:question"] * 3


def test_the_cached_address_follows_the_script_prefix():
    from django.urls import set_script_prefix

    try:
        set_script_prefix("/mounted/")
        assert render("{% url 'quiz:questions' %}") == "/mounted/quiz/"
    finally:
        set_script_prefix("/")
    assert render("{% url 'quiz:questions' %}") == "/quiz/"
