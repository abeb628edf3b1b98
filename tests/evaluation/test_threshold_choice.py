"""The operating threshold of a binary classifier chosen from source data (evaluation.thresholds)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from shiftkit.datasets.errors import DataError
from shiftkit.evaluation.metrics import classification_metrics
from shiftkit.evaluation.thresholds import (
    THRESHOLD_MODES,
    prior_threshold,
    resolve_threshold,
    youden_threshold,
)


def _calibrated(n: int, prevalence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores calibrated by construction: q ~ Beta, then y ~ Bernoulli(q); E[q] = prevalence."""
    rng = np.random.default_rng(seed)
    a = 2.0
    q = rng.beta(a, a * (1 - prevalence) / prevalence, size=n)
    y = (rng.random(n) < q).astype(np.int64)
    return y, q


def test_prior_threshold_beats_one_half_on_calibrated_scores_and_matches_sklearn() -> None:
    y_train, _ = _calibrated(5000, 0.3, seed=0)
    y, q = _calibrated(20000, 0.3, seed=1)
    t = prior_threshold(y_train)
    assert abs(t - 0.3) < 0.02
    at_prior = classification_metrics(y, q, threshold=t)
    at_half = classification_metrics(y, q, threshold=0.5)
    assert at_prior["threshold"] == pytest.approx(t)
    assert at_prior["balanced_accuracy"] > at_half["balanced_accuracy"] + 0.05
    assert at_prior["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (q >= t).astype(int)))
    assert at_half["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (q >= 0.5).astype(int)))
    # the threshold moves the labels only: ECE and AUROC are the same at both thresholds
    assert at_prior["ece"] == at_half["ece"] and at_prior["auroc"] == at_half["auroc"]


def test_youden_threshold_maximises_balanced_accuracy_on_the_data_it_sees() -> None:
    y, q = _calibrated(3000, 0.3, seed=2)
    t = youden_threshold(y, q)
    best = balanced_accuracy_score(y, (q >= t).astype(int))
    for other in np.linspace(0.01, 0.99, 99):
        assert balanced_accuracy_score(y, (q >= other).astype(int)) <= best + 1e-12
    # near the prior on calibrated scores (the expected-balanced-accuracy optimum)
    assert abs(t - 0.3) < 0.08
    assert not np.any(q == t)  # halfway between two scores, never on a sample
    assert youden_threshold(y, np.stack([1 - q, q], 1)) == t


def test_unlabelled_rows_are_left_out_and_one_class_is_an_error() -> None:
    assert prior_threshold([0, 1, 1, 0, -1, -1]) == pytest.approx(0.5)
    with pytest.raises(DataError, match="both classes"):
        youden_threshold([1, 1, 1], [0.2, 0.6, 0.9])
    with pytest.raises(DataError, match="binary"):
        prior_threshold([0, 1, 2])
    with pytest.raises(DataError, match="both classes"):  # a prior of 1 would label everything class 1
        prior_threshold([1, 1, 1])


def test_resolve_threshold_reads_each_setting_and_names_bad_ones() -> None:
    assert resolve_threshold(0.25) == 0.25
    assert resolve_threshold("source_prior", source_labels=[0, 0, 0, 1]) == pytest.approx(0.25)
    y, q = _calibrated(500, 0.3, seed=3)
    assert resolve_threshold("source_val", val_labels=y, val_proba=q) == youden_threshold(y, q)
    for bad, says in ((1.0, r"\(0, 1\)"), (0, r"\(0, 1\)"), (float("nan"), r"\(0, 1\)"), ("prior", "unknown")):
        with pytest.raises(DataError, match=says):
            resolve_threshold(bad)
    with pytest.raises(DataError, match="source training labels"):
        resolve_threshold("source_prior")


def test_config_names_the_same_modes() -> None:
    from shiftkit.adapt.job.config import THRESHOLD_MODES as CONFIG_MODES

    assert tuple(CONFIG_MODES) == tuple(THRESHOLD_MODES)
