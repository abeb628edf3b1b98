"""The real-image benchmark: real digits, disjoint pools per data seed, a measurable acquisition shift."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from shiftkit.datasets import DataError
from shiftkit.datasets.synth import digits
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS


def test_item_contract_and_real_labels():
    ref = load_digits()
    for domain in digits.DOMAINS:
        s = digits.sample(domain, 3, seed=DEV_DATA_SEEDS[0], split="val", size=24)
        assert s["image"].shape == (3, 24, 24) and s["image"].dtype == np.float32
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert s["mask"].shape == (24, 24) and set(np.unique(s["mask"])) <= {0, 1} and s["mask"].any()
        # the label is the real digit's label, and the digit comes from the split's pool
        assert s["label"] == int(ref.target[s["digit_id"]])
        assert s["digit_id"] in digits.pool(domain, DEV_DATA_SEEDS[0], "val")
        assert s["device"] == domain
    ds = digits.SynthDataset("camera", 5, seed=DEV_DATA_SEEDS[0], split="test")
    item = ds[4]
    assert tuple(item["image"].shape) == (3, 32, 32) and 0 <= int(item["label"]) <= 9


def test_pools_are_disjoint_and_differ_between_data_seeds():
    n = len(load_digits().target)
    seed = DEV_DATA_SEEDS[0]
    src, tgt = digits.pool("scanner", seed, "train"), digits.pool("camera", seed, "train")
    val, test = digits.pool("camera", seed, "val"), digits.pool("scanner", seed, "test")
    parts = [set(src.tolist()), set(tgt.tolist()), set(val.tolist()), set(test.tolist())]
    assert sum(len(p) for p in parts) == n and len(set().union(*parts)) == n  # a partition
    assert np.array_equal(digits.pool("fax", seed, "train"), tgt)  # every non-source device shares a half
    other = digits.pool("scanner", DEV_DATA_SEEDS[1], "test")
    assert len(set(other.tolist()) ^ set(test.tolist())) > 0.5 * len(test)  # another seed, other test digits
    # items of a split only ever draw digits of that split's pool, beyond the pool's size too
    ids = {digits.sample("scanner", i, seed=seed, split="test", size=8)["digit_id"] for i in range(0, 2000, 97)}
    assert ids <= set(test.tolist())


def test_more_items_than_digits_repeat_the_digit_in_another_pose():
    seed = DEV_DATA_SEEDS[0]
    k = len(digits.pool("scanner", seed, "test"))
    a = digits.sample("scanner", 1, seed=seed, split="test")
    b = digits.sample("scanner", 1 + k, seed=seed, split="test")
    assert a["digit_id"] == b["digit_id"] and not np.array_equal(a["image"], b["image"])


def test_bad_domain_is_clear():
    with pytest.raises(DataError, match="unknown digits domain 'webcam'.*scanner"):
        digits.sample("webcam", 0)


def _xy(domain: str, n: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    items = [digits.sample(domain, i, seed=seed, split=split, size=16) for i in range(n)]
    return np.stack([s["image"].ravel() for s in items]), np.array([s["label"] for s in items])


def test_acquisition_shift_is_measurable_on_a_dev_seed():
    """A classifier trained on scanner images scores clearly lower on camera images than on
    scanner images (the shift is real), while one trained on camera images does better on
    camera than the scanner model (the target is learnable: a gap to win back)."""
    seed = DEV_DATA_SEEDS[0]
    xs, ys = _xy("scanner", 500, "train", seed)
    xt, yt = _xy("camera", 500, "train", seed)
    xs_test, ys_test = _xy("scanner", 300, "test", seed)
    xt_test, yt_test = _xy("camera", 300, "test", seed)
    src = LogisticRegression(max_iter=300, C=0.1).fit(xs, ys)
    tgt = LogisticRegression(max_iter=300, C=0.1).fit(xt, yt)
    s_s, s_t, t_t = src.score(xs_test, ys_test), src.score(xt_test, yt_test), tgt.score(xt_test, yt_test)
    print(f"\n[digits] scanner->scanner {s_s:.3f}  scanner->camera {s_t:.3f}  camera->camera {t_t:.3f}")
    assert s_s > 0.7
    assert s_s - s_t > 0.3
    assert t_t > s_t
