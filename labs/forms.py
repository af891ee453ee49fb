from django import forms
from django.conf import settings

from labs.access import get_upload_for_user, uploads_for_user, visible_to
from labs.models import DatasetUpload, Lab, Run
from labs.presenters import missing_model_notes_for
from labs.services import build_config, upload_parse
from mlcore.config import ConfigError, ConfigField, TrainConfig, config_fields
from mlcore.data import BUNDLED, LABEL_ORDER, MAX_UPLOAD_BYTES, SPLIT_FRACTIONS, DatasetError
from mlcore.registry import BASE_MODELS, available_user_models

# The launch form's settings are TrainConfig's shown fields, generated from their declarations
# (mlcore.config.setting); fields carry TrainConfig's names, so ConfigError messages land on them.
FORM_CONFIG_FIELDS = [f for f in config_fields() if f.setting.shown]
CONFIG_FIELDS = tuple(f.name for f in FORM_CONFIG_FIELDS)
CHOSEN_HERE = {"base_model", "dataset"}  # choices that depend on this server and the learner, set per form


def config_form_field(f: ConfigField) -> forms.Field:
    """The form field for one TrainConfig setting: label, help and widget from its declaration.
    Ranges are not repeated here: clean() reports TrainConfig.validate()'s messages."""
    common = {"label": f.setting.label, "help_text": f.setting.help}
    if f.kind == "tuple":
        return forms.MultipleChoiceField(choices=[(c, c) for c in f.setting.choices], widget=forms.CheckboxSelectMultiple,
                                         **common)
    if f.setting.choices or f.name in CHOSEN_HERE:
        return forms.ChoiceField(choices=[(c, c) for c in f.setting.choices], **common)
    if f.kind == "bool":
        return forms.BooleanField(required=False, **common)
    if f.kind == "int":
        return forms.IntegerField(required=not f.optional, **common)
    if f.kind == "float":
        return forms.FloatField(required=not f.optional, **common)
    return forms.CharField(required=not f.optional, **common)


def posted_form(**values) -> dict:
    """What a browser posts from the launch form for these settings: every shown field, at
    TrainConfig's default unless `values` says otherwise (an unticked checkbox posts nothing, an
    empty optional field posts ""). Tests and benches post this, so a field added later is posted
    too: hand-written payloads went stale when lora_top_blocks and label_noise came."""
    values = {**TrainConfig().to_dict(), **values}
    data = {}
    for field in FORM_CONFIG_FIELDS:
        value = values[field.name]
        if field.kind == "bool":
            if value:
                data[field.name] = "on"
        elif value is None:
            data[field.name] = ""
        else:
            data[field.name] = list(value) if field.kind == "tuple" else value
    return data


# The TrainConfig part of the launch form, generated; RunForm adds the upload and the parent run.
ConfigForm = type("ConfigForm", (forms.Form,), {f.name: config_form_field(f) for f in FORM_CONFIG_FIELDS})


def base_model_choices() -> list[tuple[str, str]]:
    specs = list(available_user_models())  # only what can load here: a missing model would fail the run
    if settings.LABS_ALLOW_TEST_MODEL:  # the tiny random model: tests only, never a learner's choice
        specs += [spec for spec in BASE_MODELS.values() if not spec.user_visible]
    return [(spec.name, spec.label) for spec in specs]


def dataset_choices(user) -> list[tuple[str, str]]:
    return [(name, f"{name}: {description}") for name, description in BUNDLED.items()] + [
        (upload.dataset_key, f"your upload: {upload}") for upload in uploads_for_user(user).order_by("-created_at")[:50]
    ]


class RunForm(ConfigForm):
    upload = forms.FileField(
        required=False, label="…or upload a dataset",
        help_text='JSONL, one {"text": ..., "label": ...} per line, or CSV with a header row text,label. '
        f"Labels: {', '.join(LABEL_ORDER)}. Split {'/'.join(str(round(100 * f)) for f in SPLIT_FRACTIONS)} into "
        "train/validation/test.",
    )
    continue_from = forms.ModelChoiceField(
        queryset=Run.objects.none(), required=False, label="Continue from",
        empty_label="a fresh LoRA adapter", help_text="Train further one of your finished adapters.",
    )
    field_order = ["base_model", "dataset", "upload"]  # the rest in TrainConfig's order, then continue_from

    def __init__(self, *args, user, lab: Lab, multi_run: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.user, self.lab, self.multi_run = user, lab, multi_run
        self.fields["base_model"].choices = base_model_choices()
        missing = " ".join(f"Not offered: {note}" for note in missing_model_notes_for(user))
        self.fields["base_model"].help_text = missing
        self.fields["base_model"].error_messages["invalid_choice"] = (
            "%(value)s cannot run on this server: its weights are not on disk. " + missing)
        self.fields["dataset"].choices = dataset_choices(user)
        if multi_run:
            del self.fields["continue_from"]
            # What every run of the lab sets itself is shown, not edited.
            for name in self.swept_fields:
                if name in self.fields:
                    self.fields[name].disabled = True
                    self.fields[name].help_text = "Set by each run of this lab (see the table below)."
        else:
            self.fields["continue_from"].queryset = (
                visible_to(user, Run.objects.filter(status=Run.Status.SUCCEEDED, mode=Run.Mode.FINETUNE)).order_by("-pk")
            )

    @property
    def swept_fields(self) -> set[str]:
        overrides = [set(v.get("overrides") or {}) for v in self.lab.variants]
        return set.intersection(*overrides) if overrides else set()

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if not upload:
            return None
        if upload.size > MAX_UPLOAD_BYTES:  # refuse before reading a huge file into memory
            raise forms.ValidationError(
                f"{upload.name}: the file is {upload.size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes."
            )
        try:
            self.upload_examples = upload_parse(raw=upload.read(), filename=upload.name)
        except DatasetError as exc:
            where = f"{upload.name}, line {exc.line}: " if exc.line is not None else f"{upload.name}: "
            raise forms.ValidationError(where + exc.message) from None
        return upload

    def clean(self):
        cleaned = super().clean()
        defaults = TrainConfig().to_dict()
        # A field that did not parse already has its message; check the others against
        # TrainConfig.validate() anyway, so every out-of-range value is reported in one go.
        values = {name: cleaned[name] if name in cleaned else defaults[name] for name in CONFIG_FIELDS}
        values["target_modules"] = tuple(values["target_modules"] or ())
        if cleaned.get("upload"):
            values["dataset"] = "upload"  # the real key exists once the upload is saved
        parent = cleaned.get("continue_from")
        if parent and parent.config.get("base_model") != values["base_model"]:
            self.add_error("continue_from", f"Run {parent.pk} adapts {parent.config.get('base_model')}; choose that base model.")
        variants = self.lab.variants if self.multi_run else [{"label": "", "overrides": {}}]
        for variant in variants:
            try:
                build_config({**values, **(variant.get("overrides") or {})})
            except ConfigError as exc:
                for name, message in exc.errors.items():
                    if name in self.errors:
                        continue
                    message = _sentence(name, message)
                    self.add_error(name if name in self.fields else None,
                                   f"{variant['label']}: {message}" if variant["label"] else message)
        self.config = values
        return cleaned

    @property
    def dataset_upload(self) -> DatasetUpload | None:
        """The existing upload chosen as dataset (a new file is saved by the view)."""
        key = self.cleaned_data.get("dataset", "")
        if self.cleaned_data.get("upload") or not key.startswith("upload:"):
            return None
        return get_upload_for_user(self.user, key.split(":", 1)[1])


def _sentence(name: str, message: str) -> str:
    """ConfigError says "must be ..."; a form error reads better with the setting's label."""
    labels = {f.name: f.setting.label for f in config_fields()}
    return f"{labels.get(name, name.replace('_', ' ').capitalize())} {message}."


def initial_from_config(config: dict) -> dict:
    """The launch form's starting values: a lab preset or a run being cloned, over TrainConfig's
    defaults, so a setting added after the preset or the run was saved starts at its default
    instead of an empty required field the learner cannot see the reason for."""
    config = {**TrainConfig().to_dict(), **config}
    initial = {name: config.get(name) for name in CONFIG_FIELDS}
    initial["target_modules"] = list(config.get("target_modules") or [])
    return initial
