"""The source layout keeps the architecture it documents (docs/architecture.md):

- no import cycles among fr_core, the plugins and the HAL, counting imports made inside
  functions as if they were at the top of the file, so no function-level import can be
  dodging a cycle;
- an import inside a function is either a heavy or optional third-party package (the list
  below says why each is deferred), or a first-party module imported lazily where loading
  cost is the point: the ``fr-edge`` command line (each command loads its stage when run)
  and the modules pluggy loads for every installed plugin (a hook imports its component's
  code when the component is built);
- inside fr_core a module imports a sibling from the module that defines it, never through a
  package's re-exports (the re-exports are for users; inside they would hide the real edges);
- each stage folder of fr_core is a package with a docstring, and docs/architecture.md names
  every module of fr_core.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"fr_core": ROOT / "fr_core", "plugins": ROOT / "plugins", "hal": ROOT / "hal"}

# Third-party packages a function may import, and why they are not imported at the top.
DEFERRED = {
    "cv2": "OpenCV: 0.3-1 s to import; commands and plugins that never touch pixels skip it",
    "onnx": "only the model converters and the TensorRT check read ONNX graphs",
    "tensorrt": "present on a Jetson only",
    "pycuda": "present on a Jetson or a GPU machine only",
    "jetson_utils": "present on a Jetson only",
    "matplotlib": "plots are drawn by the evaluation commands only",
    "h5py": "only the emotion model's one-off Keras conversion reads HDF5",
    "paho": "the MQTT client loads only for the mqtt transport and the broker's bridge",
    "requests": "the HTTP client loads only for the https transport and model downloads",
    "urllib3": "as requests",
    "tqdm": "progress bars are drawn only by the long commands",
    "prometheus_client": "only loaded when the metrics endpoint is enabled",
    "cryptography": "X.509 generation is needed only where a CA is made for a run",
    "pytest": "fr_core.testing helpers are importable without pytest installed",
}
# First-party modules whose functions may import first-party modules lazily, and why.
LAZY_FIRST_PARTY = {
    "fr_core.app.cli": "each command loads its stage when run (`fr-edge --help` loads none)",
    "fr_core.testing.pytest_plugin": "pytest loads it into every run where fr-edge is installed;"
    " its fixtures import the plugin machinery when used (tests/test_imports.py)",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("plugins", "hal"):
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for top in SOURCES.values():
        for path in sorted(top.rglob("*.py")):
            if "examples" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_plugin_entry(name: str) -> bool:
    """A package pluggy loads for every installed plugin (its hooks live there)."""
    return (
        MODULES[name].name == "__init__.py"
        and name.startswith(("fr_hal_", "fr_"))
        and (not name.startswith("fr_core"))
    )


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _imports(name: str) -> Iterator[tuple[ast.stmt, list[str], bool]]:
    """(node, imported module names, inside a function) for each import of one module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import mod` imports the submodule pkg.mod (pkg is loaded by then)
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            targets = [base] if len(subs) < len(node.names) else []
            targets = (targets + subs) or [base]
        else:
            continue
        yield node, targets, id(node) in in_function


def _first_party(target: str) -> str | None:
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for _node, targets, _lazy in _imports(name):
            for target in targets:
                mod = _first_party(target)
                if mod is not None and mod != name:
                    graph[name].add(mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_module_list_is_real() -> None:
    # guards the tests below against scanning nothing
    assert "fr_core.pipeline.engine" in MODULES and "fr_sqlite" in MODULES
    assert "fr_hal_sim" in MODULES and len(MODULES) > 60


def test_no_import_cycles_even_counting_function_level_imports() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_function_level_imports_are_deferred_for_a_stated_reason() -> None:
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for name in MODULES:
        for node, targets, lazy in _imports(name):
            if not lazy:
                continue
            top = targets[0].split(".")[0]
            where = f"{MODULES[name].relative_to(ROOT)}:{node.lineno} imports {targets[0]}"
            if _first_party(targets[0]) is not None or top in ("fr_core",):
                if name not in LAZY_FIRST_PARTY and not _is_plugin_entry(name):
                    problems.append(f"{where}: first-party import inside a function")
            elif top in stdlib:
                problems.append(f"{where}: the standard library is imported at the top")
            elif top not in DEFERRED:
                problems.append(f"{where}: {top} is not in DEFERRED (say why it is deferred)")
    assert not problems, "\n".join(problems)


def test_fr_core_imports_siblings_from_their_defining_module() -> None:
    packages = {
        n for n, p in MODULES.items() if p.name == "__init__.py" and n.startswith("fr_core")
    }
    problems = []
    for name in MODULES:
        if not name.startswith("fr_core") or MODULES[name].name == "__init__.py":
            continue
        for node, _targets, _lazy in _imports(name):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if base in packages and base != "fr_core.testing":
                names = [a.name for a in node.names if f"{base}.{a.name}" not in MODULES]
                if names and not (base == "fr_core" and set(names) <= {"hookimpl", "__version__"}):
                    problems.append(f"{name}:{node.lineno} imports {names} from package {base}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "folder", ["pipeline", "delivery", "enrolment", "app", "evaluation", "broker", "testing"]
)
def test_each_stage_folder_says_what_it_holds(folder: str) -> None:
    init = ROOT / "fr_core" / folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc) > 80, f"fr_core/{folder}/__init__.py needs a docstring"


def _layout_tree() -> set[str]:
    """The fr_core paths the tree under docs/architecture.md's "## Layout" names: a line
    "  folder/" opens a folder, "    a.py, b.py  what they do" names its modules."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named: set[str] = set()
    folder = None
    for line in block.splitlines():
        if not line.startswith("  "):
            folder = None  # fr_core/ itself, or another root (plugins/...)
            continue
        names = [n.strip() for n in line.strip().split("  ")[0].split(",")]
        if not line.startswith("    "):
            folder = names[0] if names[0].endswith("/") else ""
            if folder == "":
                named.update(names)
        elif folder:
            named.update(folder + n for n in names)
    return named


def test_architecture_doc_names_every_fr_core_module() -> None:
    named = _layout_tree()
    missing = []
    for name, path in MODULES.items():
        if not name.startswith("fr_core") or path.name == "__init__.py":
            continue
        rel = path.relative_to(ROOT / "fr_core").as_posix()
        if rel not in named:
            missing.append(rel)
    assert not missing, "not in the tree of docs/architecture.md: " + ", ".join(missing)
