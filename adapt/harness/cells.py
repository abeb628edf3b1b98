"""What keys a cell of the efficacy harness: the code that computed it and its resolved settings.

A finished cell (``cells/<benchmark>/<method>/seed<k>.json``) is reused only when its
``cell_key`` equals the key the current code computes for it. The key hashes

- the benchmark's sizes and budget (:meth:`BenchmarkSpec.key`),
- the method's resolved settings: its class defaults overlaid with the cell's
  ``name[key=value]`` settings (a changed default changes the key),
- :func:`code_hash`: the source of every shiftkit module that can change a result (the
  ``adapt``, ``datasets`` and ``evaluation`` packages, except the command line and the table
  code, which only read results).

So a cell computed by older code, or under other defaults, is re-run, never reused; the table
leaves out a stale cell with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

__all__ = ["RESULT_PACKAGES", "cell_key", "code_hash", "resolved_settings"]

#: The packages whose source can change a cell's result.
RESULT_PACKAGES = ("shiftkit.adapt", "shiftkit.datasets", "shiftkit.evaluation")
#: Files that only read results (command line, table, plots): changing them re-runs nothing.
_READ_ONLY = ("cli/*.py", "harness/table.py", "__main__.py")


def _source_files() -> list[tuple[str, Path]]:
    out = []
    for pkg in RESULT_PACKAGES:
        root = Path(importlib.import_module(pkg).__file__).parent
        for f in sorted(root.rglob("*.py")):
            if "__pycache__" in f.parts or any(f.match(p) for p in _READ_ONLY):
                continue
            out.append((f"{pkg}/{f.relative_to(root).as_posix()}", f))
    return out


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """sha1 (first 12 hex digits) of the result-changing shiftkit source (names and bytes)."""
    h = hashlib.sha1()
    for name, f in _source_files():
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items())}
    return repr(v)  # a module or an adapter: its repr names its settings (sklearn-style)


def resolved_settings(name: str, params: dict[str, Any], accepted: frozenset[str]) -> dict[str, Any]:
    """The settings a cell's method runs with: each accepted setting's constructor default (for
    a registered method) overlaid with the cell's own ``params``."""
    out: dict[str, Any] = {}
    try:
        from shiftkit.adapt.methods.registry import get_method

        cls = get_method(name)
    except KeyError:  # a row the harness builds itself (the oracle, few-label references)
        cls = None
    if cls is not None:
        for klass in reversed(cls.__mro__):
            if "__init__" not in vars(klass):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name in accepted and p.default is not p.empty:
                    out[p.name] = _jsonable(p.default)
    out.update({k: _jsonable(v) for k, v in params.items()})
    return dict(sorted(out.items()))


def cell_key(spec_key: str, method: str, settings: dict[str, Any], *, quick: bool, model_seed: int) -> str:
    """The key a finished cell must carry to be reused (sha1, 16 hex digits)."""
    blob = json.dumps({"spec": spec_key, "method": method, "settings": settings, "code": code_hash(),
                       "quick": quick, "model_seed": model_seed}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
