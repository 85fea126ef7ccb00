"""The stages as docs/ARCHITECTURE.md draws them: xreport's modules import only their own tier
or those below it, and no module imports itself back through others (no import circle).

Read from the source (every import a module runs, also inside functions; typing-only imports
under ``if TYPE_CHECKING:`` are not run and do not count)."""
from __future__ import annotations

import ast
from pathlib import Path

import xreport

PACKAGE = Path(xreport.__file__).resolve().parent

# Lowest first. A module imports from its own tier or a lower one, never a higher one.
TIERS: tuple[frozenset[str], ...] = (
    # contracts and plumbing every stage shares
    frozenset({"xreport", "errors", "limits", "labels", "runs", "device", "config", "languages",
               "artifacts", "verdicts"}),
    # data, models, metrics and the computations on them (data/ and explain/ are packages)
    frozenset({"data", "models", "metrics", "explain", "viewer", "recipe"}),
    # the stages that run a model: train, evaluate (and importing a run from elsewhere)
    frozenset({"train", "evaluate", "importer"}),
    # figures and the report's context and rendering (charts/ and render/ are packages)
    frozenset({"charts", "figures", "discussion", "report", "render", "notes", "compare"}),
    # what drives the stages: build (one run, or a study of several), the API and the CLI
    frozenset({"build", "study", "api", "cli", "demo", "__main__"}),
)

# Known imports that run against the rule, each with why; the change that removes one removes
# its entry. They are left out of both checks, so any other circle or upward arrow fails.
PENDING_EDGES: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _typing_only(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The xreport modules ``path`` imports when it runs."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)   # `from . import x`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    """Every module's run-time imports of other xreport modules, without PENDING_EDGES."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    found = {_module_name(f): _imports(f, modules) for f in files}
    return {a: {b for b in targets if (a, b) not in PENDING_EDGES} for a, targets in found.items()}


def _tier(module: str) -> int:
    short = module.split(".")[1] if "." in module else module
    for i, tier in enumerate(TIERS):
        if short in tier:
            return i
    raise AssertionError(f"{module} is in no tier of tests/test_layers.py: place it (and in docs/ARCHITECTURE.md)")


def _circles(g: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    raw = {_module_name(f): _imports(f, modules) for f in files}
    assert [edge for edge in PENDING_EDGES if edge[1] not in raw[edge[0]]] == []   # none stale
    g = graph()
    assert "xreport.metrics" in g["xreport.train"] and "xreport.evaluate" in g["xreport.build"]
    assert "xreport.artifacts" in g["xreport.metrics"]       # `from . import artifacts`
    assert "xreport.api" not in g["xreport"]                  # typing-only and lazy: not run


def test_no_import_circles() -> None:
    circles = _circles(graph())
    assert not circles, [sorted(c) for c in circles]


def test_no_module_imports_a_higher_tier() -> None:
    g = graph()
    upward = sorted((a, b) for a, targets in g.items() for b in targets if _tier(b) > _tier(a))
    assert not upward, upward


def test_every_package_ships_in_the_wheel() -> None:
    """A module split into a package (data/, explain/, render/, charts/) is listed in
    pyproject's packages, or the installed tool misses it."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
                 ["tool"]["setuptools"]["packages"])
    packages = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages - listed == set()


def test_the_circle_and_arrow_finders_find_them() -> None:
    """The checks above fail on a graph with a circle or an upward arrow."""
    g = {"xreport.evaluate": {"xreport.build"}, "xreport.build": {"xreport.evaluate"},
         "xreport.metrics": set()}
    assert _circles(g) == [frozenset({"xreport.evaluate", "xreport.build"})]
    assert _tier("xreport.evaluate") < _tier("xreport.build")
