"""Training settings are declared once (mlcore.config.setting): the launch form, the finetune
command's options, validate() and the results tables are generated from the declarations."""

from dataclasses import fields

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from labs.forms import RunForm
from labs.management.commands.finetune import Command
from labs.models import Lab
from labs.presenters import config_rows
from mlcore.config import ConfigError, TrainConfig, config_fields


def test_every_train_config_field_has_a_declaration():
    for f in fields(TrainConfig):
        declared = f.metadata.get("setting")
        assert declared is not None, f"{f.name} is declared without setting(...)"
        assert declared.label and declared.help, f.name
    for f in config_fields():
        if f.kind in ("int", "float") and f.setting.check is None:
            assert f.setting.low is not None and f.setting.high is not None, f"{f.name} has no range"
            assert f.problem(f.default) is None, f"{f.name}'s default is outside its own range"


@pytest.mark.parametrize("field", [f for f in config_fields() if f.kind in ("int", "float") and f.setting.check is None],
                         ids=lambda f: f.name)
def test_validate_refuses_a_number_just_outside_each_declared_range(field):
    step = 1 if field.kind == "int" else 1e-9
    for value in (field.setting.high + step, field.setting.low - step):
        with pytest.raises(ConfigError) as info:
            TrainConfig(**{field.name: value}).validate()
        assert set(info.value.errors) == {field.name}
        assert info.value.errors[field.name].startswith("must be a")


@pytest.mark.django_db
def test_the_launch_form_shows_the_declared_settings_with_their_labels_and_help(owner):
    form = RunForm(user=owner, lab=Lab(slug="x", title="x", preset={}, variants=[]))
    shown = [f for f in config_fields() if f.setting.shown]
    assert {f.name for f in shown} <= set(form.fields)
    assert set(form.fields) - {f.name for f in shown} == {"upload", "continue_from"}
    for f in shown:
        assert form.fields[f.name].label == f.setting.label
        if f.name != "base_model":  # which models are not offered here, and why, instead
            assert form.fields[f.name].help_text == f.setting.help
    assert list(form.fields)[:3] == ["base_model", "dataset", "upload"] and list(form.fields)[-1] == "continue_from"
    assert form.fields["schedule"].choices == [(name, name) for name in TrainConfig.__dataclass_fields__["schedule"]
                                                 .metadata["setting"].choices]


def test_the_finetune_command_has_one_option_per_setting_and_keeps_the_short_names():
    parser = Command().create_parser("manage.py", "finetune")
    options = vars(parser.parse_args(["--out", "x", "--lr", "0.002", "--r", "8", "--no-mask", "--targets", "q_proj,v_proj",
                                      "--max-examples", "30", "--zero-shot", "--schedule", "cosine"]))
    overrides = {f.name: options[f.name] for f in config_fields() if options[f.name] is not None}
    assert overrides == {"learning_rate": 0.002, "lora_r": 8, "mask_prompt": False, "target_modules": ("q_proj", "v_proj"),
                         "train_limit": 30, "zero_shot": True, "schedule": "cosine"}
    long_names = vars(parser.parse_args(["--out", "x", "--learning-rate", "0.002", "--lora-r", "8", "--no-mask-prompt"]))
    assert (long_names["learning_rate"], long_names["lora_r"], long_names["mask_prompt"]) == (0.002, 8, False)
    with pytest.raises(CommandError, match="invalid choice: 'step'"):
        parser.parse_args(["--out", "x", "--schedule", "step"])  # choices come from SCHEDULES


def test_the_finetune_command_reports_an_out_of_range_setting_by_name(tmp_path):
    with pytest.raises(CommandError, match="lora_r: must be a whole number from 1 to 256"):
        call_command("finetune", "--out", str(tmp_path), "--r", "0")


def test_the_results_table_shows_the_declared_labels_and_wording():
    rows = dict(config_rows(TrainConfig(train_limit=None, eval_every=0, mask_prompt=False).to_dict()))
    shown = [f for f in config_fields() if f.setting.shown]
    assert list(rows) == [f.setting.label for f in shown]
    assert rows["Training examples"] == "all" and rows["Validate every N steps"] == "each epoch"
    assert rows["Label masking"] == "off" and rows["LoRA r"] == "16"
