"""The audit itself: per-group and intersectional metrics with bootstrap intervals
(:func:`audit`), the chest X-ray under-diagnosis view, and per-group reliability curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.datasets.errors import DataError

from .._arrays import to_numpy
from .groups import (
    METRICS,
    N_ECE_BINS,
    _bootstrap_weights,
    _disparities,
    _none_nan,
    _reason,
    _weighted_group_metrics,
    age_band,
    difference_interval,
    group_metric_functions,
)
from .result import AuditResult


def _frame_from(data: Any, columns: Sequence[str]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, Mapping):
        try:
            frame = pd.DataFrame({k: to_numpy(v, k) for k, v in data.items()})
        except ValueError as exc:
            raise DataError(f"the arrays passed to audit() differ in length: {exc}") from exc
    else:
        raise DataError(f"audit() takes a DataFrame or a dict of arrays; got {type(data).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if "age_band" in missing and "age" in frame.columns:
        frame = frame.assign(age_band=age_band(frame["age"]))
        missing.remove("age_band")
    if missing:
        raise DataError(f"column(s) {missing} not found; available: {list(frame.columns)}")
    return frame


def _labels_scores(frame: pd.DataFrame, label_col: str, score_col: str) -> tuple[np.ndarray, np.ndarray]:
    y = pd.to_numeric(frame[label_col], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(frame[score_col], errors="coerce").to_numpy(dtype=float)
    bad_y = ~np.isin(y, (0.0, 1.0))
    if bad_y.any():
        row = int(np.argmax(bad_y))
        raise DataError(f"column {label_col!r} row {row}: value {frame[label_col].iloc[row]!r} is not a 0/1 label "
                        "(audits need binary labels, 1 = finding)")
    bad_s = ~np.isfinite(s) | (s < 0) | (s > 1)
    if bad_s.any():
        row = int(np.argmax(bad_s))
        raise DataError(f"column {score_col!r} row {row}: value {frame[score_col].iloc[row]!r} is not a "
                        "probability in [0, 1]")
    return y.astype(int), s


def _group_keys(frame: pd.DataFrame, cols: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Integer group code per row and the sorted group labels (tuples of str)."""
    parts = frame[list(cols)].astype("string").fillna("missing").astype(str)
    tuples = list(map(tuple, parts.to_numpy()))
    labels = sorted(set(tuples))
    index = {t: i for i, t in enumerate(labels)}
    return np.fromiter((index[t] for t in tuples), dtype=np.int64, count=len(tuples)), labels


def _audit_one(
    frame: pd.DataFrame,
    y: np.ndarray,
    s: np.ndarray,
    cols: list[str],
    control: list[str],
    *,
    threshold: float,
    n_boot: int,
    ci: tuple[float, float],
    min_group_size: int,
    suppress_below: int,
    seed: int,
) -> dict[str, Any]:
    from fairlearn.metrics import MetricFrame

    funcs = group_metric_functions(threshold)
    sens = frame[cols].astype("string").fillna("missing").astype(str).reset_index(drop=True)
    ctrl = frame[control].astype("string").fillna("missing").astype(str).reset_index(drop=True) if control else None
    mf = MetricFrame(metrics=funcs, y_true=y, y_pred=s, sensitive_features=sens, control_features=ctrl)
    by_group = mf.by_group  # index: (control..., sensitive...) levels
    key_cols = (control or []) + cols
    codes, labels = _group_keys(frame.reset_index(drop=True), key_cols)
    n_groups = len(labels)
    counts = np.bincount(codes, minlength=n_groups)
    n_pos = np.bincount(codes, weights=(y == 1), minlength=n_groups).astype(int)

    # Bootstrap: (n_boot, n_groups) per metric.
    boot: dict[str, np.ndarray] = {m: np.full((n_boot, n_groups), np.nan) for m in METRICS}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        row0 = 0
        members = [np.flatnonzero(codes == g) for g in range(n_groups)]
        for w in _bootstrap_weights(len(y), n_boot, rng):
            for g, idx in enumerate(members):
                res = _weighted_group_metrics(y[idx], s[idx], w[:, idx], threshold)
                for m in METRICS:
                    boot[m][row0:row0 + len(w), g] = res[m]
            row0 += len(w)

    groups: list[dict[str, Any]] = []
    undefined: list[dict[str, str]] = []
    point: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    usable = counts >= suppress_below
    for g, lab in enumerate(labels):
        ctrl_lab, sens_lab = lab[: len(control or [])], lab[len(control or []):]
        name = " & ".join(sens_lab)
        row: dict[str, Any] = {"group": name}
        if control:
            row["control"] = " & ".join(ctrl_lab)
        row["count"] = int(counts[g])
        row["small"] = bool(counts[g] < min_group_size)
        if not usable[g]:
            row["suppressed"] = f"fewer than {suppress_below} rows; metrics withheld"
            groups.append(row)
            continue
        idx_key = lab if len(lab) > 1 else lab[0]
        vals = by_group.loc[idx_key]
        for m in METRICS:
            v = float(vals[m])
            row[m] = v if np.isfinite(v) else None
            col = boot[m][:, g]
            col = col[np.isfinite(col)]
            row[f"{m}_ci"] = [float(np.quantile(col, ci[0])), float(np.quantile(col, ci[1]))] if len(col) else None
            reason = _reason(m, int(n_pos[g]), int(counts[g] - n_pos[g]))
            if reason and row[m] is None:
                undefined.append({"group": name, "metric": m, "reason": reason})
            key = (row.get("control", ""), name)
            point[m][key] = row[m]
        groups.append(row)

    # Differences / ratios between groups (within each control level), with bootstrap CIs.
    ctrl_levels = sorted({r.get("control", "") for r in groups})
    disparity: dict[str, Any] = {}
    for lvl in ctrl_levels:
        members = [g for g, lab in enumerate(labels)
                   if usable[g] and " & ".join(lab[: len(control or [])]) == lvl]
        entry: dict[str, Any] = {}
        for m in METRICS:
            vals = {k: v for k, v in point[m].items() if k[0] == lvl}
            diff, ratio = _disparities(vals)
            pt = np.array([point[m].get((lvl, " & ".join(labels[g][len(control or []):]))) for g in members],
                          dtype=float)
            gi = difference_interval(pt, boot[m][:, members] if n_boot > 0 else None, ci)
            entry[m] = {"difference": _none_nan(diff), "difference_ci": gi["difference_ci"],
                        "ratio": _none_nan(ratio), "ratio_ci": gi["ratio_ci"]}
            if gi["pair"] is not None:
                hi_g, lo_g = (" & ".join(labels[members[i]][len(control or []):]) for i in gi["pair"])
                entry[m]["difference_between"] = [hi_g, lo_g]
            direction = METRICS[m]
            cands = [(k[1], v) for k, v in vals.items() if v is not None and np.isfinite(v)]
            big = [(k, v) for k, v in cands
                   if counts[labels.index(_label_tuple(lvl, k, control))] >= min_group_size]
            pool = big or cands
            if direction != 0 and pool:
                worst = (min if direction > 0 else max)(pool, key=lambda kv: kv[1])
                entry[m]["worst_group"] = worst[0]
                entry[m]["worst_value"] = worst[1]
                if not big:
                    entry[m]["worst_note"] = f"all groups are below min_group_size={min_group_size}"
        disparity[lvl or "all"] = entry
    out: dict[str, Any] = {"columns": cols, "groups": groups, "undefined": undefined}
    if control:
        out["control"] = control
        out["disparities_by_control"] = disparity
    else:
        out["disparities"] = disparity["all"]
    out["small_groups"] = [r["group"] for r in groups if r["small"]]
    return out


def _label_tuple(ctrl: str, name: str, control: list[str] | None) -> tuple[str, ...]:
    c = tuple(ctrl.split(" & ")) if control else ()
    return c + tuple(name.split(" & "))


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def audit(
    data: pd.DataFrame | Mapping[str, Any],
    sensitive: Sequence[str],
    *,
    label_col: str = "label",
    score_col: str = "score",
    threshold: float = 0.5,
    control: Sequence[str] | None = None,
    intersectional: bool = True,
    n_boot: int = 200,
    ci: tuple[float, float] = (0.025, 0.975),
    min_group_size: int = 30,
    suppress_below: int = 5,
    underdiagnosis: bool = True,
    seed: int = 0,
) -> AuditResult:
    """Per-group audit of a binary classifier's scores.

    sensitive: attribute columns; "age_band" is derived from an "age" column when absent.
    Each attribute is audited alone, plus their intersection when `intersectional` and there
    are two or more. control: columns (e.g. "site") within whose levels disparities are taken
    (fairlearn control_features). Metrics per group: count, accuracy, auroc, fpr, fnr,
    selection_rate, ece (15 bins), prevalence, each with a bootstrap CI (`ci` quantiles over
    `n_boot` resamples); per attribute: between-group difference (max - min) and ratio
    (min / max) with CIs, the worst group for directional metrics (among groups with at least
    `min_group_size` rows when any), small groups flagged, undefined metrics listed with reasons.
    underdiagnosis: adds the chest X-ray view (see `underdiagnosis_view`) for "sex" and
    "age_band" when those columns (or "age") exist.
    """
    if isinstance(sensitive, str):
        sensitive = [c.strip() for c in sensitive.split(",") if c.strip()]
    sensitive = list(sensitive)
    if not sensitive:
        raise DataError("argument 'sensitive' names no column")
    if not (0.0 <= threshold <= 1.0):
        raise DataError(f"argument 'threshold' must lie in [0, 1]; got {threshold}")
    if not (0.0 <= ci[0] < ci[1] <= 1.0):
        raise DataError(f"argument 'ci' must be two increasing quantiles in [0, 1]; got {ci}")
    control = list(control or [])
    frame = _frame_from(data, [label_col, score_col, *sensitive, *control])
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise DataError("no rows to audit")
    y, s = _labels_scores(frame, label_col, score_col)
    kw = dict(threshold=threshold, n_boot=int(n_boot), ci=tuple(ci), min_group_size=int(min_group_size),
              suppress_below=int(suppress_below), seed=seed)
    sets = [[c] for c in sensitive]
    if intersectional and len(sensitive) > 1:
        sets.append(list(sensitive))
    attributes = {" & ".join(cols): _audit_one(frame, y, s, cols, control, **kw) for cols in sets}
    funcs = group_metric_functions(threshold)
    overall = {"count": int(len(y))} | {m: _none_nan(f(y, s)) for m, f in funcs.items()}
    warnings: list[str] = []
    for name, a in attributes.items():
        if a["small_groups"]:
            warnings.append(f"{name}: {len(a['small_groups'])} group(s) under {min_group_size} rows "
                            f"({', '.join(a['small_groups'][:6])}{', ...' if len(a['small_groups']) > 6 else ''}); "
                            "their metrics are noisy")
        for u in a["undefined"]:
            warnings.append(f"{name} = {u['group']}: {u['reason']}")
    under = (underdiagnosis_view(frame, label_col=label_col, score_col=score_col, threshold=threshold,
                                 n_boot=n_boot, ci=ci, suppress_below=suppress_below, seed=seed)
             if underdiagnosis else {})
    return AuditResult(
        settings={"label_col": label_col, "score_col": score_col, "threshold": threshold, "sensitive": sensitive,
                  "control": control, "n_boot": int(n_boot), "ci": list(ci), "min_group_size": int(min_group_size),
                  "suppress_below": int(suppress_below), "seed": seed},
        overall=overall,
        attributes=attributes,
        underdiagnosis=under,
        reliability=_group_reliability(frame, y, s, sensitive, suppress_below),
        warnings=tuple(warnings),
    )


def underdiagnosis_view(
    data: pd.DataFrame | Mapping[str, Any],
    *,
    label_col: str = "label",
    score_col: str = "score",
    threshold: float = 0.5,
    attributes: Sequence[str] = ("sex", "age_band"),
    n_boot: int = 200,
    ci: tuple[float, float] = (0.025, 0.975),
    suppress_below: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Chest X-ray under-diagnosis (Seyyed-Kalantari et al. 2021): the false-positive rate of
    "no finding" = the share of patients WITH a finding (label 1) whom the model calls
    "no finding" (score < threshold), by sex and by age band 0-20/20-40/40-60/60-80/80+.

    Computed with fairlearn's `false_positive_rate` on the "no finding" encoding (positive =
    no finding). Returns {attribute: {"groups": [{group, n_with_finding, rate, rate_ci}],
    "difference", "worst_group"}}; attributes absent from the data are skipped.
    """
    from fairlearn.metrics import MetricFrame, false_positive_rate

    frame = data if isinstance(data, pd.DataFrame) else _frame_from(data, [label_col, score_col])
    frame = frame.reset_index(drop=True)
    if "age_band" in attributes and "age_band" not in frame.columns and "age" in frame.columns:
        frame = frame.assign(age_band=age_band(frame["age"]))
    y, s = _labels_scores(frame, label_col, score_col)
    no_finding_true = 1 - y
    no_finding_pred = (s < threshold).astype(int)
    out: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    for attr in attributes:
        if attr not in frame.columns:
            continue
        sens = frame[attr].astype("string").fillna("missing").astype(str)

        def nf_fpr(t, p):
            t = np.asarray(t)
            return float(false_positive_rate(t, p, pos_label=1)) if (t == 0).any() else math.nan

        mf = MetricFrame(metrics={"rate": nf_fpr}, y_true=no_finding_true, y_pred=no_finding_pred,
                         sensitive_features=sens)
        groups = []
        rates = {}
        levels = sorted(sens.unique())
        sens_np = sens.to_numpy()
        sick_masks = {g: (sens_np == g) & (y == 1) for g in levels}
        boot_rates: dict[str, list[np.ndarray]] = {g: [] for g in levels}
        missed = (no_finding_pred == 1).astype(float)
        # Rate among the sick of each group under resampling of the whole data, as in `audit`.
        for w in (_bootstrap_weights(len(y), n_boot, rng) if n_boot > 0 else ()):
            for g, sick in sick_masks.items():
                ws = w[:, sick]
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot_rates[g].append((ws @ missed[sick]) / ws.sum(1))
        for g in levels:
            sick = sick_masks[g]
            row: dict[str, Any] = {"group": g, "n_with_finding": int(sick.sum())}
            if sick.sum() < suppress_below:
                row["suppressed"] = f"fewer than {suppress_below} patients with a finding; rate withheld"
                groups.append(row)
                continue
            rate = float(mf.by_group.loc[g, "rate"])
            row["rate"] = rate
            if boot_rates[g]:
                r = np.concatenate(boot_rates[g])
                r = r[np.isfinite(r)]
                row["rate_ci"] = [float(np.quantile(r, ci[0])), float(np.quantile(r, ci[1]))]
            rates[g] = rate
            groups.append(row)
        diff, ratio = _disparities(rates)
        entry: dict[str, Any] = {"groups": groups, "difference": _none_nan(diff), "ratio": _none_nan(ratio)}
        if rates:
            worst = max(rates.items(), key=lambda kv: kv[1])
            entry["worst_group"], entry["worst_rate"] = worst
        out[attr] = entry
    return out


def _group_reliability(frame: pd.DataFrame, y: np.ndarray, s: np.ndarray, sensitive: list[str],
                       suppress_below: int) -> dict[str, dict[str, Any]]:
    from ..calibration import reliability_curve

    out: dict[str, dict[str, Any]] = {}
    for attr in sensitive:
        sens = frame[attr].astype("string").fillna("missing").astype(str).to_numpy()
        curves = {}
        for g in sorted(set(sens)):
            mask = sens == g
            if mask.sum() >= max(suppress_below, 1):
                curves[g] = reliability_curve(y[mask], s[mask], N_ECE_BINS)
        out[attr] = curves
    return out
