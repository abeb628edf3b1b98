"""What the harness and ``auto`` add to label-free selection: the candidates' ensemble scored from
stored cells (accuracy, segmentation and binary AUROC cells), and the pseudo-target validation set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, jaccard_score, roc_auc_score

import shiftkit.adapt.harness.efficacy  # noqa: F401  (loads the harness before its table module)


def _cell(role_arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
    return {"target": math.nan}, role_arrays


def test_the_harness_scores_the_ensemble_of_accuracy_and_segmentation_cells_as_sklearn_does() -> None:
    from shiftkit.adapt.harness.table import _ensemble_cell

    rng = np.random.default_rng(3)
    n, k = 300, 5
    y, ys = rng.integers(0, k, n), rng.integers(0, k, 80)
    cells, means = {}, []
    for i in range(3):
        p = rng.dirichlet(np.ones(k), n).astype(np.float16)
        ps = rng.dirichlet(np.ones(k), 80).astype(np.float16)
        cells[f"m{i}"] = _cell({"target_label": y.astype(np.int8), "target_pred": p.argmax(1).astype(np.int8),
                                "source_label": ys.astype(np.int8), "source_pred": ps.argmax(1).astype(np.int8),
                                "ens_target_proba": p, "ens_source_proba": ps})
        means.append(p.astype(np.float32))
    res, arrays = _ensemble_cell(cells)
    assert res["target"] == pytest.approx(accuracy_score(y, np.mean(means, 0).argmax(1)), abs=1e-12)
    assert res["target_ci"][0] <= res["target"] <= res["target_ci"][1]

    # Segmentation: uint8 probabilities, the masks stored beside them; mIoU over present classes.
    h, w = 6, 7
    masks = rng.integers(0, k, (20, h, w)).astype(np.uint8)
    seg, pmeans = {}, []
    for i in range(3):
        p = np.rint(rng.dirichlet(np.ones(k), (20, h, w)).transpose(0, 3, 1, 2) * 255).astype(np.uint8)
        seg[f"m{i}"] = _cell({"ens_target_proba": p, "ens_target_mask": masks,
                              "ens_source_proba": p[:5], "ens_source_mask": masks[:5]})
        pmeans.append(p.astype(np.float32))
    res, _ = _ensemble_cell(seg)
    pred = np.mean(pmeans, 0).argmax(1)
    present = np.union1d(np.unique(masks), np.unique(pred))
    assert res["target"] == pytest.approx(jaccard_score(masks.ravel(), pred.ravel(), labels=present,
                                                        average="macro"), abs=1e-9)

    # Binary AUROC cells average the positive-class score.
    yb = rng.integers(0, 2, n)
    scores = [rng.random(n).astype(np.float32) for _ in range(3)]
    binary = {f"m{i}": _cell({"target_label": yb.astype(np.int8), "target_score": s,
                              "source_label": yb.astype(np.int8), "source_score": s}) for i, s in enumerate(scores)}
    res, _ = _ensemble_cell(binary)
    assert res["target"] == pytest.approx(roc_auc_score(yb, np.mean(scores, 0)), abs=1e-9)
    # Cells with neither (made before probabilities were stored) give no ensemble.
    assert _ensemble_cell({"m": _cell({"target_label": yb, "target_pred": yb})}) is None


def test_restyled_validation_keeps_the_images_and_moves_their_look_to_the_target() -> None:
    from shiftkit.adapt.harness.auto_select import restyled_validation
    from shiftkit.adapt.training.data import ArrayDataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    shapes = np.stack([((yy - 16) ** 2 + (xx - 10 - i % 12) ** 2 < 40).astype(np.float32) for i in range(24)])
    source = (0.2 + 0.3 * shapes + 0.02 * rng.normal(size=shapes.shape)).clip(0, 1)[:, None]  # dark, low contrast
    target = (0.5 + 0.45 * rng.random((40, 1, 32, 32))).astype(np.float32)  # bright
    out = restyled_validation(ArrayDataset(source.astype(np.float32)), target, "classification")
    again = restyled_validation(ArrayDataset(source.astype(np.float32)), target, "classification")
    assert out.shape == source.shape and out.dtype == np.float32 and np.array_equal(out, again)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert abs(out.mean() - target.mean()) < 0.5 * abs(source.mean() - target.mean())
    # The content stays where it was: each restyled image still correlates with its own shape.
    corr = [np.corrcoef(out[i, 0].ravel(), shapes[i].ravel())[0, 1] for i in range(len(out))]
    assert np.median(corr) > 0.5


class _Thresholder:
    """A fitted-method stand-in: P(class 1) from the mean brightness of the image's centre,
    either in absolute terms (``relative=False``: what a scanner change breaks) or relative to
    the image's own mean (``relative=True``: what it does not)."""

    def __init__(self, relative: bool):
        self.relative = relative

    def predict_proba_and_features(self, dataset, batch_size: int = 128):
        x = np.stack([np.asarray(dataset[i]["image"], np.float32) for i in range(len(dataset))])
        centre = x[:, :, 12:20, 12:20].mean((1, 2, 3))
        s = centre - x.mean((1, 2, 3)) if self.relative else centre - 0.3
        p1 = 1 / (1 + np.exp(-40 * s))
        return np.stack([1 - p1, p1], 1), x.reshape(len(x), -1)[:, ::16]


def test_restyled_validation_prefers_the_candidate_that_survives_the_acquisition_shift() -> None:
    from shiftkit.adapt.harness.auto_select import candidate_outputs
    from shiftkit.adapt.training.data import ArrayDataset
    from shiftkit.evaluation.selection import select

    rng = np.random.default_rng(0)

    def images(n: int, exposure: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = 0.2 + 0.03 * rng.normal(size=(n, 1, 32, 32))
        x[:, :, 12:20, 12:20] += 0.2 * y[:, None, None, None]
        x += rng.uniform(0, exposure, (n, 1, 1, 1))  # per-image exposure
        return np.clip(x, 0, 1).astype(np.float32), y

    xs, ys = images(80, 0.0)
    xt, yt = images(80, 0.55)  # a scanner whose exposure varies: absolute thresholds break
    src_val = ArrayDataset(xs, labels=ys)
    outs = {name: candidate_outputs(_Thresholder(rel), src_val, ArrayDataset(xs), ArrayDataset(xt),
                                    "classification", 2)
            for name, rel in (("absolute", False), ("relative", True))}
    # Both are (nearly) perfect on the source validation set; only one survives the shift.
    assert outs["absolute"].source_val_score > 0.95 and outs["relative"].source_val_score > 0.95
    truth = {n: roc_auc_score(yt, _Thresholder(rel).predict_proba_and_features(ArrayDataset(xt))[0][:, 1])
             for n, rel in (("absolute", False), ("relative", True))}
    assert truth["relative"] > truth["absolute"] + 0.1
    sel = select(outs, "restyled_val")
    assert sel.chosen == "relative"
    assert outs["relative"].restyled_val_score > outs["absolute"].restyled_val_score + 0.1
    # Its standard error is measured with it (a bootstrap over the 80 validation images): zero
    # for a perfect ranking, positive for an imperfect one, and below the 0.1 lead above.
    assert outs["absolute"].restyled_val_score < 1 and 0.0 < outs["absolute"].restyled_val_se < 0.1
    assert 0.0 <= outs["relative"].restyled_val_se < 0.1
