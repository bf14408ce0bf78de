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
from dataclasses import dataclass
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
    "PIL": "Pillow (with matplotlib, the eval extra) reads image headers for the evaluation's "
    "size check only; it may be absent",
    "h5py": "only the emotion model's one-off Keras conversion reads HDF5",
    "paho": "the MQTT client loads only for the mqtt transport and the broker's bridge",
    "requests": "the HTTP client loads only for the https transport and model downloads",
    "urllib3": "as requests",
    "tqdm": "progress bars are drawn only by the long commands",
    "prometheus_client": "only loaded when the metrics endpoint is enabled",
    "cryptography": "X.509 generation: only where a CA is made for a run (AES-GCM is imported "
    "at the top where templates and images are sealed)",
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


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``, exactly."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Attribute)
        and test.attr == "TYPE_CHECKING"
        and isinstance(test.value, ast.Name)
        and test.value.id == "typing"
    )


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for sub in node.body:  # only the body: `else:` runs
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _lazy_exports() -> dict[str, str]:
    """fr_core's PEP 562 exports (``_LAZY``): name -> the module that defines it."""
    tree = ast.parse((ROOT / "fr_core" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("fr_core/__init__.py has no _LAZY")


LAZY_EXPORTS = _lazy_exports()


@dataclass
class Import:
    node: ast.AST
    base: str  # the module named (resolved when relative); for `import a.b`, a.b
    targets: list[str]  # the modules it loads
    lazy: bool  # inside a function (or lambda)


def _dynamic_target(node: ast.AST) -> str | None:
    """``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = node.args[0]
    if name in ("import_module", "__import__"):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return "<dynamic>"
    return None


def _imports(name: str) -> Iterator[Import]:
    """Each import of one module, static or through importlib with a constant name."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        lazy = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node, alias.name, [alias.name], lazy)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import mod` loads the submodule pkg.mod (pkg is loaded by then);
            # `from fr_core import Name` loads the module _LAZY names for it
            targets = [base]
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    targets.append(f"{base}.{alias.name}")
                elif base == "fr_core" and alias.name in LAZY_EXPORTS:
                    targets.append(LAZY_EXPORTS[alias.name])
            yield Import(node, base, targets, lazy)
        else:
            target = _dynamic_target(node)
            if target is not None and not (name == "fr_core" and target == "<dynamic>"):
                yield Import(node, target, [target], lazy)


def _first_party(target: str) -> str | None:
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _graph(lazy: bool = True) -> dict[str, set[str]]:
    """module -> the first-party modules importing it runs, counting the packages a dotted
    import initialises on the way (``import a.b.c`` runs ``a`` and ``a.b`` first), except
    the importer's own packages, which are initialising already. ``lazy=False``: the
    top-level imports alone."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        own = set(_ancestors(name))
        for imp in _imports(name):
            if imp.lazy and not lazy:
                continue
            for target in imp.targets:
                mod = _first_party(target)
                if mod is None:
                    continue
                for dep in [*_ancestors(mod), mod]:
                    if dep in MODULES and dep != name and dep not in own:
                        graph[name].add(dep)
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


def _top_level_closure(name: str, top: dict[str, set[str]]) -> set[str]:
    """What importing ``name`` loads through its top-level imports alone (``top``:
    ``_graph(lazy=False)``)."""
    seen, todo = set(), [name]
    while todo:
        for dep in top[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_function_level_imports_are_deferred_for_a_stated_reason() -> None:
    stdlib = set(sys.stdlib_module_names)
    at_top = _graph(lazy=False)
    problems = []
    for name in MODULES:
        loaded = _top_level_closure(name, at_top) if name in LAZY_FIRST_PARTY else set()
        for imp in _imports(name):
            if not imp.lazy:
                continue
            top = imp.base.split(".")[0]
            line = getattr(imp.node, "lineno", 0)
            where = f"{MODULES[name].relative_to(ROOT)}:{line} imports {imp.base}"
            first = _first_party(imp.base)
            if imp.base == "<dynamic>":
                problems.append(f"{where}: an import whose name the source does not say")
            elif first is not None:
                if name not in LAZY_FIRST_PARTY and not _is_plugin_entry(name):
                    problems.append(f"{where}: first-party import inside a function")
                elif first in loaded:
                    problems.append(f"{where}: already loaded at the top, so it defers nothing")
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
        for imp in _imports(name):
            if not isinstance(imp.node, ast.ImportFrom):
                continue
            if imp.base in packages and imp.base != "fr_core.testing":
                names = [a.name for a in imp.node.names if f"{imp.base}.{a.name}" not in MODULES]
                if names and not (
                    imp.base == "fr_core" and set(names) <= {"hookimpl", "__version__"}
                ):
                    problems.append(
                        f"{name}:{imp.node.lineno} imports {names} from package {imp.base}"
                    )
    assert not problems, "\n".join(problems)


# The stages' folders and what each may import at run time (type-only imports aside): the
# arrows of the data-flow picture in docs/architecture.md. "root" is fr_core's own modules.
STAGE_IMPORTS = {
    "root": {"root"},
    "delivery": {"root", "delivery"},
    "enrolment": {"root", "delivery", "enrolment"},
    "pipeline": {"root", "delivery", "pipeline"},
    "evaluation": {"root", "pipeline", "enrolment", "evaluation"},
    "broker": {"root", "delivery", "broker"},
    "app": {"root", "delivery", "enrolment", "pipeline", "evaluation", "broker", "app", "testing"},
    "testing": {"root", "delivery", "enrolment", "pipeline", "broker", "app", "testing"},
}
# what a plugin or HAL package may import from fr_core: the root, and these stage modules
PLUGIN_SURFACE = {
    "fr_core.events",
    "fr_core.delivery.transports",
    "fr_core.pipeline.decision",
}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGE_IMPORTS) else "root"


def test_dependencies_point_one_way() -> None:
    problems = []
    for name in MODULES:
        for imp in _imports(name):
            for target in imp.targets:
                dep = _first_party(target)
                if dep is None or not dep.startswith("fr_core"):
                    continue
                if not name.startswith("fr_core"):  # a plugin or the HAL
                    if _stage(dep) != "root" and dep not in PLUGIN_SURFACE and dep.count(".") > 1:
                        problems.append(f"{name} imports {dep}, outside the plugin surface")
                    continue
                if name == "fr_core.__main__":
                    continue  # `python -m fr_core` is the command line
                if _stage(dep) not in STAGE_IMPORTS[_stage(name)]:
                    problems.append(f"{name} ({_stage(name)}) imports {dep} ({_stage(dep)})")
    assert not problems, "\n".join(problems)


def test_no_device_module_imports_the_reference_broker() -> None:
    allowed = ("fr_core.broker", "fr_core.app", "fr_core.testing")
    problems = [
        f"{name} imports {dep}"
        for name, deps in _graph().items()
        for dep in deps
        if dep.startswith("fr_core.broker") and not name.startswith(allowed)
    ]
    assert not problems, "\n".join(problems)


def test_the_rules_catch_what_they_say_they_catch(tmp_path, monkeypatch) -> None:
    """Planted violations are found: a cycle through a package's __init__, a relative
    import through a package, a dynamic import, and an ``else`` of ``if TYPE_CHECKING``."""
    src = {
        "p/__init__.py": "from p.kit import K\n",
        "p/kit.py": "import q.errors\nK = 1\n",
        "p/leaf.py": "X = 1\n",
        "q/__init__.py": "",
        "q/errors.py": "from p.leaf import X\n",
        "q/dyn.py": "import importlib\ndef f():\n    importlib.import_module('q.errors')\n",
        "q/tc.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\n"
            "else:\n    import p.leaf\n"
        ),
    }
    for rel, text in src.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    fake = {rel[:-3].replace("/", ".").removesuffix(".__init__"): tmp_path / rel for rel in src}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", fake)
    graph = _graph()
    assert sorted(next(c for c in _cycles(graph) if "p" in c)) == ["p", "p.kit", "q.errors"]
    dyn = [i for i in _imports("q.dyn") if i.base == "q.errors"]
    assert dyn and dyn[0].lazy
    assert "p.leaf" in graph["q.tc"]


@pytest.mark.parametrize(
    "folder", ["pipeline", "delivery", "enrolment", "app", "evaluation", "broker", "testing"]
)
def test_each_stage_folder_says_what_it_holds(folder: str) -> None:
    init = ROOT / "fr_core" / folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc) > 80, f"fr_core/{folder}/__init__.py needs a docstring"


def _layout_tree() -> set[str]:
    """The fr_core paths the tree under docs/architecture.md's "## Layout" names: within the
    block that opens with "fr_core/", a line "  folder/" opens a folder and
    "    a.py, b.py  what they do" names its modules; "  a.py  ..." a root module."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named: set[str] = set()
    in_core, folder = False, ""
    for line in block.splitlines():
        if not line.startswith("  "):
            in_core, folder = line.strip() == "fr_core/", ""
            continue
        if not in_core:
            continue
        names = [n.strip() for n in line.strip().split("  ")[0].split(",")]
        if not line.startswith("    "):
            folder = names[0] if names[0].endswith("/") else ""
            if not folder:
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
    ghosts = sorted(n for n in named if not n.endswith("/") and not (ROOT / "fr_core" / n).exists())
    assert not ghosts, "named in docs/architecture.md but not in fr_core/: " + ", ".join(ghosts)
