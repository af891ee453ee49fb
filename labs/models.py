from django.conf import settings
from django.db import models
from django.urls import reverse


class Lab(models.Model):
    """One lab of the catalog. The files under labs/catalog/ are the source; `load_labs` syncs them here."""

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField(default=100)
    summary = models.CharField(max_length=300, blank=True)
    goal = models.TextField()
    body_html = models.TextField(blank=True)  # the instructions, markdown rendered and sanitized
    questions = models.JSONField(default=list, blank=True)  # question slugs named by the lab file
    preset = models.JSONField(default=dict)  # TrainConfig fields the launch form starts from
    # Multi-run labs: [{"key", "label", "overrides": {...}, "mode", "shots", "continue_from": key}].
    variants = models.JSONField(default=list, blank=True)
    sweep = models.CharField(max_length=50, blank=True)  # config field a sweep varies (metric-vs-value chart)
    # GGUF exports each fine-tune of this lab is checked at after training: [{"quant", "rounding"}]
    # (labs.training; the 4-bit lab). Empty for most labs.
    quantize = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)  # false once its file is gone (its runs stay)

    class Meta:
        ordering = ["order", "slug"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("labs:lab", args=[self.slug])

    @property
    def is_multi_run(self) -> bool:
        return bool(self.variants)


class WithoutHeavyColumns(models.Manager):
    """The default manager of a model with big JSON columns: they are left out of every query
    unless asked for (`.defer(None)`), so a list never reads megabytes it does not show. Reading a
    left-out attribute still works (one more query for that row)."""

    def get_queryset(self):
        return super().get_queryset().defer(*self.model.HEAVY_FIELDS)


class DatasetUpload(models.Model):
    """A learner's labelled examples, validated by labs.services.upload_parse and kept in the DB so
    a worker on another host can read them. Kept once per learner and content (sha256)."""

    HEAVY_FIELDS = ("examples",)  # up to the 2 MB of a file: the worker reads them, no page does

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataset_uploads")
    filename = models.CharField(max_length=255)
    examples = models.JSONField()  # [{"text", "label"}]
    labels = models.JSONField()  # distinct labels, in mlcore's label order
    created_at = models.DateTimeField(auto_now_add=True)
    # Of the examples as stored: what de-duplicates a repeated upload and counts against the
    # learner's upload budget (UPLOAD_BYTES_PER_USER), and what a list shows.
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    n_examples = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveIntegerField(default=0)

    objects = WithoutHeavyColumns()

    def __str__(self) -> str:
        return f"{self.filename} ({self.n_examples} examples)"

    @property
    def dataset_key(self) -> str:
        return f"upload:{self.pk}"


class RunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=Run.ACTIVE)


class RunGroup(models.Model):
    """The runs of one multi-run lab launch (a sweep or an A/B), compared together."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_groups")
    lab = models.ForeignKey(Lab, null=True, blank=True, on_delete=models.SET_NULL, related_name="groups")
    title = models.CharField(max_length=200)
    sweep = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"group {self.pk}: {self.title}"

    def get_absolute_url(self) -> str:
        return reverse("labs:group", args=[self.pk])


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Mode(models.TextChoices):
        FINETUNE = "finetune", "fine-tune (LoRA)"
        FEWSHOT = "fewshot", "few-shot prompting (no training)"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    lab = models.ForeignKey(Lab, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    group = models.ForeignKey(RunGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    label = models.CharField(max_length=200, blank=True)  # the variant's name inside its group
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FINETUNE)
    shots = models.PositiveSmallIntegerField(default=0)  # few-shot mode: examples put in the prompt
    config = models.JSONField()  # TrainConfig.to_dict() snapshot (continue_from is resolved by the worker)
    upload = models.ForeignKey(DatasetUpload, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    # Continue training this run's adapter; inside a group, the worker is sent the run only once
    # the run it continues from has succeeded.
    continue_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="continuations"
    )
    cloned_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Fair scheduling: a queued run waits here (the outbox) until the dispatcher sends it to a
    # free gpu worker slot; set when its task is sent, cleared when it must be sent again.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # The worker is shutting down: stop after the current step, checkpoint, go back to the queue.
    pause_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)  # times a worker started (or resumed) it
    # What the launch estimated (labs.scheduling): tokens through the model (mlcore.cost) and the
    # seconds of gpu worker time they take here. The daily quota reserves the seconds of queued and
    # running runs; finished runs' tokens against their real durations calibrate the seconds.
    estimated_tokens = models.PositiveBigIntegerField(default=0)
    estimated_s = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    last_seq = models.PositiveIntegerField(default=0)  # seq of the newest RunEvent; bumped under a row lock

    # Results, written once by the worker when the run succeeds.
    metrics = models.JSONField(null=True, blank=True)  # {"test", "zero_shot", "validation", "train"}
    predictions = models.JSONField(default=list, blank=True)  # per test example
    token_view = models.JSONField(default=list, blank=True)  # one training example, token by token

    # Shown only on the run's own page (labs.access.get_run_for_user asks for them): hundreds of
    # rows per run, which the run list, the model menus and /v1/models must not read.
    HEAVY_FIELDS = ("predictions", "token_view")
    objects = WithoutHeavyColumns.from_queryset(RunQuerySet)()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="labs_run_status_heartbeat"),
            models.Index(fields=["owner", "status"], name="labs_run_owner_status"),
            models.Index(fields=["status", "dispatched_at"], name="labs_run_status_dispatched"),
        ]
        # Powers over other learners' runs are given, never implied by is_staff (a question curator
        # is staff): labs.access reads them.
        permissions = [
            ("view_all_runs", "Can see, cancel and export every learner's runs"),
            ("launch_without_limits", "Can launch runs and exports without the per-learner limits"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("labs:run", args=[self.pk])

    @staticmethod
    def group_name_for(pk: int) -> str:
        """The Channels group live notifications of run `pk` go to (writers may hold only the id)."""
        return f"run.{pk}"

    @property
    def group_name(self) -> str:
        return Run.group_name_for(self.pk)

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def artifact_dir(self):
        """Adapter, config and metrics files. Derived from the pk, not stored: every host mounts
        the shared artifacts volume at its own ARTIFACTS_DIR."""
        return settings.ARTIFACTS_DIR / f"run-{self.pk}"

    @property
    def has_adapter(self) -> bool:
        return self.status == self.Status.SUCCEEDED and self.mode == self.Mode.FINETUNE

    @property
    def dataset_label(self) -> str:
        return self.upload.filename if self.upload_id else self.config.get("dataset", "")

    @property
    def test_metrics(self) -> dict | None:
        return (self.metrics or {}).get("test")

    @property
    def zero_shot_metrics(self) -> dict | None:
        return (self.metrics or {}).get("zero_shot")

    def events_after(self, seq: int) -> list[dict]:
        """Events with a sequence number above `seq`, in order, as the browser receives them."""
        return [event.as_message() for event in self.events.filter(seq__gt=seq).order_by("seq")]


class RunEvent(models.Model):
    """One numbered progress event. Written before any broadcast: the DB is what browsers replay."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=16)  # status | log | step | eval | done
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="labs_runevent_run_seq")]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.seq} {self.type}"

    def as_message(self) -> dict:
        return {**self.payload, "type": self.type, "seq": self.seq, "t": self.created_at.isoformat()}


class ArtifactSet(models.Model):
    """One stored version of a run's files of one kind (labs.storage): the adapter (with its
    config, labels, prompt, metrics and predictions) or the resumable checkpoint.

    Every host reads a run's files through these rows, whichever host wrote them: the manifest
    says which files, and the bytes are in ArtifactChunk rows (the default) or in the Django
    storage named "artifacts" (an object store). A set is written first and made `complete`
    last, in one transaction that checks the writer still holds the run; the newest complete
    set of a kind is the current one."""

    class Kind(models.TextChoices):
        ADAPTER = "adapter"
        CHECKPOINT = "checkpoint"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifact_sets")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    version = models.CharField(max_length=64)  # sha256 of the manifest: names the local cache folder
    manifest = models.JSONField()  # {relative name: {"sha256", "size"}}
    backend = models.CharField(max_length=16)  # "database" (ArtifactChunk rows) or "storage"
    attempt = models.PositiveSmallIntegerField(default=0)  # the run's attempt that wrote it (0: imported)
    complete = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["run", "kind", "complete"], name="labs_artifactset_current")]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.kind} {self.version[:12]}"

    @property
    def size(self) -> int:
        return sum(entry["size"] for entry in self.manifest.values())


class ArtifactChunk(models.Model):
    """Up to labs.storage.CHUNK_BYTES of one file of an ArtifactSet kept in the database: a
    checkpoint of tens of MB is several modest rows, never one value that must fit in memory."""

    artifact_set = models.ForeignKey(ArtifactSet, on_delete=models.CASCADE, related_name="chunks")
    name = models.CharField(max_length=255)
    index = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["artifact_set", "name", "index"], name="labs_artifactchunk_part")]

    def __str__(self) -> str:
        return f"{self.artifact_set_id}:{self.name}#{self.index}"
