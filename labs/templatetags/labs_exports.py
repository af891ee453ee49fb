from django import template

from labs import exports, presenters

register = template.Library()


@register.inclusion_tag("labs/_gguf_export.html", takes_context=True)
def gguf_export_panel(context, run):
    """The results page's "Download for llama.cpp / Ollama" panel (a run with a trained adapter)."""
    return {"run": run, "gguf": exports.gguf_panel(run), "request": context.get("request"),
            "csrf_token": context.get("csrf_token"), "agreement": presenters.gguf_agreement_rows()}
