"""The fixed vocabularies of the question bank, shared by the file loader, the models and the forms."""

from django.db import models

# Every topic, with the fewest published bank questions it must have (tests/quiz/test_topic_coverage.py
# fails below it). The older topics sit a little under what the bank held when the minimums were set,
# so retagging a question or two is fine but losing a topic's coverage is not; the interview areas
# of issue 14 need at least 6 each (evaluation, quantization and tokenization got 6 more for their
# pitfalls and methods). Order matters: pages list topics in this order.
TOPIC_MINIMUMS: dict[str, int] = {
    "fundamentals": 22, "lora": 26, "qlora": 9, "peft": 20, "quantization": 21, "label-masking": 10, "data": 27,
    "hyperparameters": 16, "evaluation": 36, "rag": 4, "prompting": 11, "deployment": 18, "cost": 19,
    "training-dynamics": 26, "alignment": 6, "mlops": 9, "tokenization": 15, "classification": 13, "behavioral": 2,
    "preference-tuning": 6, "distributed-training": 6, "serving": 6, "lora-variants": 6, "synthetic-data": 6,
}
TOPICS: tuple[str, ...] = tuple(TOPIC_MINIMUMS)

# Lab slugs are not repeated here: the lab catalog's files define them (labs.catalog.lab_slugs).


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
