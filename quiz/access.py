"""One access helper per owned object; views use these and nothing else to fetch them.

Another learner's attempt, answer, card or interview is a 404, not a 403: its existence is nobody else's business.
"""

from django.http import Http404
from django.shortcuts import get_object_or_404

from quiz.models import Answer, Attempt, Interview, InterviewAnswer, PracticeCard, Question, Review


def _require_login(user) -> None:
    if not user.is_authenticated:
        raise Http404


def get_published_question(slug: str) -> Question:
    """Drafts and questions in review are invisible to learners (staff preview them in the admin)."""
    return get_object_or_404(Question.objects.published().prefetch_related("choices"), slug=slug)


def get_attempt_for_user(user, pk) -> Attempt:
    _require_login(user)
    return get_object_or_404(Attempt, pk=pk, user=user)


def get_answer_for_user(user, pk) -> Answer:
    _require_login(user)
    return get_object_or_404(Answer.objects.select_related("attempt", "question"), pk=pk, attempt__user=user)


def get_card_for_user(user, pk) -> PracticeCard:
    _require_login(user)
    return get_object_or_404(PracticeCard.objects.select_related("question").for_learners(), pk=pk, user=user)


def get_review_for_user(user, pk) -> Review:
    _require_login(user)
    return get_object_or_404(Review.objects.select_related("card", "card__question"), pk=pk, card__user=user)


def get_interview_for_user(user, pk) -> Interview:
    _require_login(user)
    return get_object_or_404(Interview, pk=pk, user=user)


def get_interview_answer_for_user(user, pk) -> InterviewAnswer:
    _require_login(user)
    return get_object_or_404(InterviewAnswer.objects.select_related("interview", "question"), pk=pk, interview__user=user)
