"""The map stays true: every top-level module of every package is named in ARCHITECTURE.md (in its
package's section) and in its package's `__init__` docstring, so a newcomer finds each room from
either place. A new module fails this test until it is named in both.

And imports run one way (ARCHITECTURE.md, "Floors"): the import graph of the project's modules,
read from their code, has no loop, and no module imports from a floor above its own."""

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


# --- imports run one way --------------------------------------------------------------------------

# What a package may not import: mlcore at the bottom knows no app; content (markdown) neither;
# no app imports the project package; labs stands below quiz and inference (they link to labs and
# serve its runs), so it imports neither; ops, the infrastructure under every app, reads the
# learner apps only through their selectors (the learner's home), never their models.
APPS = ("accounts", "ops", "quiz", "labs", "inference")
FORBIDDEN = {
    "mlcore": ("config", "content", *APPS),
    "content": ("config", *APPS),
    **{app: ("config",) for app in APPS},
    "labs": ("config", "quiz", "inference"),
    "ops": ("config", "quiz.models", "labs.models"),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path, package_names) -> dict[str, Path]:
    """Every module of these packages (migrations left out: Django loads them, nothing imports them)."""
    found = {}
    for name in package_names:
        for path in sorted((root / name).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(root, path)] = path
    return found


def imports_in(name: str, path: Path):
    """(names an import statement imports, its line, the function it is in or None) for every
    import of the module, not counting those under `if TYPE_CHECKING:`. `from a import b` gives
    "a.b"; relative imports are made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    todo = [(ast.parse(path.read_text(encoding="utf-8")), None)]
    while todo:
        node, function = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                yield [alias.name for alias in child.names], child.lineno, function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                yield [f"{base}.{alias.name}" for alias in child.names], child.lineno, function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            todo.append((child, "<lambda>" if isinstance(child, ast.Lambda) else inner))


def top_level_imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported name, line) of the imports that run when the module is imported: those in its
    body, not in a function or under `if TYPE_CHECKING:`."""
    return sorted((imported, line) for names, line, function in imports_in(name, path) if function is None
                  for imported in names)


def import_graph(root: Path, package_names) -> dict[str, dict[str, int]]:
    """module -> {project module it imports at its top level: line}."""
    modules = project_modules(root, package_names)

    def resolve(imported: str) -> str | None:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        return imported or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for imported, line in top_level_imports(name, path):
            target = resolve(imported)
            if target and target != name:
                edges.setdefault(target, line)
    return graph


def import_loops(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The loops: every group of two or more modules that import each other, directly or round a
    chain (the strongly connected components, Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, {}))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    loops.append(sorted(group))
    return loops


def upward_imports(graph: dict[str, dict[str, int]], forbidden=FORBIDDEN) -> list[str]:
    """'module:line imports target' for each import a package's rule forbids."""
    found = []
    for name, edges in graph.items():
        for target, line in edges.items():
            banned = forbidden.get(name.split(".")[0], ())
            if any(target == b or target.startswith(b + ".") for b in banned):
                found.append(f"{name}:{line} imports {target}")
    return sorted(found)


def project_graph():
    return import_graph(ROOT, [p.name for p in packages()])


def test_the_project_has_no_import_loop():
    loops = import_loops(project_graph())
    assert not loops, (f"import loops: {loops}. Send a task by its name (ops.queue), or move what both need to the "
                       "lower module; an import inside a function hides a loop, it does not remove it")


def test_no_module_imports_from_a_floor_above_its_own():
    found = upward_imports(project_graph())
    assert not found, f"imports against the floors (ARCHITECTURE.md): {found}"


def test_the_graph_sees_the_projects_imports():
    # A guard against a graph that checks nothing: edges we know are there must be found.
    graph = project_graph()
    assert "labs.models" in graph["labs.access"] and "mlcore.config" in graph["mlcore.train"]
    assert "labs.events" in graph["labs.worker"] and len(graph) > 100


def write_package(root: Path, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, text in files.items():
        (root / name / f"{module}.py").write_text(text)


def test_an_import_loop_is_caught_also_round_a_chain_and_through_relative_imports(tmp_path):
    write_package(tmp_path, "app", {
        "models": "import json\n",
        "services": "from app.models import x\nfrom app import tasks\n",
        "tasks": "from . import helpers\n",
        "helpers": "def f():\n    from app import services  # in a function: not a loop at import time\n",
        "views": "from .services import run\n",
    })
    assert import_loops(import_graph(tmp_path, ["app"])) == []
    (tmp_path / "app" / "helpers.py").write_text("from .services import launch\n")
    assert import_loops(import_graph(tmp_path, ["app"])) == [["app.helpers", "app.services", "app.tasks"]]


def test_an_upward_import_is_caught(tmp_path):
    write_package(tmp_path, "config", {"celery": ""})
    write_package(tmp_path, "mlcore", {"train": "from labs.models import Run\n"})
    write_package(tmp_path, "labs", {"models": "import mlcore.train\n", "services": "from config.celery import app\n",
                                     "selectors": ""})
    write_package(tmp_path, "ops", {"dashboard": "from labs import models\n", "home": "from labs.selectors import x\n"})
    graph = import_graph(tmp_path, ["config", "mlcore", "labs", "ops"])
    assert upward_imports(graph) == [
        "labs.services:1 imports config.celery", "mlcore.train:1 imports labs.models", "ops.dashboard:1 imports labs.models",
    ]


# --- imports inside functions: only to defer a heavy optional dependency --------------------------

# Libraries that take seconds or hundreds of MB to import, which the web process and the
# worker's parent never need: torch and what stands on it, the GGUF/llama.cpp/ONNX/OpenVINO runtimes,
# scikit-learn (~1 s) and the Hugging Face hub client.
HEAVY = {"torch", "transformers", "peft", "gguf", "llama_cpp", "openvino", "onnxruntime", "onnx", "sklearn",
         "huggingface_hub"}


def heavy_modules(root: Path, package_names) -> set[str]:
    """Project modules whose import loads a heavy library (directly or through another module)."""
    modules = project_modules(root, package_names)
    graph = import_graph(root, package_names)
    direct = {name for name, path in modules.items()
              if any(imported.split(".")[0] in HEAVY for imported, _ in top_level_imports(name, path))}
    heavy, grew = set(direct), True
    while grew:
        grew = False
        for name, edges in graph.items():
            if name not in heavy and heavy & set(edges):
                heavy.add(name)
                grew = True
    return heavy


def deferred_imports(root: Path, package_names) -> list[tuple[str, int, list[str], bool, str]]:
    """(file, line, imported names, has a reason comment, enclosing function) of every import
    inside a function. The reason is a comment on the import's line or on the line above it; in a
    block of imports, the block's first line (or the comment above it) speaks for the block."""
    found = []
    for name, path in project_modules(root, package_names).items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for names, line, function in imports_in(name, path):
            if function is None:
                continue
            first = line
            while first > 1 and "#" not in lines[first - 1] and lines[first - 2].strip().startswith(("import ", "from ")):
                first -= 1
            reason = "#" in lines[first - 1] or (first > 1 and lines[first - 2].strip().startswith("#"))
            found.append((str(path.relative_to(root)), line, names, reason, function))
    return sorted(found)


def misplaced_imports(root: Path, package_names) -> list[str]:
    """In-function imports that defer nothing heavy, or defer it without saying why. Django's
    AppConfig.ready() is where an app's signal handlers must be imported: allowed there."""
    heavy = heavy_modules(root, package_names)
    modules = project_modules(root, package_names)

    def is_heavy(imported: str) -> bool:
        while imported and imported not in modules:
            if imported.split(".")[0] in HEAVY:
                return True
            imported = imported.rpartition(".")[0]
        return imported in heavy

    found = []
    for path, line, names, reason, function in deferred_imports(root, package_names):
        if function == "ready":
            continue
        if not any(is_heavy(n) for n in names):
            found.append(f"{path}:{line} {', '.join(names)}: nothing heavy to defer, import it at the top")
        elif not reason:
            found.append(f"{path}:{line} {', '.join(names)}: say in a comment why it is deferred")
    return found


def test_imports_inside_functions_only_defer_heavy_libraries_and_say_so():
    found = misplaced_imports(ROOT, [p.name for p in packages()])
    assert not found, "\n".join(found)


def test_a_light_or_unexplained_deferred_import_is_caught(tmp_path):
    write_package(tmp_path, "mlcore", {
        "fused": "import torch\n",
        "classify": "from .fused import x\n",
        "cost": "def f():\n    import json\n",
        "serving": "def f():\n    from .classify import y\n",
        "gguf": "def f():\n    # the runtime: 200 MB, only for an export\n    import gguf\n\n"
                "def g():\n    from . import classify  # torch: only when scoring\n",
    })
    assert heavy_modules(tmp_path, ["mlcore"]) == {"mlcore.fused", "mlcore.classify"}
    assert [row.split(" ")[0] for row in misplaced_imports(tmp_path, ["mlcore"])] == [
        "mlcore/cost.py:2", "mlcore/serving.py:2"]
