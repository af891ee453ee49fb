"""Spaced repetition: each learner's FSRS card per question, reviewed after every graded answer
or practice rating."""

from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from fsrs import Card, Rating, Scheduler

from quiz.models import Answer, PracticeCard, Question, Review

# Fuzzing spreads reviews of cards learned together over neighbouring days (FSRS's default).
SCHEDULER = Scheduler(enable_fuzzing=True)
# The rating buttons preview the interval each rating gives; without fuzz so the buttons read in order.
PREVIEW_SCHEDULER = Scheduler(enable_fuzzing=False)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)  # fsrs insists on datetime.timezone.utc


def _store(card: PracticeCard, fsrs_card: Card) -> None:
    card.data = fsrs_card.to_dict()
    card.due, card.state, card.stability = fsrs_card.due, int(fsrs_card.state), fsrs_card.stability


@transaction.atomic
def card_review(*, user, question: Question, rating: Rating, answer: Answer | None = None,
                score: float | None = None, now: datetime | None = None) -> Review:
    """Apply one review to the learner's card for this question (created on first review)."""
    now = _utc(now or timezone.now())
    card = PracticeCard.objects.select_for_update().filter(user=user, question=question).first()
    if card is None:
        card = PracticeCard(user=user, question=question)
        before = Card(due=now).to_dict()
    else:
        before = card.data
    after, _ = SCHEDULER.review_card(Card.from_dict(before), Rating(rating), review_datetime=now)
    _store(card, after)
    card.reps += 1
    card.save()
    return Review.objects.create(card=card, answer=answer, rating=int(rating), score=score, reviewed_at=now,
                                 card_before=before, card_after=card.data)


def card_add(*, user, question: Question) -> PracticeCard:
    """Put a question in the learner's practice queue without a review: a new card, due now."""
    now = _utc(timezone.now())
    card, created = PracticeCard.objects.get_or_create(
        user=user, question=question, defaults={"data": {}, "due": now, "state": 1})
    if created:
        _store(card, Card(due=now))
        card.save(update_fields=["data", "due", "state", "stability"])
    return card


@transaction.atomic
def card_override(*, review: Review, rating: Rating, derived: bool = False) -> Review:
    """Replace a review's rating: re-apply it from the card state before that review, at the same time.

    Only the card's latest review can be changed; later reviews were computed from its result.
    """
    card = PracticeCard.objects.select_for_update().get(pk=review.card_id)
    latest = card.reviews.order_by("-reviewed_at", "-id").first()
    if latest is None or latest.pk != review.pk:
        raise ValueError("This card has been reviewed again since; only its latest review can be changed.")
    after, _ = SCHEDULER.review_card(Card.from_dict(review.card_before), Rating(rating), review_datetime=_utc(review.reviewed_at))
    _store(card, after)
    card.save(update_fields=["data", "due", "state", "stability"])
    if derived:
        review.derived_rating = None
        review.score = review.answer.score if review.answer_id else review.score
    elif review.derived_rating is None:
        review.derived_rating = review.rating
    review.rating, review.card_after = int(rating), card.data
    review.save(update_fields=["rating", "derived_rating", "score", "card_after"])
    review.card = card
    return review
