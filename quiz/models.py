from datetime import datetime

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from labs import catalog
from ops.reversing import cached_reverse
from quiz.vocab import Difficulty, Kind, Status

# A card counts as mastered once FSRS holds it in the Review state with a stability of at least
# this many days: the model then predicts >= 90% recall three weeks after the last review.
MASTERED_STABILITY_DAYS = 21.0
FSRS_STATE_REVIEW = 2  # fsrs.State.Review; kept here so queries need no fsrs import


class QuestionQuerySet(models.QuerySet):
    def published(self):
        """Only published questions reach learners: lists, pages, quizzes and practice."""
        return self.filter(status=Status.PUBLISHED)

    def with_topic(self, topic: str):
        # Topics are a JSON list; matching the quoted JSON string works on SQLite and Postgres and
        # cannot confuse "lora" with "qlora".
        return self.filter(topics__icontains=f'"{topic}"')

    def search(self, text: str):
        text = text.strip()
        if not text:
            return self
        return self.filter(models.Q(title__icontains=text) | models.Q(prompt__icontains=text)
                           | models.Q(answer__icontains=text) | models.Q(slug__icontains=text))


class Question(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    difficulty = models.CharField(max_length=15, choices=Difficulty.choices)
    topics = models.JSONField(default=list, help_text="Ordered list from the fixed topic vocabulary.")
    very_often = models.BooleanField("asked very often", default=False)
    # A lab catalog slug (labs.catalog.lab_slugs), checked by the bank loader and the admin form;
    # not model choices, so a new lab file needs no migration here.
    lab = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    hint = models.TextField()
    rubric = models.JSONField(default=list, help_text="3 to 6 points a good answer covers.")
    prompt = models.TextField(help_text="Markdown: the '## Question' section.")
    answer = models.TextField(help_text="Markdown: the '## Answer' section (the model answer).")
    numeric_answer = models.FloatField(null=True, blank=True)
    tolerance = models.FloatField(null=True, blank=True, help_text="Absolute tolerance for numeric answers.")
    unit = models.CharField(max_length=60, blank=True)
    # What an interviewer asks next once the learner has answered (open questions; the mock
    # interview picks one). Plain strings, in the order the bank file lists them.
    follow_ups = models.JSONField(default=list, blank=True,
                                  help_text="Follow-up questions an interviewer may ask after the answer.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = QuestionQuerySet.as_manager()

    class Meta:
        ordering = ["title"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return cached_reverse("quiz:question", args=[self.slug])  # (the question list links 25 a page)

    @property
    def is_choice(self) -> bool:
        return self.kind in (Kind.SINGLE, Kind.MULTI)

    @property
    def lab_url(self) -> str:
        return catalog.lab_url(self.lab) if self.lab else ""


class Choice(models.Model):
    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="choices")
    position = models.PositiveSmallIntegerField(default=0)
    text = models.TextField()
    correct = models.BooleanField(default=False)
    explanation = models.TextField()

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return self.text[:80]


class QuestionRevision(models.Model):
    """Who changed what on a question, and when: admin saves, bulk actions and bank loads."""

    class Source(models.TextChoices):
        ADMIN = "admin"
        ACTION = "action", "bulk action"
        LOAD_BANK = "load_bank", "load_bank"

    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="revisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    source = models.CharField(max_length=12, choices=Source.choices)
    changes = models.JSONField(default=dict, help_text="{field: [old, new]}")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.question.slug}: {', '.join(self.changes) or 'no change'}"


class Quiz(models.Model):
    """A curated quiz: a fixed, ordered question list (seeded from quiz/curated.yaml, editable in admin)."""

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    time_limit_minutes = models.PositiveIntegerField(null=True, blank=True)
    questions = models.ManyToManyField(Question, through="QuizItem", related_name="quizzes")

    class Meta:
        ordering = ["title"]
        verbose_name_plural = "quizzes"

    def __str__(self):
        return self.title

    def published_questions(self) -> list[Question]:
        return [item.question for item in self.items.select_related("question").filter(
            question__status=Status.PUBLISHED)]


class QuizItem(models.Model):
    quiz = models.ForeignKey(Quiz, on_delete=models.CASCADE, related_name="items")
    question = models.ForeignKey(Question, on_delete=models.CASCADE)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["quiz", "question"], name="quiz_item_unique_question")]

    def __str__(self):
        return f"{self.quiz_id}#{self.position}"


class Attempt(models.Model):
    """One learner taking one quiz; lives in the DB so a reload (or another device) resumes it."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        SUBMITTED = "submitted", "waiting for self-assessment"
        GRADED = "graded"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quiz_attempts")
    quiz = models.ForeignKey(Quiz, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts")
    title = models.CharField(max_length=200)
    options = models.JSONField(default=dict, blank=True, help_text="How a built quiz was built.")
    time_limit_minutes = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    score = models.FloatField(null=True, blank=True, help_text="Mean score of the graded answers, 0 to 1.")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"{self.title} ({self.user})"

    def get_absolute_url(self):
        if self.is_open:
            return reverse("quiz:attempt", args=[self.pk])
        return reverse("quiz:results", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.state == self.State.IN_PROGRESS

    def is_expired(self, now: datetime | None = None) -> bool:
        """Past its time limit: answers are no longer accepted and the next visit submits it."""
        return self.deadline is not None and (now or timezone.now()) >= self.deadline

    def seconds_left(self) -> int | None:
        if self.deadline is None:
            return None
        return max(0, int((self.deadline - timezone.now()).total_seconds()))


class Answer(models.Model):
    class Method(models.TextChoices):
        NONE = "", "not graded"
        AUTO = "auto", "automatic"
        JUDGE = "judge", "LLM judge"
        SELF = "self", "self-assessment"
        SELF_PENDING = "self_pending", "waiting for self-assessment"

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="answers")
    position = models.PositiveSmallIntegerField()
    text = models.TextField(blank=True, help_text="Free text or the number as typed; stored as typed.")
    selected = models.JSONField(default=list, blank=True, help_text="Ids of the selected choices.")
    saved_at = models.DateTimeField(null=True, blank=True)
    method = models.CharField(max_length=12, choices=Method.choices, default=Method.NONE, blank=True)
    score = models.FloatField(null=True, blank=True)
    feedback = models.TextField(blank=True)
    points = models.JSONField(default=list, blank=True,
                              help_text="Per rubric point: {index, covered, comment} (judge or self-assessment).")
    note = models.CharField(max_length=300, blank=True, help_text="Why grading fell back, shown to the learner.")
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "position"], name="answer_unique_position"),
            models.UniqueConstraint(fields=["attempt", "question"], name="answer_unique_question"),
        ]

    def __str__(self):
        return f"{self.attempt_id}#{self.position}"

    @property
    def is_answered(self) -> bool:
        return bool(self.text.strip() or self.selected)


class PracticeCardQuerySet(models.QuerySet):
    def due_by(self, when: datetime):
        return self.filter(due__lte=when)

    def mastered(self):
        return self.filter(state=FSRS_STATE_REVIEW, stability__gte=MASTERED_STABILITY_DAYS)

    def for_learners(self):
        return self.filter(question__status=Status.PUBLISHED)


class PracticeCard(models.Model):
    """The FSRS card of one learner for one question; `data` is fsrs's Card.to_dict()."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="practice_cards")
    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="cards")
    data = models.JSONField()
    # Copies of fields inside `data`, as columns so queues and progress pages can filter on them.
    due = models.DateTimeField(db_index=True)
    state = models.PositiveSmallIntegerField()
    stability = models.FloatField(null=True, blank=True)
    reps = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PracticeCardQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "question"], name="card_unique_user_question")]

    def __str__(self):
        return f"{self.user} / {self.question.slug}"

    @property
    def is_mastered(self) -> bool:
        return self.state == FSRS_STATE_REVIEW and (self.stability or 0) >= MASTERED_STABILITY_DAYS

    @property
    def is_new(self) -> bool:
        return self.reps == 0


class Review(models.Model):
    """One FSRS review of a card, with the card before and after, so a rating can be overridden."""

    card = models.ForeignKey(PracticeCard, on_delete=models.CASCADE, related_name="reviews")
    answer = models.OneToOneField(Answer, null=True, blank=True, on_delete=models.SET_NULL, related_name="review")
    rating = models.PositiveSmallIntegerField()
    derived_rating = models.PositiveSmallIntegerField(null=True, blank=True,
                                                      help_text="The rating the grade gave, if the learner overrode it.")
    score = models.FloatField(null=True, blank=True)
    reviewed_at = models.DateTimeField()
    card_before = models.JSONField()
    card_after = models.JSONField()

    class Meta:
        ordering = ["reviewed_at", "id"]

    def __str__(self):
        return f"{self.card} rated {self.rating}"

    @property
    def rating_name(self) -> str:
        return {1: "Again", 2: "Hard", 3: "Good", 4: "Easy"}.get(self.rating, "?")


class JudgeCall(models.Model):
    """Every LLM judge request: the per-user hourly rate limit counts these rows, and they show the cost."""

    class Outcome(models.TextChoices):
        OK = "ok"
        TIMEOUT = "timeout"
        API_ERROR = "api_error", "API error"
        MALFORMED = "malformed", "malformed verdict"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judge_calls")
    answer = models.ForeignKey(Answer, null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_calls")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    model = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.user} {self.outcome} {self.created_at:%Y-%m-%d %H:%M}"


class Interview(models.Model):
    """A mock interview: open questions asked one at a time under a clock, each possibly followed by
    one follow-up, graded at the end (LLM judge or the learner's own ticks) into a report.

    The clock lives here and on the current answer, not in the browser: a reload, another tab or
    coming back tomorrow shows the same time left (pausing stops it)."""

    class Level(models.TextChoices):
        BEGINNER = "beginner"
        INTERMEDIATE = "intermediate"
        ADVANCED = "advanced"
        SCENARIO = "scenario"
        FULL = "full", "Full loop"

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "in progress"
        FINISHED = "finished"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="interviews")
    level = models.CharField(max_length=12, choices=Level.choices)
    seconds_per_question = models.PositiveIntegerField(default=180)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True, help_text="Set while the clock is stopped.")
    score = models.FloatField(null=True, blank=True, help_text="Mean score of the graded answers, 0 to 1.")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"{self.get_level_display()} interview ({self.user})"

    def get_absolute_url(self):
        return reverse("quiz:interview" if self.is_open else "quiz:interview-report", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.state == self.State.IN_PROGRESS

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None

    @property
    def title(self) -> str:
        return f"Mock interview · {self.get_level_display()}"


class InterviewAnswer(models.Model):
    """One question of an interview: the answer, the follow-up asked and its answer, and the grade.

    `stage` says what the learner is being asked now; the clock of that stage is `clock_started_at`
    (None until shown, and while paused) plus the seconds already used before a pause."""

    class Stage(models.TextChoices):
        WAITING = "waiting"  # not reached yet
        QUESTION = "question"
        FOLLOW_UP = "follow_up", "follow-up"
        DONE = "done"

    class FollowUpSource(models.TextChoices):
        NONE = "", "none"
        BANK = "bank", "from the question bank"
        LLM = "llm", "asked by the LLM interviewer"

    interview = models.ForeignKey(Interview, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="interview_answers")
    position = models.PositiveSmallIntegerField()
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.WAITING)
    clock_started_at = models.DateTimeField(null=True, blank=True)
    used_seconds = models.PositiveIntegerField(default=0, help_text="Clock time of this stage used before a pause.")
    text = models.TextField(blank=True)
    timed_out = models.BooleanField(default=False)
    skipped = models.BooleanField(default=False)
    follow_up = models.TextField(blank=True, help_text="The follow-up question asked.")
    follow_up_source = models.CharField(max_length=4, choices=FollowUpSource.choices, blank=True, default="")
    follow_up_text = models.TextField(blank=True)
    follow_up_timed_out = models.BooleanField(default=False)
    saved_at = models.DateTimeField(null=True, blank=True)
    # Grading: the same shape as a quiz Answer's (method values are Answer.Method's).
    method = models.CharField(max_length=12, blank=True, default="")
    score = models.FloatField(null=True, blank=True)
    points = models.JSONField(default=list, blank=True, help_text="Per rubric point: {index, covered, comment}.")
    feedback = models.TextField(blank=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why it is not graded yet, shown to the learner.")
    graded_at = models.DateTimeField(null=True, blank=True)
    review = models.OneToOneField(Review, null=True, blank=True, on_delete=models.SET_NULL, related_name="interview_answer")

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["interview", "position"], name="interview_answer_unique_position"),
            models.UniqueConstraint(fields=["interview", "question"], name="interview_answer_unique_question"),
        ]

    def __str__(self):
        return f"interview {self.interview_id}#{self.position}"

    @property
    def is_answered(self) -> bool:
        return bool(self.text.strip())

    @property
    def is_graded(self) -> bool:
        return self.score is not None
