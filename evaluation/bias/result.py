"""What an audit produces, as objects (fairlearn keeps ``MetricFrame`` an object, and so do
we): :class:`AuditResult` for one model, :func:`compare_audits` for two or more side by side,
and :class:`BiasSection`, the ``bias`` section of a run's results (its saved form, and the one
reader of every saved form a run has used)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shiftkit.datasets.errors import DataError

from .groups import METRICS

__all__ = ["AuditResult", "BiasSection", "as_audit", "as_section", "compare_audits"]


@dataclass(frozen=True)
class AuditResult:
    """Output of :func:`shiftkit.evaluation.bias.audit` for one model's scores.

    Attributes:
        settings: the audit's arguments (label/score columns, threshold, attributes, ...).
        overall: every metric on all rows.
        attributes: attribute (or intersection ``"a & b"``) -> {"columns", "groups" (one dict
            per group: count, metrics with ``<metric>_ci``), "disparities" or
            "disparities_by_control", "undefined", "small_groups"}.
        underdiagnosis: attribute -> the under-diagnosis view (see ``underdiagnosis_view``).
        reliability: attribute -> group -> reliability curve.
        warnings: small groups and undefined metrics, one string each.
    """

    settings: Mapping[str, Any]
    overall: Mapping[str, Any]
    attributes: Mapping[str, Mapping[str, Any]]
    underdiagnosis: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reliability: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (one entry of ``BiasSection.to_dict()["audits"]``)."""
        return {
            "settings": dict(self.settings),
            "overall": dict(self.overall),
            "attributes": dict(self.attributes),
            "underdiagnosis": dict(self.underdiagnosis),
            "reliability": dict(self.reliability),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditResult:
        """Read :meth:`to_dict`'s form back."""
        if not isinstance(data, Mapping) or "attributes" not in data or "settings" not in data:
            raise DataError("an audit needs 'settings' and 'attributes'")
        return cls(settings=data["settings"], overall=data.get("overall", {}), attributes=data["attributes"],
                   underdiagnosis=data.get("underdiagnosis") or {}, reliability=data.get("reliability") or {},
                   warnings=tuple(str(w) for w in data.get("warnings") or ()))

    def groups_frame(self, attribute: str) -> Any:
        """Per-group table of one attribute (or intersection) as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.attributes[attribute]["groups"])


def as_audit(audit: AuditResult | Mapping[str, Any]) -> AuditResult:
    """An :class:`AuditResult` of an audit object or its saved form."""
    return audit if isinstance(audit, AuditResult) else AuditResult.from_dict(audit)


def compare_audits(audits: Mapping[str, AuditResult | Mapping[str, Any]]) -> dict[str, Any]:
    """Two (or more) models side by side, e.g. {"source_only": a, "adapted": b}: for each
    attribute and metric, each model's between-group difference, and for the last model
    against the first the change, "widened" (point difference grew) and "widened_beyond_ci"
    (the later model's CI lower bound lies above the first's CI upper bound)."""
    if len(audits) < 2:
        raise DataError("compare_audits needs at least two audits")
    dicts = {k: as_audit(v).to_dict() for k, v in audits.items()}
    names = list(dicts)
    first, last = names[0], names[-1]
    out: dict[str, Any] = {"models": names, "attributes": {}}
    widened: list[str] = []
    for attr in dicts[first]["attributes"]:
        if any(attr not in d["attributes"] for d in dicts.values()):
            continue
        rows = {}
        for m in METRICS:
            def disp(d, attr=attr, m=m):
                return d["attributes"][attr].get("disparities", {}).get(m, {})
            row = {f"{k}_difference": disp(d).get("difference") for k, d in dicts.items()}
            a, b = disp(dicts[first]), disp(dicts[last])
            if a.get("difference") is not None and b.get("difference") is not None:
                row["change"] = b["difference"] - a["difference"]
                row["widened"] = bool(row["change"] > 0)
                ci_a, ci_b = a.get("difference_ci"), b.get("difference_ci")
                row["widened_beyond_ci"] = bool(ci_a and ci_b and ci_b[0] > ci_a[1])
                if row["widened_beyond_ci"] and METRICS[m] != 0:
                    widened.append(f"{attr}: {m} disparity {a['difference']:.3f} -> {b['difference']:.3f}")
            rows[m] = row
        out["attributes"][attr] = rows
    out["widened_beyond_ci"] = widened
    out["widened"] = [f"{attr}: {m} disparity {r[f'{first}_difference']:.3f} -> {r[f'{last}_difference']:.3f}"
                      for attr, rows in out["attributes"].items() for m, r in rows.items()
                      if r.get("widened") and METRICS[m] != 0]
    out["audits"] = dicts
    return out




@dataclass(frozen=True)
class BiasSection:
    """The ``bias`` section of a run: one audit per model and, for two or more, their comparison.

    Attributes:
        audits: label (method or score column) -> :class:`AuditResult`, in order; the
            comparison's "before" is the first, its "after" the last.
        comparison: :func:`compare_audits` of the audits without its copy of them (None for
            one audit): "models", "attributes" (per attribute and metric each model's
            difference, the change, "widened", "widened_beyond_ci"), "widened",
            "widened_beyond_ci".
    """

    audits: Mapping[str, AuditResult]
    comparison: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, audits: Mapping[str, AuditResult]) -> BiasSection:
        """The section of ``audits`` (compared when there are two or more)."""
        audits = {k: as_audit(v) for k, v in audits.items()}
        if not audits:
            raise DataError("a bias section needs at least one audit")
        if len(audits) < 2:
            return cls(audits)
        return cls(audits, {k: v for k, v in compare_audits(audits).items() if k != "audits"})

    @property
    def first(self) -> AuditResult:
        return next(iter(self.audits.values()))

    @property
    def widened(self) -> list[str]:
        """Disparities whose point difference grew from the first model to the last."""
        return list((self.comparison or {}).get("widened") or [])

    @property
    def widened_beyond_ci(self) -> list[str]:
        """Disparities that grew beyond the first model's interval."""
        return list((self.comparison or {}).get("widened_beyond_ci") or [])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"audits": {k: a.to_dict() for k, a in self.audits.items()}}
        if self.comparison is not None:
            out["comparison"] = dict(self.comparison)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasSection:
        """Read the saved form. Schema 1.1 writes ``{"audits": {...}, "comparison": {...}}``;
        schema 1.0 files wrote one audit, ``compare_audits``' output (audits inside), or
        ``{name: audit, ..., "comparison": ...}``; each is read here, and only here."""
        if not isinstance(data, Mapping):
            raise DataError(f"bias: expected a mapping, got {type(data).__name__}")
        if "settings" in data and "attributes" in data:  # 1.0: one audit
            return cls({"model": AuditResult.from_dict(data)})
        if isinstance(data.get("audits"), Mapping):  # 1.1, or 1.0's compare_audits output
            comparison = data.get("comparison")
            if comparison is None and "models" in data:
                comparison = {k: v for k, v in data.items() if k != "audits"}
            return cls({k: AuditResult.from_dict(v) for k, v in data["audits"].items()}, comparison)
        audits = {k: AuditResult.from_dict(v) for k, v in data.items() if k != "comparison"}  # 1.0: {name: audit}
        if not audits:
            raise DataError("bias: no audit in the section")
        cmp_ = data.get("comparison")
        return cls(audits, {k: v for k, v in cmp_.items() if k != "audits"} if isinstance(cmp_, Mapping) else None)


def as_section(bias: BiasSection | AuditResult | Mapping[str, Any]) -> BiasSection:
    """A :class:`BiasSection` of a section, one audit, or a saved form (see ``from_dict``)."""
    if isinstance(bias, BiasSection):
        return bias
    if isinstance(bias, AuditResult):
        return BiasSection({"model": bias})
    return BiasSection.from_dict(bias)
