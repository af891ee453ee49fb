import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "tl_"


def hash_token(raw: str) -> str:
    """SHA-256 of the token. Tokens are 256 random bits, so a fast hash is enough (no salt or
    key stretching needed, unlike passwords) and lets us look a token up by its hash."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A per-user API token. Only its hash is stored: the token is shown once, at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    token_hash = models.CharField(max_length=64, unique=True)
    # The first characters, so a learner can tell tokens apart in a list without the secret.
    display_prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    @classmethod
    def issue(cls, *, user, name: str) -> tuple["ApiToken", str]:
        """A new token row and the raw token, which is never stored and cannot be shown again."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, token_hash=hash_token(raw), display_prefix=raw[:10])
        return token, raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class BaselineResult(models.Model):
    """One row of a run's comparison table: a method evaluated on the run's test split."""

    class Method(models.TextChoices):
        FINETUNED = "finetuned", "Fine-tuned (this run)"
        ZERO_SHOT_LOCAL = "zero-shot-local", "Zero-shot, local base model"
        FEW_SHOT_LOCAL = "few-shot-local", "Few-shot, local base model"
        ZERO_SHOT_API = "zero-shot-api", "Zero-shot, LLM API"
        FEW_SHOT_API = "few-shot-api", "Few-shot, LLM API"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"  # e.g. an API row without a configured key

    run = models.ForeignKey("labs.Run", on_delete=models.CASCADE, related_name="baselines")
    method = models.CharField(max_length=20, choices=Method.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    k = models.PositiveSmallIntegerField(default=0)  # examples in the prompt (0 = zero-shot)
    model_name = models.CharField(max_length=200, blank=True)  # base model or API model
    endpoint = models.CharField(max_length=300, blank=True)  # "local", or the API's base URL
    is_external = models.BooleanField(default=False)  # the reviews leave this server
    n = models.PositiveIntegerField(default=0)  # test examples evaluated
    accuracy = models.FloatField(null=True, blank=True)
    macro_f1 = models.FloatField(null=True, blank=True)
    unparseable = models.PositiveIntegerField(default=0)  # replies naming no label: counted wrong
    latency_p50_ms = models.FloatField(null=True, blank=True)  # per classification
    latency_p95_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)  # in total, over the n examples
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_per_1000 = models.FloatField(null=True, blank=True)  # USD, from the configured prices
    compute_s_per_1000 = models.FloatField(null=True, blank=True)  # local rows: busy seconds on this machine
    details = models.JSONField(default=dict, blank=True)  # metrics, examples used, sample replies
    message = models.TextField(blank=True)  # why a row failed or was skipped
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "method"], name="one_baseline_per_run_method")]
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.method} ({self.status})"
