import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str
from tests.servers import ROOT


@pytest.mark.parametrize("value", ["maybe", "2", "tru"])
def test_env_bool_rejects_words_that_are_not_booleans(monkeypatch, value):
    monkeypatch.setenv("X_FLAG", value)
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG", False)


@pytest.mark.parametrize("value,expected", [("true", True), ("0", False), ("YES", True), ("off", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("X_FLAG", value)
    assert env_bool("X_FLAG", not expected) is expected


def test_env_int_rejects_text_and_out_of_range(monkeypatch):
    monkeypatch.setenv("X_NUM", "ten")
    with pytest.raises(ImproperlyConfigured, match="integer"):
        env_int("X_NUM", 1)
    monkeypatch.setenv("X_NUM", "0")
    with pytest.raises(ImproperlyConfigured, match=">= 1"):
        env_int("X_NUM", 1, min_value=1)


def test_env_float_and_list_reject_bad_values(monkeypatch):
    monkeypatch.setenv("X_F", "1,5")
    with pytest.raises(ImproperlyConfigured):
        env_float("X_F", 1.0)
    monkeypatch.setenv("X_L", "a,,b")
    with pytest.raises(ImproperlyConfigured, match="empty"):
        env_list("X_L", [])


def test_unset_or_blank_values_use_the_default(monkeypatch):
    monkeypatch.setenv("X_BLANK", "  ")
    assert env_int("X_BLANK", 7) == 7
    assert env_str("X_UNSET_FOR_SURE", "d") == "d"
    with pytest.raises(ImproperlyConfigured, match="must be set"):
        env_str("X_UNSET_FOR_SURE", required=True)


def _load_settings(env_overrides: dict, code: str = "") -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(env_overrides)
    code = code or "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, DJANGO_SETTINGS_MODULE="config.settings"),
                          capture_output=True, text=True, timeout=60)


def test_production_mode_refuses_to_start_without_a_secret_key():
    result = _load_settings({"DJANGO_DEBUG": "false", "DJANGO_ALLOWED_HOSTS": "example.org"})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_debug_is_off_by_default_and_serves_this_machine_with_a_generated_key(tmp_path):
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.DEBUG, settings.ALLOWED_HOSTS, settings.SECURE_SSL_REDIRECT, len(settings.SECRET_KEY))")
    result = _load_settings({"TUNELAB_VAR_DIR": str(tmp_path)}, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "False"
    assert "'localhost'" in result.stdout and result.stdout.split()[-2] == "False"
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50 and oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"
    # Generated once: a second start reads the same key.
    again = _load_settings({"TUNELAB_VAR_DIR": str(tmp_path)}, "import django; django.setup(); "
                           "from django.conf import settings; print(settings.SECRET_KEY)")
    assert again.stdout.strip() == key


def test_production_mode_starts_with_both_set():
    result = _load_settings({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "example.org"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_bad_debug_value_stops_start_up():
    result = _load_settings({"DJANGO_DEBUG": "perhaps"})
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in result.stderr
