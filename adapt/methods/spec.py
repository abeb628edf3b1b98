"""The one grammar of a method with settings: ``name`` or ``name[key=value,...]``.

Used by the run config (``selection.candidates``), ``auto``, the efficacy harness
(``shiftkit benchmark --methods``) and ``shiftkit select``: every caller parses here.

Values are read as ``true``/``false`` (bool), ``none``/``null`` (None), an integer, a float, or
else a string. A setting's key is the name of the method's constructor argument (the same
name as in its config section), or a setting of the caller's recipe (e.g. the harness's
``lr_mult``).

>>> parse_spec("dann[lambda_max=0.3,adversary=grl]")
('dann', {'lambda_max': 0.3, 'adversary': 'grl'})
"""

from __future__ import annotations

import re
from typing import Any

from shiftkit.datasets.errors import ConfigError

__all__ = ["parse_spec", "slug", "split_specs"]

_SPEC = re.compile(r"([a-z_][a-z0-9_]*)(?:\[([^\[\]]*)\])?")
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]+)?", re.IGNORECASE)


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):  # not the string "false", which is truthy
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_spec(spec: str, where: str = "method") -> tuple[str, dict[str, Any]]:
    """``"mymethod[alpha=0.3,lr_mult=1]"`` -> ``("mymethod", {"alpha": 0.3, "lr_mult": 1})``.

    Only the grammar is checked here (the caller checks that the name is registered and that
    the method takes the keys).

    Raises:
        ConfigError: (named ``where``) the text is not ``name`` or ``name[key=value,...]``, a
            setting is not ``key=value`` or a key is given twice.
    """
    if not isinstance(spec, str):
        raise ConfigError(where, [f"expected 'method' or 'method[key=value,...]', got {spec!r}"])
    m = _SPEC.fullmatch(spec.strip())
    if not m:
        raise ConfigError(where, [f"{spec!r} is not 'method' or 'method[key=value,...]'"])
    params: dict[str, Any] = {}
    body = (m.group(2) or "").strip()
    for part in body.split(",") if body else []:
        if not part.strip():
            raise ConfigError(where, [f"{spec!r}: empty setting (write key=value,...)"])
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not re.fullmatch(r"[a-z_][a-z0-9_]*", key) or not value:
            raise ConfigError(where, [f"{spec!r}: cannot read setting {part!r} (write key=value)"])
        if key in params:
            raise ConfigError(where, [f"{spec!r}: setting {key!r} given twice"])
        params[key] = _value(value)
    return m.group(1), params


def split_specs(text: str) -> list[str]:
    """A comma list of specs (``"source_only,cdan[mcc_weight=1,randomized_dim=512]"``): commas
    inside brackets belong to the spec."""
    out, depth, part = [], 0, []
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append("".join(part))
            part = []
        else:
            part.append(ch)
    out.append("".join(part))
    return [p.strip() for p in out if p.strip()]


def slug(spec: str) -> str:
    """A file-name form of a spec (``dann[lambda_max=0.3]`` -> ``dann_lambda_max=0.3``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec).strip("_")
