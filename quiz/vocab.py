"""The fixed vocabularies of the question bank, shared by the file loader, the models and the forms."""

from django.db import models

# Every topic, with the fewest published bank questions it must have (tests/quiz/test_topic_coverage.py
# fails below it). The older topics sit a little under what the bank held when the minimums were set,
# so retagging a question or two is fine but losing a topic's coverage is not; the interview areas
# of issue 14 need at least 6 each (evaluation, quantization and tokenization got 6 more for their
# pitfalls and methods); the areas interviewers ask about in 2026 that issue 22 found missing need
# at least 4 each (INTERVIEW_2026_TOPICS). Order matters: pages list topics in this order.
TOPIC_MINIMUMS: dict[str, int] = {
    "fundamentals": 22, "lora": 26, "qlora": 9, "peft": 20, "quantization": 21, "label-masking": 10, "data": 27,
    "hyperparameters": 16, "evaluation": 36, "rag": 4, "prompting": 11, "deployment": 18, "cost": 19,
    "training-dynamics": 26, "alignment": 6, "mlops": 9, "tokenization": 15, "classification": 13, "behavioral": 2,
    "preference-tuning": 6, "distributed-training": 6, "serving": 6, "lora-variants": 6, "synthetic-data": 6,
    "reasoning-traces": 4, "tool-calling": 4, "moe": 4, "long-context": 4, "reward-models": 4, "online-rl": 4,
    "training-performance": 4, "low-precision": 4, "model-merging": 4, "eval-harnesses": 4, "safety": 4,
    "embeddings": 4, "vision-language": 4,
}
# The 2026 interview areas of issue 22, each a topic above; tests/quiz/test_bank_interview_2026.py holds them to 4+.
INTERVIEW_2026_TOPICS: tuple[str, ...] = (
    "reasoning-traces", "tool-calling", "moe", "long-context", "reward-models", "online-rl", "training-performance",
    "low-precision", "model-merging", "eval-harnesses", "safety", "embeddings", "vision-language",
)
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
            # Short labels: the quiz builder lists every topic in two columns, 390 px wide on a phone.
            "lora-variants": "LoRA variants", "moe": "MoE", "online-rl": "Online RL", "low-precision": "QAT and FP4",
            "training-performance": "FSDP2 and kernels", "vision-language": "Vision-language"}.get(
        topic, topic.replace("-", " ").capitalize())
