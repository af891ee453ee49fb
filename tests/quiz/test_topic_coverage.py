"""Topic coverage is data: quiz.vocab.TOPIC_MINIMUMS says how many published questions each topic
needs, and the bank files must meet every minimum."""

from collections import Counter

from quiz.bank import BANK_DIR, QuestionData, read_bank
from quiz.vocab import TOPIC_MINIMUMS, TOPICS


def shortfalls(questions: list[QuestionData], minimums: dict[str, int]) -> list[str]:
    """'topic: N published, needs M' for every topic below its minimum (drafts do not count)."""
    counts = Counter(topic for q in questions if q.status == "published" for topic in q.topics)
    return [f"{topic}: {counts[topic]} published, needs {minimum}"
            for topic, minimum in minimums.items() if counts[topic] < minimum]


def question(slug: str, topics: list[str], status: str = "published") -> QuestionData:
    return QuestionData(slug=slug, title=slug, kind="open", difficulty="beginner", topics=topics, very_often=False,
                        status=status, hint="h", rubric=["a", "b", "c"], prompt="p", answer="a")


def test_every_topic_has_a_positive_minimum_declared_once():
    assert TOPICS == tuple(TOPIC_MINIMUMS)
    assert all(isinstance(n, int) and n >= 1 for n in TOPIC_MINIMUMS.values())


def test_the_issue_14_interview_areas_need_at_least_six_questions_each():
    areas = ("preference-tuning", "distributed-training", "serving", "lora-variants", "synthetic-data")
    assert all(TOPIC_MINIMUMS[area] >= 6 for area in areas)


def test_a_topic_below_its_minimum_is_reported_with_its_count_and_drafts_do_not_count():
    questions = [question("a", ["lora", "serving"]), question("b", ["lora"]), question("c", ["serving"], status="draft")]
    assert shortfalls(questions, {"lora": 2, "serving": 2, "rag": 1}) == [
        "serving: 1 published, needs 2", "rag: 0 published, needs 1"]
    assert shortfalls(questions, {"lora": 2, "serving": 1}) == []


def test_the_bank_meets_every_topic_minimum():
    questions, errors = read_bank(BANK_DIR)
    assert not errors, errors
    missing = shortfalls(questions, TOPIC_MINIMUMS)
    assert not missing, "topics below their minimum (quiz/vocab.py TOPIC_MINIMUMS):\n" + "\n".join(missing)
