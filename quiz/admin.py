"""Curator tools: edit, review and publish questions; every save is recorded as a QuestionRevision."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse, HttpResponseNotAllowed
from django.urls import path, reverse
from django.utils.html import format_html

from content.markdown import render_markdown
from labs.catalog import lab_slugs
from quiz.bank import BankError, validate_choices
from quiz.models import Answer, Attempt, Choice, JudgeCall, PracticeCard, Question, QuestionRevision, Quiz, QuizItem
from quiz.selectors import question_canonical
from quiz.vocab import TOPICS, Kind, Status, topic_label

# The review workflow: a draft goes to review before it can be published; unpublishing is always allowed.
TRANSITIONS = {
    Status.DRAFT: {Status.DRAFT, Status.REVIEW},
    Status.REVIEW: {Status.REVIEW, Status.DRAFT, Status.PUBLISHED},
    Status.PUBLISHED: {Status.PUBLISHED, Status.REVIEW, Status.DRAFT},
}


def normalise_newlines(data: dict) -> dict:
    """LF line ends in every text value. Browsers submit textareas with CRLF (the HTML spec says
    so); stored as sent, every save of a file-loaded question would "change" each field."""
    for name, value in data.items():
        if isinstance(value, str) and "\r" in value:
            data[name] = value.replace("\r\n", "\n").replace("\r", "\n")
    return data


def question_preview_html(prompt: str, hint: str, answer: str) -> str:
    """The admin's preview, rendered by the site's own markdown renderer and sanitizer."""
    return format_html('<h3>Question</h3>{}<h3>Hint</h3>{}<h3>Answer</h3>{}',
                       render_markdown(prompt), render_markdown(hint), render_markdown(answer))


class RubricField(forms.CharField):
    """The rubric as one point per line."""

    widget = forms.Textarea(attrs={"rows": 6})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        lines = [line.strip() for line in (value or "").splitlines() if line.strip()]
        if not 3 <= len(lines) <= 6:
            raise ValidationError("Write 3 to 6 rubric points, one per line.")
        return lines


class QuestionAdminForm(forms.ModelForm):
    topics = forms.MultipleChoiceField(choices=[(t, topic_label(t)) for t in TOPICS], widget=forms.CheckboxSelectMultiple)
    rubric = RubricField(help_text="3 to 6 points a good answer covers, one per line.")
    lab = forms.ChoiceField(required=False, choices=lambda: [("", "—")] + [(s, s) for s in lab_slugs()],
                            help_text="The lab that proves the answer (labs/catalog).")

    class Meta:
        model = Question
        fields = ("slug", "title", "status", "kind", "difficulty", "topics", "very_often", "lab", "prompt", "hint",
                  "answer", "rubric", "numeric_answer", "tolerance", "unit")

    def clean_topics(self):
        chosen = self.cleaned_data["topics"]
        # Keep the existing order for topics that stay (files list the main topic first).
        current = [t for t in (self.instance.topics or []) if t in chosen]
        return current + [t for t in chosen if t not in current]

    def clean_status(self):
        new = self.cleaned_data["status"]
        if self.instance.pk:
            old = Question.objects.filter(pk=self.instance.pk).values_list("status", flat=True).first()
            if old and new not in TRANSITIONS[Status(old)]:
                raise ValidationError(f"A {old} question goes to review before it is published.")
        elif new == Status.PUBLISHED:
            raise ValidationError("A new question starts as a draft or in review.")
        return new

    def clean(self):
        data = normalise_newlines(super().clean())
        if data.get("kind") == Kind.NUMERIC:
            if data.get("numeric_answer") is None or data.get("tolerance") is None:
                raise ValidationError("Numeric questions need a numeric answer and a tolerance.")
            if data["tolerance"] < 0:
                self.add_error("tolerance", "Must be >= 0.")
        return data


class ChoiceAdminForm(forms.ModelForm):
    class Meta:
        # Django's default 40x10 textareas put the inline table 600 px past a 1280 px screen.
        widgets = {"text": forms.Textarea(attrs={"rows": 2, "cols": 34}),
                   "explanation": forms.Textarea(attrs={"rows": 2, "cols": 34})}

    def clean(self):
        return normalise_newlines(super().clean())


class ChoiceFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        kind = self.instance.kind
        rows = [f.cleaned_data for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if kind in (Kind.SINGLE, Kind.MULTI):
            try:
                validate_choices("question", kind, [{"text": r.get("text", ""), "correct": bool(r.get("correct")),
                                                     "explanation": r.get("explanation", "")} for r in rows])
            except BankError as exc:
                raise ValidationError(exc.reason) from None
        elif rows:
            raise ValidationError(f"{Kind(kind).label} questions have no choices: delete them.")


class ChoiceInline(admin.TabularInline):
    model = Choice
    form = ChoiceAdminForm
    formset = ChoiceFormSet
    extra = 0
    fields = ("position", "text", "correct", "explanation")


class RevisionInline(admin.TabularInline):
    model = QuestionRevision
    extra = 0
    can_delete = False
    fields = ("created_at", "user", "source", "changed_fields")
    readonly_fields = fields
    verbose_name_plural = "history (who changed what)"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="changed")
    def changed_fields(self, revision):
        return ", ".join(revision.changes) or "—"


class TopicFilter(admin.SimpleListFilter):
    title = "topic"
    parameter_name = "topic"

    def lookups(self, request, model_admin):
        return [(t, topic_label(t)) for t in TOPICS]

    def queryset(self, request, queryset):
        return queryset.with_topic(self.value()) if self.value() else queryset


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    form = QuestionAdminForm
    list_display = ("title", "slug", "kind", "difficulty", "status", "very_often", "lab", "updated_at")
    list_filter = (TopicFilter, "difficulty", "kind", "status", "very_often", "lab")
    search_fields = ("slug", "title", "prompt", "answer")
    prepopulated_fields = {"slug": ("title",)}
    readonly_fields = ("preview", "created_at", "updated_at")
    inlines = [ChoiceInline, RevisionInline]
    actions = ["publish", "send_to_review", "unpublish"]
    fieldsets = (
        (None, {"fields": ("slug", "title", "status", "kind", "difficulty", "topics", "very_often", "lab")}),
        ("Content (markdown)", {"fields": ("prompt", "hint", "answer", "rubric")}),
        ("Numeric answer", {"fields": ("numeric_answer", "tolerance", "unit"), "classes": ("collapse",)}),
        ("Preview (sanitized, as learners see it; updates as you type)", {"fields": ("preview",)}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    class Media:
        js = ("js/markdown-preview.js",)  # live preview: re-rendered by the server as the curator types

    def get_urls(self):
        preview = path("preview/", self.admin_site.admin_view(self.preview_view), name="quiz_question_preview")
        return [preview, *super().get_urls()]

    def preview_view(self, request):
        """POST prompt/hint/answer -> the sanitized HTML learners would see (staff only, via admin_view)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        data = normalise_newlines({name: request.POST.get(name, "") for name in ("prompt", "hint", "answer")})
        return HttpResponse(question_preview_html(**data))

    @admin.display(description="preview")
    def preview(self, question):
        body = question_preview_html(question.prompt, question.hint, question.answer) if question and question.pk else ""
        return format_html('<div class="quiz-preview" id="quiz-preview" data-url="{}" aria-live="polite">{}</div>',
                           reverse("admin:quiz_question_preview"), body)

    def save_model(self, request, obj, form, change):
        if change:
            request._quiz_before = question_canonical(Question.objects.prefetch_related("choices").get(pk=obj.pk))
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        question = form.instance
        after = question_canonical(Question.objects.prefetch_related("choices").get(pk=question.pk))
        before = getattr(request, "_quiz_before", None)
        if before is None:
            changes = {"created": [None, question.slug]}
        else:
            changes = {name: [before[name], after[name]] for name in after if before[name] != after[name]}
        if changes:
            QuestionRevision.objects.create(question=question, user=request.user, source=QuestionRevision.Source.ADMIN,
                                            changes=changes)

    def _set_status(self, request, queryset, status: Status, allowed_from: set[Status]):
        changed = skipped = 0
        for question in queryset:
            if question.status == status:
                continue
            if question.status not in allowed_from:
                skipped += 1
                continue
            QuestionRevision.objects.create(question=question, user=request.user, source=QuestionRevision.Source.ACTION,
                                            changes={"status": [question.status, status]})
            question.status = status
            question.save(update_fields=["status", "updated_at"])
            changed += 1
        self.message_user(request, f"{changed} question(s) now {status}.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} draft(s) skipped: send them to review first.", messages.WARNING)

    @admin.action(description="Publish selected questions (from review)")
    def publish(self, request, queryset):
        self._set_status(request, queryset, Status.PUBLISHED, {Status.REVIEW})

    @admin.action(description="Send selected questions to review")
    def send_to_review(self, request, queryset):
        self._set_status(request, queryset, Status.REVIEW, {Status.DRAFT, Status.PUBLISHED})

    @admin.action(description="Unpublish selected questions (back to draft)")
    def unpublish(self, request, queryset):
        self._set_status(request, queryset, Status.DRAFT, {Status.REVIEW, Status.PUBLISHED})


class QuizItemInline(admin.TabularInline):
    model = QuizItem
    extra = 1
    autocomplete_fields = ("question",)
    fields = ("position", "question")


@admin.register(Quiz)
class QuizAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "time_limit_minutes")
    search_fields = ("title", "slug")
    prepopulated_fields = {"slug": ("title",)}
    inlines = [QuizItemInline]


@admin.register(QuestionRevision)
class QuestionRevisionAdmin(admin.ModelAdmin):
    list_display = ("question", "user", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("question__slug",)
    readonly_fields = ("question", "user", "source", "changes", "created_at")

    def has_add_permission(self, request):
        return False


class AnswerInline(admin.TabularInline):
    model = Answer
    extra = 0
    can_delete = False
    fields = ("position", "question", "method", "score", "saved_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "state", "score", "started_at", "submitted_at")
    list_filter = ("state",)
    search_fields = ("user__username", "title")
    readonly_fields = ("user", "quiz", "started_at", "deadline", "submitted_at", "score", "options")
    inlines = [AnswerInline]


@admin.register(PracticeCard)
class PracticeCardAdmin(admin.ModelAdmin):
    list_display = ("question", "user", "due", "state", "stability", "reps")
    search_fields = ("user__username", "question__slug")
    readonly_fields = ("user", "question", "data", "due", "state", "stability", "reps")


@admin.register(JudgeCall)
class JudgeCallAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "outcome", "model", "prompt_tokens", "completion_tokens", "latency_ms")
    list_filter = ("outcome",)
    readonly_fields = ("user", "answer", "created_at", "outcome", "model", "prompt_tokens", "completion_tokens",
                       "latency_ms", "detail")
