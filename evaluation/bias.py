"""Bias audits of binary classifiers: per-group and intersectional metrics (fairlearn
`MetricFrame`), disparities with bootstrap confidence intervals, worst groups, small groups
flagged, the chest X-ray under-diagnosis view, and two models side by side.

Inputs: a DataFrame with a label column (0/1; 1 = finding), a score column (P(label = 1)) and
attribute columns, or a dict of equal-length arrays with the same names.

Point estimates come from `fairlearn.metrics.MetricFrame`. Confidence intervals come from a
vectorised bootstrap here: MetricFrame's own `n_boot` (fairlearn >= 0.11) rebuilds the whole
frame per resample, measured at ~0.3 s per resample on 2 cores (a minute for n_boot = 200);
this module draws all resamples as multinomial row weights and computes every group metric for
all of them with matrix products (the same estimator: rows resampled with replacement over the
whole data set, quantiles of the resampled statistic).

Privacy: groups with fewer than `suppress_below` rows (default 5) are listed with their count
only; their metrics are withheld and they take no part in differences, ratios or worst groups,
so the report never shows the outcome of a single patient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shiftkit.datasets.errors import DataError

from ._arrays import to_numpy
from .metrics import auroc_from_weights, ece_from_confidence

__all__ = [
    "METRICS",
    "AGE_BANDS",
    "age_band",
    "group_metric_functions",
    "AuditResult",
    "audit",
    "compare_audits",
    "difference_interval",
    "plot_audit",
    "summary_lines",
]

# Name -> direction: +1 higher is better, -1 lower is better, 0 no preferred direction.
METRICS: dict[str, int] = {
    "accuracy": 1,
    "auroc": 1,
    "fpr": -1,
    "fnr": -1,
    "selection_rate": 0,
    "ece": -1,
    "prevalence": 0,
}
AGE_BANDS = ((0, 20, "0-20"), (20, 40, "20-40"), (40, 60, "40-60"), (60, 80, "60-80"), (80, math.inf, "80+"))
N_ECE_BINS = 15


def age_band(age: Any) -> np.ndarray:
    """Age in years -> band label "0-20", "20-40", "40-60", "60-80", "80+" (lower edge
    inclusive); missing or negative ages -> "missing"."""
    a = pd.to_numeric(pd.Series(to_numpy(age, "age")), errors="coerce").to_numpy(dtype=float)
    out = np.full(len(a), "missing", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = name
    return out


# ----------------------------------------------------------------------------- metric functions


def group_metric_functions(threshold: float) -> dict[str, Any]:
    """Metric callables f(y_true, score) for MetricFrame; undefined values are NaN.

    AUROC and ECE are `shiftkit.evaluation.metrics`' (plain numpy: sklearn's roc_auc_score
    spends most of its time validating input, called once per group per metric); the tests
    check equality with sklearn and fairlearn."""
    from .metrics import binary_auroc, expected_calibration_error

    def accuracy(y, s):
        return float(((np.asarray(s) >= threshold).astype(int) == np.asarray(y)).mean())

    def selection_rate(y, s):
        return float((np.asarray(s) >= threshold).mean())

    def prevalence(y, s):
        return float(np.mean(np.asarray(y) == 1))

    def fpr(y, s):
        y, s = np.asarray(y), np.asarray(s)
        neg = y == 0
        return float((s[neg] >= threshold).mean()) if neg.any() else math.nan

    def fnr(y, s):
        y, s = np.asarray(y), np.asarray(s)
        pos = y == 1
        return float((s[pos] < threshold).mean()) if pos.any() else math.nan

    def auroc(y, s):
        return binary_auroc(y, s)

    def ece(y, s):
        return expected_calibration_error(np.asarray(y), np.asarray(s, dtype=float), N_ECE_BINS)

    return {"accuracy": accuracy, "auroc": auroc, "fpr": fpr, "fnr": fnr,
            "selection_rate": selection_rate, "ece": ece, "prevalence": prevalence}


def _weighted_group_metrics(y: np.ndarray, s: np.ndarray, w: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """All METRICS for one group under B weightings at once.

    y (n,) 0/1, s (n,) scores, w (B, n) non-negative row weights (bootstrap multiplicities;
    ones = the plain estimate). Returns {metric: (B,)} with NaN where undefined.
    """
    pred = (s >= threshold).astype(float)
    pos = (y == 1).astype(float)
    neg = 1.0 - pos
    conf = np.maximum(s, 1.0 - s)  # top-label confidence of the binary prediction
    correct = (pred == y).astype(float)
    cols = np.stack([np.ones_like(s), correct, pred, pos, neg, neg * pred, pos * (1 - pred)], axis=1)
    sums = w @ cols  # (B, 7)
    cnt, n_correct, n_pred, n_pos, n_neg, n_fp, n_fn = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "accuracy": n_correct / cnt,
            "selection_rate": n_pred / cnt,
            "prevalence": n_pos / cnt,
            "fpr": np.where(n_neg > 0, n_fp / n_neg, np.nan),
            "fnr": np.where(n_pos > 0, n_fn / n_pos, np.nan),
        }
    # ECE (15 equal-width bins of top-label confidence) and AUROC (Mann-Whitney, ties 1/2):
    # the metrics module's, under all B weightings at once.
    out["ece"] = ece_from_confidence(conf, correct, N_ECE_BINS, weights=w)
    out["auroc"] = auroc_from_weights(s, w * pos, w * neg)
    return out


# ----------------------------------------------------------------------------- audit


@dataclass
class AuditResult:
    """Output of `audit`. `to_dict()` is the JSON-ready form stored under metrics["bias"]."""

    settings: dict[str, Any]
    overall: dict[str, Any]
    attributes: dict[str, dict[str, Any]]
    underdiagnosis: dict[str, dict[str, Any]] = field(default_factory=dict)
    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "overall": self.overall,
            "attributes": self.attributes,
            "underdiagnosis": self.underdiagnosis,
            "reliability": self.reliability,
            "warnings": list(self.warnings),
        }

    def groups_frame(self, attribute: str) -> pd.DataFrame:
        """Per-group table of one attribute (or intersection) as a DataFrame."""
        return pd.DataFrame(self.attributes[attribute]["groups"])


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


def _bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator, chunk: int = 64):
    """Yield (b, n) multinomial multiplicities: resampling n rows with replacement."""
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        # Row multiplicities of b resamples: counts of n uniform draws per row, via one bincount
        # (rng.multinomial over n equal cells is ~20x slower).
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)
        done += b


def _reason(metric: str, n_pos: int, n_neg: int) -> str | None:
    if metric == "auroc" and (n_pos == 0 or n_neg == 0):
        return f"single class in group ({'no positives' if n_pos == 0 else 'no negatives'}); AUROC undefined"
    if metric == "fpr" and n_neg == 0:
        return "no negatives (label 0) in group; FPR undefined"
    if metric == "fnr" and n_pos == 0:
        return "no positives (label 1) in group; FNR undefined"
    return None


def _disparities(values: dict[str, float]) -> tuple[float, float]:
    v = np.array([x for x in values.values() if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    hi, lo = v.max(), v.min()
    return float(hi - lo), float(lo / hi) if hi > 0 else math.nan


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


def difference_interval(point: np.ndarray, boot: np.ndarray | None,
                        ci: tuple[float, float] = (0.025, 0.975)) -> dict[str, Any]:
    """Bootstrap interval of a between-group gap, for the pair of groups that makes the gap.

    The gap reported is ``max - min`` over groups (fairlearn's ``difference()``), made by the
    groups ``hi = argmax`` and ``lo = argmin`` of the point estimates. Its interval is the
    percentile interval of ``m*_hi - m*_lo`` over the resamples, the same two groups in every
    resample: a smooth statistic whose percentile interval is valid, so a 95 % interval covers
    the true ``m_hi - m_lo`` about 95 % of the time at any true gap, zero included. It can
    reach below zero: the data cannot tell which of the two groups is worse. (The percentile
    interval of the resampled ``max - min`` was biased upward -- re-picking the extremes in
    every resample inflates them -- and could exclude its own point estimate: 64 % coverage at a
    true gap of 0 in simulation.) The ratio interval is that of ``m*_lo / m*_hi``.

    Args:
        point: ``(G,)`` per-group point estimates (NaN: undefined or suppressed).
        boot: ``(B, G)`` the same metric under B bootstrap resamples, or None.
        ci: lower and upper quantiles.

    Returns:
        ``{"pair": (i_hi, i_lo) or None, "difference_ci": [lo, hi] or None, "ratio_ci": ...}``.
    """
    out: dict[str, Any] = {"pair": None, "difference_ci": None, "ratio_ci": None}
    ok = np.flatnonzero(np.isfinite(point))
    if len(ok) < 2:
        return out
    i_hi, i_lo = int(ok[np.argmax(point[ok])]), int(ok[np.argmin(point[ok])])
    if i_hi == i_lo:  # all equal: any two distinct groups make the (zero) gap
        i_hi, i_lo = int(ok[0]), int(ok[1])
    out["pair"] = (i_hi, i_lo)
    if boot is None or boot.shape[0] == 0:
        return out
    hi, lo = boot[:, i_hi], boot[:, i_lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = hi - lo
        rr = np.where(hi > 0, lo / hi, np.nan)
    dd, rr = dd[np.isfinite(dd)], rr[np.isfinite(rr)]
    if len(dd):
        out["difference_ci"] = [float(np.quantile(dd, ci[0])), float(np.quantile(dd, ci[1]))]
    if len(rr):
        out["ratio_ci"] = [float(np.quantile(rr, ci[0])), float(np.quantile(rr, ci[1]))]
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


def _none_nan(v: float) -> float | None:
    return v if v is not None and np.isfinite(v) else None


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
    result = AuditResult(
        settings={"label_col": label_col, "score_col": score_col, "threshold": threshold, "sensitive": sensitive,
                  "control": control, "n_boot": int(n_boot), "ci": list(ci), "min_group_size": int(min_group_size),
                  "suppress_below": int(suppress_below), "seed": seed},
        overall=overall,
        attributes=attributes,
        warnings=warnings,
    )
    if underdiagnosis:
        result.underdiagnosis = underdiagnosis_view(frame, label_col=label_col, score_col=score_col,
                                                    threshold=threshold, n_boot=n_boot, ci=ci,
                                                    suppress_below=suppress_below, seed=seed)
    result.reliability = _group_reliability(frame, y, s, sensitive, suppress_below)
    return result


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
    from .calibration import reliability_curve

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


# ----------------------------------------------------------------------------- comparison


def compare_audits(audits: Mapping[str, AuditResult | Mapping[str, Any]]) -> dict[str, Any]:
    """Two (or more) models side by side, e.g. {"source_only": a, "adapted": b}: for each
    attribute and metric, each model's between-group difference, and for the last model
    against the first the change, "widened" (point difference grew) and "widened_beyond_ci"
    (the later model's CI lower bound lies above the first's CI upper bound)."""
    if len(audits) < 2:
        raise DataError("compare_audits needs at least two audits")
    dicts = {k: (v.to_dict() if isinstance(v, AuditResult) else dict(v)) for k, v in audits.items()}
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


# ----------------------------------------------------------------------------- report hooks


def _audits_in(bias: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """{label: audit dict} from either one audit dict, a compare_audits output or {name: audit}."""
    if "attributes" in bias and "settings" in bias:
        return {"model": bias}
    if "audits" in bias and isinstance(bias["audits"], Mapping):
        return dict(bias["audits"])
    return {k: v for k, v in bias.items() if isinstance(v, Mapping) and "attributes" in v}


def plot_audit(bias: Mapping[str, Any], metrics: Sequence[str] = ("auroc", "fpr", "fnr", "ece")) -> dict[str, Any]:
    """Figures for a report: per attribute, bars per group (one colour per model) with bootstrap
    CIs as error bars, one panel per metric; and the under-diagnosis rates. {caption: Figure}."""
    from .calibration import plot_reliability
    from .plots import new_figure

    audits = _audits_in(bias)
    figs: dict[str, Any] = {}
    if not audits:
        return figs
    first = next(iter(audits.values()))
    for attr, a in first.get("attributes", {}).items():
        if a.get("control"):
            continue
        groups = [g["group"] for g in a["groups"] if "suppressed" not in g]
        if not groups or len(groups) > 40:
            continue
        fig, axes = new_figure((3.6 * len(metrics), 3.4), ncols=len(metrics))
        axes = np.asarray(axes, dtype=object).reshape(-1)
        width = 0.8 / len(audits)
        for ax, m in zip(axes, metrics, strict=True):
            for i, (label, au) in enumerate(audits.items()):
                rows = {g["group"]: g for g in au["attributes"].get(attr, {}).get("groups", [])}
                vals = [rows.get(g, {}).get(m) for g in groups]
                cis = [rows.get(g, {}).get(f"{m}_ci") for g in groups]
                v = np.array([x if x is not None else np.nan for x in vals], dtype=float)
                lo = np.array([v[j] - c[0] if c and np.isfinite(v[j]) else 0 for j, c in enumerate(cis)])
                hi = np.array([c[1] - v[j] if c and np.isfinite(v[j]) else 0 for j, c in enumerate(cis)])
                x = np.arange(len(groups)) + i * width - 0.4 + width / 2
                ax.bar(x, v, width, yerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]),
                       capsize=2, label=label)
            ax.set_xticks(range(len(groups)), groups, rotation=35, fontsize=7, ha="right")
            ax.set_title(m, fontsize=9)
            if len(audits) > 1:
                ax.legend(fontsize=6)
        fig.suptitle(f"per-group metrics by {attr} (95% bootstrap CI)", fontsize=10)
        figs[f"Bias: {attr}"] = fig
    ud = first.get("underdiagnosis") or {}
    if ud:
        fig, axes = new_figure((4.2 * len(ud), 3.4), ncols=len(ud))
        axes = np.asarray(axes, dtype=object).reshape(-1)
        for ax, (attr, entry) in zip(axes, ud.items(), strict=True):
            groups = [g["group"] for g in entry["groups"] if "rate" in g]
            width = 0.8 / len(audits)
            for i, (label, au) in enumerate(audits.items()):
                rows = {g["group"]: g for g in (au.get("underdiagnosis") or {}).get(attr, {}).get("groups", [])}
                v = np.array([rows.get(g, {}).get("rate", np.nan) for g in groups], dtype=float)
                cis = [rows.get(g, {}).get("rate_ci") for g in groups]
                err = np.array([[max(v[j] - c[0], 0), max(c[1] - v[j], 0)] if c else [0, 0]
                                for j, c in enumerate(cis)]).T.reshape(2, -1)
                ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, v, width, yerr=err, capsize=2,
                       label=label)
            ax.set_xticks(range(len(groups)), groups, fontsize=8)
            ax.set_title(f"under-diagnosis rate by {attr}", fontsize=9)
            ax.set_ylabel("P(predicted no finding | finding)")
            if len(audits) > 1:
                ax.legend(fontsize=6)
        figs["Under-diagnosis (FPR of 'no finding')"] = fig
    for attr, curves in (first.get("reliability") or {}).items():
        if curves and len(curves) <= 8:
            figs[f"Reliability by {attr}"] = plot_reliability(curves, title=f"reliability by {attr}")
    return figs


def _disparity_line(lines: list[str], label: str, title: str, disp: Mapping[str, Any]) -> None:
    parts = []
    for m in ("auroc", "fpr", "fnr", "ece"):
        d = disp.get(m) or {}
        if d.get("difference") is None:
            continue
        ci = d.get("difference_ci")
        ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        parts.append(f"{m} gap {d['difference']:.3f}{ci_s} (worst {d.get('worst_group', '?')})")
    if parts:
        lines.append(f"bias [{label}] {title}: " + "; ".join(parts))


def summary_lines(bias: Mapping[str, Any]) -> list[str]:
    """Terminal lines: per model and attribute, the largest disparities and worst groups."""
    lines: list[str] = []
    for label, au in _audits_in(bias).items():
        for attr, a in au.get("attributes", {}).items():
            if isinstance(a.get("disparities"), Mapping):
                blocks = [(attr, a["disparities"])]
            elif isinstance(a.get("disparities_by_control"), Mapping):
                blocks = [(f"{attr} within {lvl}", d) for lvl, d in a["disparities_by_control"].items()]
            else:
                continue
            for title, disp in blocks:
                _disparity_line(lines, label, title, disp)
        for attr, entry in (au.get("underdiagnosis") or {}).items():
            if entry.get("worst_group") is not None:
                lines.append(f"under-diagnosis [{label}] by {attr}: worst {entry['worst_group']} "
                             f"({entry['worst_rate']:.3f}), gap {entry['difference'] or 0:.3f}")
    if isinstance(bias.get("widened"), list) and bias["widened"]:
        lines.append(f"disparities that grew ({bias['models'][0]} -> {bias['models'][-1]}): "
                     + "; ".join(bias["widened"][:8]) + (" ..." if len(bias["widened"]) > 8 else ""))
    if isinstance(bias.get("widened_beyond_ci"), list) and bias["widened_beyond_ci"]:
        lines.append("disparities widened beyond their CI: " + "; ".join(bias["widened_beyond_ci"]))
    return lines
