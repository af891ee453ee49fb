"""TrainConfig.use_rslora reaches peft: the adapter's scaling becomes alpha / sqrt(r), and the saved
adapter records it (the rsLoRA-vs-LoRA lab depends on both)."""

import json
import math

import pytest

from mlcore.config import ConfigError, TrainConfig
from mlcore.train import build_model, train
from tests.mlcore.conftest import tiny_config


def lora_scalings(model) -> set[float]:
    from peft.tuners.lora import LoraLayer

    return {layer.scaling["default"] for layer in model.modules() if isinstance(layer, LoraLayer)}


@pytest.mark.parametrize(("use_rslora", "expected"), [(False, 8 / 16), (True, 8 / math.sqrt(16))])
def test_the_lora_scaling_follows_use_rslora(use_rslora, expected):
    model, _ = build_model(tiny_config(lora_r=16, lora_alpha=8, use_rslora=use_rslora))
    scalings = lora_scalings(model)
    assert scalings and all(s == pytest.approx(expected) for s in scalings), scalings


def test_a_trained_rslora_adapter_records_the_flag(tmp_path, small_dataset):
    train(tiny_config(max_steps=1, lora_r=4, lora_alpha=4, use_rslora=True), small_dataset, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["use_rslora"] is True
    assert json.loads((tmp_path / "train_config.json").read_text())["use_rslora"] is True


def test_use_rslora_must_be_a_boolean():
    with pytest.raises(ConfigError) as info:
        TrainConfig(use_rslora="yes").validate()
    assert info.value.errors == {"use_rslora": "must be true or false"}
