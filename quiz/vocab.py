"""The fixed vocabularies of the question bank, shared by the file loader, the models and the forms."""

from django.db import models

# Order matters: pages list topics in this order.
TOPICS: tuple[str, ...] = (
    "fundamentals", "lora", "qlora", "peft", "quantization", "label-masking", "data", "hyperparameters",
    "evaluation", "rag", "prompting", "deployment", "cost", "training-dynamics", "alignment", "mlops",
    "tokenization", "classification", "behavioral",
    "preference-tuning", "distributed-training", "serving", "lora-variants", "synthetic-data",
)

# The lab catalog's slugs; a question with a `lab` links to /labs/<slug>/.
LAB_SLUGS: tuple[str, ...] = (
    "sentiment-lora", "masking-ablation", "rank-sweep", "data-size", "mixed-label", "fewshot-vs-finetune",
    "learning-rate-sweep", "rslora-vs-lora",
)


class Kind(models.TextChoices):
    OPEN = "open", "Open answer"
    SINGLE = "single", "Single choice"
    MULTI = "multi", "Multiple choice"
    NUMERIC = "numeric", "Numeric"


class Difficulty(models.TextChoices):
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"
    SCENARIO = "scenario"
    WORKFLOW = "workflow"
    BEHAVIORAL = "behavioral"


class Status(models.TextChoices):
    DRAFT = "draft"
    REVIEW = "review"
    PUBLISHED = "published"


def topic_label(topic: str) -> str:
    return {"lora": "LoRA", "qlora": "QLoRA", "peft": "PEFT", "rag": "RAG", "mlops": "MLOps",
            "lora-variants": "LoRA variants"}.get(
        topic, topic.replace("-", " ").capitalize())
