"""var/ (database with sessions, secret key, artifacts) is this account's alone, from the first instant."""

import json
import os
import stat
import subprocess
import sys

from tests.servers import ROOT

# Imports the settings in a fresh process with umask 0 (the worst case: files are created as
# their mode asks, nothing masked), and records the key file's mode whenever it is chmod-ed or
# linked into place: the moments at which another account could already have opened it.
LOAD_SETTINGS = r"""
import json, os, stat, sys
os.umask(0)
seen = []
def hook(event, args):
    if event in ("os.chmod", "os.link") and "secret_key" in os.fsdecode(args[0]):
        try:
            seen.append([event, stat.S_IMODE(os.stat(args[0]).st_mode)])
        except OSError:
            pass
sys.addaudithook(hook)
import config.settings
print(json.dumps(seen))
"""


def load_settings(var_dir) -> list:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "TUNELAB_"))}
    env.update(TUNELAB_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="config.settings")
    proc = subprocess.run([sys.executable, "-c", LOAD_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_var_dir_is_created_for_this_account_only(tmp_path):
    load_settings(tmp_path / "deep" / "var")
    assert mode(tmp_path / "deep" / "var") == 0o700


def test_an_existing_var_dir_others_can_enter_is_closed(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    var.chmod(0o755)
    load_settings(var)
    assert mode(var) == 0o700


def test_the_secret_key_is_never_readable_by_others(tmp_path):
    seen = load_settings(tmp_path / "var")
    assert mode(tmp_path / "var" / "secret_key") == 0o600
    assert seen, "the key was written without being linked into place"
    assert all(m == 0o600 for _, m in seen), f"the key file was readable by others before it was closed: {seen}"
    assert not list((tmp_path / "var").glob(".secret_key.*"))  # no temporary left behind


def test_an_existing_key_is_kept(tmp_path):
    load_settings(tmp_path / "var")
    key = (tmp_path / "var" / "secret_key").read_text()
    assert load_settings(tmp_path / "var") == []  # nothing written the second time
    assert (tmp_path / "var" / "secret_key").read_text() == key
