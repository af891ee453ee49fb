"""The map stays true: every top-level module of every package is named in ARCHITECTURE.md (in its
package's section) and in its package's `__init__` docstring, so a newcomer finds each room from
either place. A new module fails this test until it is named in both."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
# Django's own folders: nothing in them is a room of ours to describe (management commands and
# template tags are named as a whole).
NOT_ROOMS = {"migrations", "__pycache__"}


def packages() -> list[Path]:
    """The project's top-level packages: every folder at the repository root with an __init__.py, but the tests."""
    return sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")


def modules(package: Path) -> list[str]:
    """The package's top-level modules: its .py files and its sub-packages."""
    names = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name not in NOT_ROOMS}
    return sorted(names)


def section(package: str) -> str:
    """The text under ARCHITECTURE.md's `### <package>/` heading, up to the next heading."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    match = re.search(rf"^### {re.escape(package)}/.*?$(.*?)(?=^#)", text + "\n#", re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def docstring(package: Path) -> str:
    return ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""


def named(name: str, text: str) -> bool:
    """Whether a line of the docstring starts with the module's name: one line per module, what it owns."""
    return re.search(rf"^\s*{re.escape(name)}(?!\w)", text, re.MULTILINE) is not None


PACKAGES = [pytest.param(p, id=p.name) for p in packages()]


def test_the_packages_are_the_ones_this_test_expects():
    # A guard against a test that checks nothing: renaming the folder layout must be noticed here.
    assert {"config", "accounts", "ops", "quiz", "labs", "inference", "content", "mlcore"} <= {p.name for p in packages()}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_on_the_architecture_page(package):
    text = section(package.name)
    assert text, f"ARCHITECTURE.md has no '### {package.name}/' section"
    missing = [name for name in modules(package) if not re.search(rf"`{re.escape(name)}`", text)]
    assert not missing, f"ARCHITECTURE.md's {package.name}/ section does not name {missing}: say what each owns"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_its_package_docstring(package):
    text = docstring(package)
    assert text, f"{package.name}/__init__.py has no docstring naming its modules"
    missing = [name for name in modules(package) if not named(name, text)]
    assert not missing, f"{package.name}/__init__.py's docstring does not name {missing}: one line each, what it owns"


def test_a_module_missing_from_the_page_is_caught(tmp_path):
    """The checks above find a module the page leaves out (not only ones it names)."""
    (tmp_path / "__init__.py").write_text('"""Modules:\n    known  what it does\n"""\n')
    (tmp_path / "known.py").write_text("")
    (tmp_path / "unknown.py").write_text("")
    assert modules(tmp_path) == ["known", "unknown"]
    assert [name for name in modules(tmp_path) if not named(name, docstring(tmp_path))] == ["unknown"]
