from django.conf import settings
from django.db import models


class PingJob(models.Model):
    """A diagnostics job: proves web -> Redis -> worker -> channel layer -> browser works."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    steps = models.PositiveSmallIntegerField(default=5)
    worker_host = models.CharField(max_length=255, blank=True)
    # Events are numbered by their position (seq = index + 1); the DB copy is what late
    # browsers replay from, the channel layer only carries the fast notification.
    events = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"ping {self.pk} ({self.status})"

    def events_after(self, seq: int) -> list[dict]:
        """Events with a sequence number above `seq`, in order."""
        return [dict(event, seq=i + 1) for i, event in enumerate(self.events) if i + 1 > seq]

    @property
    def group_name(self) -> str:
        return f"ping.{self.pk}"
