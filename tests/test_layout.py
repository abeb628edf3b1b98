"""The layout keeps its promises: one-way imports between the three packages, modules of one
concern (none above 500 lines), and every sub-package of ``adapt`` listed for a wheel install."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adapt", "datasets", "evaluation")
MAX_LINES = 500


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imported(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolve inside its own package)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize(("package", "forbidden"), [
    ("datasets", ("shiftkit.adapt", "shiftkit.evaluation")),
    ("evaluation", ("shiftkit.adapt",)),
])
def test_imports_flow_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _modules(package) for m in _imported(p)
           if m.startswith(forbidden)]
    assert not bad, bad


def test_no_module_above_500_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for pkg in PACKAGES for p in _modules(pkg)}
    big = {k: v for k, v in sizes.items() if v > MAX_LINES}
    assert not big, big


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {str(p.parent.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    listed = {conf["package-dir"][name] for name in conf["packages"]}
    assert folders == listed, (sorted(folders - listed), sorted(listed - folders))


def test_adapt_top_level_holds_only_sub_packages() -> None:
    """A newcomer finds the room for a change from the folder names: ``adapt/`` itself holds
    only its ``__init__``; every module lives in the sub-package of its concern."""
    loose = [p.name for p in (ROOT / "adapt").glob("*.py") if p.name != "__init__.py"]
    assert not loose, loose


def _compared_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants a comparison tests against (``x == "dann"``, ``x in ("tent", "shot")``):
    the code that branches on a name."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare):
            for side in (n.left, *n.comparators):
                elts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                out.extend(e for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return out


def test_method_names_are_written_only_in_their_module_registry_and_docs() -> None:
    """No code outside a method's own module (or its own package, for methods that are a
    package of their own) and the registry branches on a registered method's name."""
    from shiftkit.adapt.methods.registry import BUILTIN_METHODS, REFERENCE_METHODS

    homes = {}
    for name, where in {**BUILTIN_METHODS, **REFERENCE_METHODS}.items():
        path = where.split(":")[0].removeprefix("shiftkit.").replace(".", "/")
        folder = path.rsplit("/", 1)[0]
        homes[name] = path + ".py" if folder.endswith("methods") else folder + "/"
    hits = []
    for pkg in PACKAGES:
        for p in _modules(pkg):
            rel = p.relative_to(ROOT).as_posix()
            if rel == "adapt/methods/registry.py":
                continue
            for node in _compared_strings(ast.parse(p.read_text(encoding="utf-8"))):
                if node.value in homes and not rel.startswith(homes[node.value]):
                    hits.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not hits, hits


def test_docs_name_no_module_that_moved() -> None:
    """Docs name modules by their current paths (``adapt/<sub-package>/<module>.py``)."""
    stale = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"(?<!tests/)\badapt/([a-z_]+)\.py\b", doc.read_text(encoding="utf-8")):
            if m.group(1) != "__init__":
                stale.append(f"{doc.name}: {m.group(0)}")
    assert not stale, stale
