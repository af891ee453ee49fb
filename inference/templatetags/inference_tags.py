from django import template

from inference import baselines
from inference.views import tokens_context

register = template.Library()


@register.inclusion_tag("inference/_api_tokens.html", takes_context=True)
def api_tokens_section(context):
    """The account page's API tokens section (the account view knows nothing of tokens)."""
    request = context["request"]
    return {**tokens_context(request.user, context.get("new_token", ""), context.get("new_token_obj")),
            "request": request, "csrf_token": context.get("csrf_token")}


@register.inclusion_tag("inference/_baselines.html", takes_context=True)
def baselines_section(context, run):
    """The comparison table of a run's results page: fine-tuned vs zero-/few-shot prompting."""
    return {**baselines.comparison(run), "run": run, "request": context.get("request"),
            "csrf_token": context.get("csrf_token")}
