"""The OpenAI-compatible LLM endpoint the site may call: the quiz's judge and the prompting
baselines' API rows both go through the settings read here (TUNELAB_LLM_*)."""

from django.conf import settings


def llm_configured() -> bool:
    """True when an API key is set. Without one the judge leaves open answers to self-assessment
    and the API baselines are skipped, each saying which variable to set."""
    return bool(settings.LLM_API_KEY)
