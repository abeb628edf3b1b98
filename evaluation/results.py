"""Typed results: what one method scored and what one run produced.

``metrics.json`` stays the saved form (``RunResult.to_dict()``, with ``schema_version``);
``RunResult.from_dict`` / ``RunResult.load(run_dir)`` read it back. The report renders its
sections from these objects, so the shape of a metrics dict is checked in one place
(:meth:`RunResult.from_dict`) and nowhere else. Sections this module does not know (a layer
gap profile, a data-efficiency curve, your own) travel in ``extra`` and are rendered as tables.

Every section is a frozen dataclass with ``to_dict`` / ``from_dict``: :class:`GapSection`,
:class:`OverfittingSection`, :class:`SelectionSection` (here) and
:class:`shiftkit.evaluation.bias.BiasSection` (audit objects, next to the audit). A report
asks them questions; it never tests a section's shape.

Saved form (schema 1.1; a 1.0 file reads back: its bias section was one audit, a comparison
holding the audits, or {name: audit, "comparison": ...}, and ``BiasSection.from_dict`` reads
each)::

    {"schema_version": "1.0", "generated_at": "...",
     "run": {...},                                    # free key/values: task, domains, seed, ...
     "methods": {name: {"source": {...}, "target": {...}, "gap": {...}}},
     "histories": {name: [{"epoch": 1, "train_loss": ..., ...}, ...]},
     "gap": {label: gap_summary},                     # e.g. before (source only) / after (dann)
     "overfitting": {name: analyse_history(...)},
     "bias": {"audits": {name: audit.to_dict()}, "comparison": {...}},  # comparison: 2+ audits
     "selection": {"validator", "chosen", "candidates", "validators": {v: {choice, score,
                   spearman, regret}}, "true_target", "scores", ...},   # methods: [auto]
     "warnings": ["...", ...],
     ...extra sections}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from shiftkit.datasets.errors import DataError

__all__ = ["SCHEMA_VERSION", "GapSection", "MethodResult", "OverfittingSection", "RunResult", "SelectionSection"]

SCHEMA_VERSION = "1.1"
#: Schemas :meth:`RunResult.load` reads (same major version).
READABLE_SCHEMAS = ("1.0", "1.1")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class GapSection:
    """Feature gaps side by side: label -> :func:`shiftkit.evaluation.gap.gap_summary`
    (e.g. ``"before (source only)"``, ``"after (dann)"``)."""

    summaries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in self.summaries.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GapSection:
        data = _mapping(data, "gap")
        return cls({k: _mapping(v, f"gap.{k}") for k, v in data.items()})


@dataclass(frozen=True)
class OverfittingSection:
    """Per method, :func:`shiftkit.evaluation.overfitting.analyse_history` of its history."""

    analyses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in self.analyses.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OverfittingSection:
        data = _mapping(data, "overfitting")
        if "best_epoch" in data:  # one analysis saved as the whole section (a single-model report)
            return cls({"model": data})
        return cls({k: _mapping(v, f"overfitting.{k}") for k, v in data.items()})


@dataclass(frozen=True)
class SelectionSection:
    """Label-free model selection of the ``auto`` method (``shiftkit.adapt.harness.auto_select``).

    Attributes:
        validator: the validator that chose; chosen: its choice; candidates: every candidate.
        validators: validator -> {"choice", "score", "spearman", "regret"} (the last two against
            the true target metric: reported, never used to choose).
        scores: validator -> candidate -> score (higher = better).
        true_target: candidate -> the true target metric named by ``true_metric``.
        outputs: candidate -> saved outputs file (relative to the run folder).
        extra: other keys, kept as they are.
    """

    validator: str
    chosen: str
    candidates: tuple[str, ...] = ()
    validators: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    true_target: Mapping[str, float] = field(default_factory=dict)
    true_metric: str = "true target metric"
    outputs: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("validator", "chosen", "candidates", "outputs", "true_metric", "true_target", "validators", "scores")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"validator": self.validator, "chosen": self.chosen, "candidates": list(self.candidates)}
        if self.outputs:
            out["outputs"] = dict(self.outputs)
        out["true_metric"] = self.true_metric
        out["true_target"] = dict(self.true_target)
        out["validators"] = {v: dict(r) for v, r in self.validators.items()}
        out["scores"] = {v: dict(s) for v, s in self.scores.items()}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionSection:
        data = _mapping(data, "selection")
        missing = [k for k in ("validator", "chosen", "validators") if k not in data]
        if missing:
            raise DataError(f"selection: missing {missing}")
        validators = {v: _mapping(r, f"selection.validators.{v}") for v, r in _mapping(data["validators"],
                                                                                          "selection.validators").items()}
        truth = _mapping(data.get("true_target", {}), "selection.true_target")
        return cls(validator=str(data["validator"]), chosen=str(data["chosen"]),
                   candidates=tuple(data.get("candidates") or truth),
                   validators=validators,
                   scores={v: _mapping(sc, f"selection.scores.{v}") for v, sc in
                           _mapping(data.get("scores", {}), "selection.scores").items()},
                   true_target=truth, true_metric=str(data.get("true_metric", "true target metric")),
                   outputs=_mapping(data.get("outputs", {}), "selection.outputs"),
                   extra={k: v for k, v in data.items() if k not in cls._KEYS})

    def validator_rows(self) -> dict[str, Mapping[str, Any]]:
        """validator -> its row, the choosing validator first."""
        return {v: self.validators[v] for v in sorted(self.validators, key=lambda v: v != self.validator)}

    def candidate_rows(self) -> dict[str, dict[str, Any]]:
        """candidate -> {validator: score, ..., "true target": metric}."""
        return {c: {**{v: s.get(c) for v, s in self.scores.items()}, "true target": self.true_target.get(c)}
                for c in self.candidates}


def _bias_from_dict(data: Mapping[str, Any]) -> Any:
    from .bias import BiasSection  # pandas and fairlearn load only for a run that has audits

    return BiasSection.from_dict(data)


#: Section name -> reader of its saved form (each raises DataError on another shape).
_SECTION_READERS: dict[str, Any] = {
    "gap": GapSection.from_dict,
    "overfitting": OverfittingSection.from_dict,
    "bias": _bias_from_dict,
    "selection": SelectionSection.from_dict,
}


@dataclass(frozen=True)
class MethodResult:
    """One fitted method's scores on each split and its feature gap.

    Attributes:
        name: the method's name in the run (registry name).
        splits: split -> task metrics (``"source"``, ``"target"``, ...), as
            :func:`shiftkit.evaluation.metrics.classification_metrics` /
            ``segmentation_metrics`` return them.
        gap: :func:`shiftkit.evaluation.gap.gap_summary` of the source vs target test features.
        extra: any other key of the saved block, kept as is.
        features: in memory only (not saved): ``(source (n, D), target (m, D))`` test features
            the gap was computed on.
        target_proba: in memory only: target test probabilities ``(m, K[, H, W])``.
    """

    name: str
    splits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gap: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    features: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)
    target_proba: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> Mapping[str, Any]:
        return self.splits.get("source", _EMPTY)

    @property
    def target(self) -> Mapping[str, Any]:
        return self.splits.get("target", _EMPTY)

    def scalars(self, split: str) -> dict[str, Any]:
        """The split's scalar metrics (per-class lists and curves left out), for tables."""
        return {k: v for k, v in self.splits.get(split, _EMPTY).items() if _scalar(v)}

    def per_class_iou(self) -> dict[str, Mapping[str, Any]]:
        """split -> {class: IoU} for the splits whose metrics carry per-class IoU (segmentation)."""
        return {split: v["per_class_iou"] for split, v in self.splits.items() if isinstance(v.get("per_class_iou"), Mapping)}

    def to_dict(self) -> dict[str, Any]:
        """The block ``metrics.json`` stores under ``methods[name]``."""
        out: dict[str, Any] = {k: dict(v) for k, v in self.splits.items()}
        if self.gap is not None:
            out["gap"] = dict(self.gap)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, name: str, block: Mapping[str, Any]) -> MethodResult:
        """Read a ``methods[name]`` block: mapping values are splits (``"gap"`` the gap), the rest extra."""
        if not isinstance(block, Mapping):
            raise DataError(f"methods.{name}: expected a mapping of split -> metrics, got {type(block).__name__}")
        splits = {k: v for k, v in block.items() if k != "gap" and isinstance(v, Mapping)}
        gap = block.get("gap") if isinstance(block.get("gap"), Mapping) else None
        extra = {k: v for k, v in block.items() if k not in splits and not (k == "gap" and gap is not None)}
        return cls(name=name, splits=splits, gap=gap, extra=extra)


@dataclass(frozen=True)
class RunResult:
    """Everything one run produced: the saved form of ``metrics.json`` plus where it lies.

    Attributes:
        run: free key/values describing the run (task, domains, backbone, seed, sizes, machine).
        methods: name -> :class:`MethodResult`, in the run's order.
        histories: name -> per-epoch dicts of the training loop.
        gap: :class:`GapSection`, label -> gap summary (before / after adaptation).
        overfitting: :class:`OverfittingSection`, name -> ``analyse_history`` output.
        bias: :class:`shiftkit.evaluation.bias.BiasSection`: per-method audit objects and
            their comparison.
        selection: :class:`SelectionSection`: label-free model selection of the ``auto`` method.
        A section may be passed in its saved (dict) form; it is read with its ``from_dict``.
        warnings: every warning of the run, one string each.
        extra: other sections, kept as they are.
        schema_version, generated_at: stamped by :func:`shiftkit.evaluation.report.write_report`.
        run_dir: the run folder (not saved): ``report_path``, ``model_dir(name)``.
    """

    run: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, MethodResult] = field(default_factory=dict)
    histories: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    gap: GapSection | None = None
    overfitting: OverfittingSection | None = None
    bias: Any = None  # shiftkit.evaluation.bias.BiasSection (imported lazily: pandas)
    selection: SelectionSection | None = None
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    generated_at: str | None = None
    run_dir: Path | None = field(default=None, compare=False)

    _SECTIONS = ("schema_version", "generated_at", "run", "methods", "histories", "gap", "overfitting", "bias",
                 "selection", "warnings")

    def __post_init__(self) -> None:
        # The one place a section's saved form is turned into its object.
        for key, read in _SECTION_READERS.items():
            value = getattr(self, key)
            if isinstance(value, Mapping):
                object.__setattr__(self, key, read(value))

    # ---------------------------------------------------------------- saved form
    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` dict (sections in a fixed order, then the extra ones)."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        if self.generated_at is not None:
            out["generated_at"] = self.generated_at
        if self.run:
            out["run"] = dict(self.run)
        if self.methods:
            out["methods"] = {name: m.to_dict() for name, m in self.methods.items()}
        if self.histories:
            out["histories"] = {k: list(v) for k, v in self.histories.items()}
        for key in _SECTION_READERS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key).to_dict()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, run_dir: str | Path | None = None) -> RunResult:
        """Read a metrics dict; a known key whose value has another shape is kept in ``extra``."""
        if not isinstance(data, Mapping):
            raise DataError(f"metrics: expected a mapping, got {type(data).__name__}")
        extra = {k: v for k, v in data.items() if k not in cls._SECTIONS}
        kw: dict[str, Any] = {}

        def take(key: str, ok: bool, value: Any) -> None:
            if key not in data:
                return
            if ok:
                kw[key] = value
            else:
                extra[key] = data[key]

        raw = data.get("methods")
        take("methods", isinstance(raw, Mapping) and all(isinstance(v, Mapping) for v in raw.values()),
             {k: MethodResult.from_dict(k, v) for k, v in raw.items()} if isinstance(raw, Mapping) else None)
        raw = data.get("histories")
        take("histories", isinstance(raw, Mapping) and all(isinstance(v, list) for v in raw.values()), raw)
        take("run", isinstance(data.get("run"), Mapping), data.get("run"))
        for key, read in _SECTION_READERS.items():
            if key in data:
                try:
                    kw[key] = read(data[key])
                except DataError:  # another shape under a known name: kept, shown as a table
                    extra[key] = data[key]
        raw = data.get("warnings")
        take("warnings", isinstance(raw, list), tuple(str(w) for w in raw) if isinstance(raw, list) else ())
        if "schema_version" in data:
            kw["schema_version"] = str(data["schema_version"])
        if "generated_at" in data:
            kw["generated_at"] = str(data["generated_at"])
        return cls(**kw, extra=extra, run_dir=Path(run_dir) if run_dir is not None else None)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """Read ``run_dir/metrics.json`` (written by :func:`shiftkit.evaluation.report.write_report`)."""
        path = Path(run_dir) / "metrics.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read the run's metrics ({exc})") from None
        version = str(data.get("schema_version", "")) if isinstance(data, Mapping) else ""
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise DataError(f"{path}: metrics schema {version or '(none)'} is not one of {READABLE_SCHEMAS}")
        return cls.from_dict(data, run_dir=run_dir)

    # ---------------------------------------------------------------- questions a report asks
    @property
    def metrics(self) -> dict[str, Any]:
        """The saved form (``to_dict()``), as ``metrics.json`` holds it."""
        return self.to_dict()

    @property
    def report_path(self) -> Path:
        return self._dir() / "report.html"

    def model_dir(self, name: str) -> Path:
        """Where method ``name``'s fitted model lies (``shiftkit.adapt.load`` reads it)."""
        return self._dir() / "models" / name

    def _dir(self) -> Path:
        if self.run_dir is None:
            raise DataError("this RunResult has no run_dir (build it with RunResult.load(run_dir))")
        return self.run_dir

    def method_gaps(self) -> dict[str, Mapping[str, Any]]:
        """name -> the feature gap of every method that has one."""
        return {name: m.gap for name, m in self.methods.items() if m.gap is not None}

    def reliability(self, split: str) -> dict[str, Mapping[str, Any]]:
        """name -> reliability curve on ``split`` for the methods whose metrics carry one."""
        return {name: m.splits[split]["reliability"] for name, m in self.methods.items()
                if isinstance(m.splits.get(split), Mapping) and isinstance(m.splits[split].get("reliability"), Mapping)}
