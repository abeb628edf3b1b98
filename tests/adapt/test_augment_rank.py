"""The shift-ranking helper names the family a pair actually differs by."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shiftkit.adapt.augment import FAMILIES, rank_shift_families  # noqa: E402
from shiftkit.adapt.augment.rank import _mmd2_numpy  # noqa: E402

N, SIZE = 40, 48


def radiographs(n: int, offset: int = 0) -> np.ndarray:
    from shiftkit.datasets.synth import radiograph

    return np.stack([radiograph.sample("city", offset + i, size=SIZE)["image"] for i in range(n)])


def rgb_scenes(n: int, seed: int) -> np.ndarray:
    """Simple road-like RGB scenes (N, 3, H, W): sky, ground, random blocks; no augmentation lib."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    for k in range(n):
        img = np.empty((SIZE, SIZE, 3), np.float32)
        horizon = int(rng.integers(SIZE // 3, SIZE // 2))
        img[:horizon] = rng.uniform([0.4, 0.55, 0.75], [0.6, 0.7, 0.95])
        img[horizon:] = rng.uniform([0.2, 0.2, 0.2], [0.35, 0.35, 0.35])
        for _ in range(6):
            y, x = rng.integers(0, SIZE - 8, 2)
            h, w = rng.integers(4, 16, 2)
            img[y:y + h, x:x + w] = rng.uniform(0.05, 0.9, 3)
        img += rng.normal(0, 0.01, img.shape)
        out[k] = np.clip(img, 0, 1).transpose(2, 0, 1)
    return out


def test_noise_only_pair_ranks_a_noise_family_first() -> None:
    src, tgt = radiographs(N), radiographs(N, offset=N)
    rng = np.random.default_rng(0)
    tgt = np.clip(tgt + rng.normal(0, 0.06, tgt.shape), 0, 1).astype(np.float32)  # numpy noise, not albumentations
    table = rank_shift_families(src, tgt, strengths=(0.25, 0.5, 1.0), progress=False)
    assert table.iloc[0]["kind"] == "noise", table[["family", "kind", "reduction"]]
    assert table.iloc[0]["reduction"] > 0.5
    assert "noise" in table.attrs["summary"]
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert (np.diff(table["gap_after"]) >= 0).all()


def test_fog_only_pair_ranks_fog_first() -> None:
    src, tgt = rgb_scenes(N, 1), rgb_scenes(N, 2)
    # Fog written here in numpy (not shiftkit's family): a per-image veil of random thickness,
    # thicker toward the horizon, with a slightly blue-grey airlight and a little blur of the veil
    rng = np.random.default_rng(3)
    rows = np.linspace(0.0, 1.0, SIZE)[None, None, :, None]
    thick = rng.uniform(0.4, 1.0, (len(tgt), 1, 1, 1))
    t = np.exp(-thick * (1.6 - 0.8 * rows))
    air = np.array([0.8, 0.82, 0.86], np.float32)[None, :, None, None]
    tgt = np.clip(tgt * t + air * (1 - t), 0, 1).astype(np.float32)
    table = rank_shift_families(src, tgt, domain="driving", strengths=(0.5, 1.0), progress=False)
    assert table.iloc[0]["family"] == "fog", table[["family", "kind", "reduction"]]
    assert table.iloc[0]["reduction"] > 0.3


def test_identical_domains_have_nothing_to_explain_and_bad_input_is_named() -> None:
    src = radiographs(N)
    table = rank_shift_families(src[: N // 2], src[N // 2:], families=["noise", "blur"],
                                strengths=(0.5,), progress=False)
    assert (table["reduction"] < 0.05).all()
    assert "no single augmentation family" in table.attrs["summary"]
    with pytest.raises(ValueError, match="unknown family"):
        rank_shift_families(src, src, families=["hail"], progress=False)
    assert set(FAMILIES) >= {"exposure", "noise", "blur", "resolution", "fog", "night", "rain", "colour_cast"}


def test_numpy_mmd_matches_the_evaluation_package() -> None:
    from shiftkit.evaluation.gap import mmd2_unbiased

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(0.5, 1, size=(25, 4))
    assert _mmd2_numpy(x, y, 1.7) == pytest.approx(mmd2_unbiased(x, y, bandwidth=1.7), rel=1e-6)
