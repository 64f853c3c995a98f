"""The packages import each other without a circle: the imports of ``syncd`` and ``connectors``
form a directed acyclic graph, both those that run when a module loads and, stricter, those
plus the ones made for type annotations only (``if TYPE_CHECKING:``).

A circle makes the import order decide which names exist when a module runs (routes used to
register themselves through imports kept only for that side effect), and a circle through
annotations ties modules together just as much (the web routes and the daemon that serves them
named each other; they now meet in ``syncd.web.host.Host``). Imports inside functions are left
out: they run later, and are how the CLI and ``syncd.app`` load heavy modules only when used.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("syncd", "connectors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_imports(
    tree: ast.Module, *, type_checking: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is loaded: at module level, also inside
    ``if``/``try``/``with`` blocks and class bodies there, never in a function. An ``if
    TYPE_CHECKING:`` block counts only with ``type_checking`` (its ``else`` always does)."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if type_checking or not _is_type_checking(node.test):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.With):
            stack.extend(node.body)
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.body)  # a class body runs at load time (its methods are skipped)


def resolve(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str]
) -> set[str]:
    """The modules of ``modules`` that an import statement makes ``module`` depend on.

    Importing ``a.b.c`` also loads ``a`` and ``a.b``; but a module's own enclosing packages are
    already loading when it runs, so they count only where it takes a name defined in one
    (``from a import name``, not ``from a.b import c`` nor ``from a import b`` of a module).
    """
    if isinstance(node, ast.Import):
        named: list[tuple[str, list[str]]] = [(alias.name, []) for alias in node.names]
    else:
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        named = [(target, [alias.name for alias in node.names])]
    parts = module.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    deps: set[str] = set()
    for target, names in named:
        pieces = target.split(".")
        for i in range(1, len(pieces) + 1):
            prefix = ".".join(pieces[:i])
            if prefix in modules and prefix != module and prefix not in ancestors:
                deps.add(prefix)
        submodules = {f"{target}.{n}" for n in names} & modules
        deps.update(submodules - {module})
        if target in ancestors and len(submodules) < len(names):
            deps.add(target)  # a name defined in the enclosing package itself
    return deps


def graph_of(
    trees: dict[str, tuple[ast.Module, bool]], *, type_checking: bool = False
) -> dict[str, set[str]]:
    """Module -> the modules it imports; ``trees`` maps a module to (its AST, is a package)."""
    modules = set(trees)
    return {
        name: {
            dep
            for node in module_imports(tree, type_checking=type_checking)
            for dep in resolve(name, is_package, node, modules)
        }
        for name, (tree, is_package) in trees.items()
    }


def source_trees() -> dict[str, tuple[ast.Module, bool]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return {
        module_name(p): (ast.parse(p.read_text(encoding="utf-8"), str(p)), p.name == "__init__.py")
        for p in files
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


@pytest.fixture(scope="module")
def trees() -> dict[str, tuple[ast.Module, bool]]:
    found = source_trees()
    assert len(found) > 100 and "syncd.daemon" in found  # it did read the packages
    return found


@pytest.mark.parametrize("type_checking", [False, True], ids=["at-load", "with-annotations"])
def test_syncd_and_connectors_import_without_a_circle(
    trees: dict[str, tuple[ast.Module, bool]], type_checking: bool
) -> None:
    graph = graph_of(trees, type_checking=type_checking)
    assert "syncd.web.app" in graph["syncd.daemon"]  # edges were found
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_connectors_never_import_the_daemon(trees: dict[str, tuple[ast.Module, bool]]) -> None:
    """The providers stand alone: syncd uses connectors, never the other way round."""
    graph = graph_of(trees, type_checking=True)
    assert {
        (m, t)
        for m, targets in graph.items()
        if m.startswith("connectors")
        for t in targets
        if t.startswith("syncd")
    } == set()


def test_routes_register_nowhere_but_in_the_web_application(
    trees: dict[str, tuple[ast.Module, bool]],
) -> None:
    """No module is imported only for what importing it does (``noqa: F401`` in the daemon):
    the web application names every feature's routes itself."""
    registering = {
        name
        for name, (tree, _) in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name | ast.Attribute)
        and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr).startswith(
            "register_"
        )
    }
    decorated = {
        name
        for name, (tree, _) in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for deco in node.decorator_list
        if isinstance(deco, ast.Name) and deco.id.startswith("register_")
    }
    assert registering | decorated == set()
    for path in (ROOT / "syncd").rglob("*.py"):
        assert "noqa: F401" not in path.read_text(encoding="utf-8"), path


def _tiny(sources: dict[str, str]) -> dict[str, tuple[ast.Module, bool]]:
    return {name: (ast.parse(src), name == "pkg") for name, src in sources.items()}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import a\nimport b\n", None),  # no edge between them
        ("from . import b\n", ["a", "b", "a"]),
        ("from pkg.b import x\n", ["a", "b", "a"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n", None),
        ("def f():\n    from . import b\n", None),
        ("try:\n    from . import b\nexcept ImportError:\n    pass\n", ["a", "b", "a"]),
        ("class A:\n    from . import b\n", ["a", "b", "a"]),
    ],
)
def test_the_check_finds_a_circle(source: str, expected: list[str] | None) -> None:
    """The check can fail: a tiny package where ``b`` imports ``a`` and ``a`` is ``source``."""
    graph = graph_of(_tiny({"pkg": "", "pkg.a": source, "pkg.b": "from . import a\n"}))
    cycle = find_cycle(graph)
    assert (cycle and [m.removeprefix("pkg.") for m in cycle]) == expected


def test_the_stricter_check_finds_a_circle_through_annotations() -> None:
    sources = {
        "pkg": "",
        "pkg.a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "pkg.b": "from pkg import a\n",
    }
    assert find_cycle(graph_of(_tiny(sources))) is None
    assert find_cycle(graph_of(_tiny(sources), type_checking=True)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_a_package_importing_its_own_modules_is_no_circle() -> None:
    sources = {
        "pkg": "from pkg.main import main\n",
        "pkg.main": "from pkg.common import State\nfrom pkg import common\n",
        "pkg.common": "",
    }
    graph = graph_of(_tiny(sources))
    assert graph == {"pkg": {"pkg.main"}, "pkg.main": {"pkg.common"}, "pkg.common": set()}
    assert find_cycle(graph) is None
    # ...but taking a name the package itself defines is one: ``pkg`` may not have it yet.
    sources["pkg.main"] = "from pkg import common, VERSION\n"
    graph = graph_of(_tiny(sources))
    assert graph["pkg.main"] == {"pkg", "pkg.common"}
    assert find_cycle(graph) == ["pkg", "pkg.main", "pkg"]
