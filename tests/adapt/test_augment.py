"""Presets, label-exact masks, target restyling and the augmented dataset (fast tests)."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from shiftkit.adapt.augment import (  # noqa: E402
    FAMILIES,
    PRESETS,
    AugmentedDataset,
    Augmenter,
    build_family,
    combine,
    get_preset,
    load_target_pool,
    target_restyle,
)
from shiftkit.adapt.augment.features import shift_features  # noqa: E402
from shiftkit.datasets.errors import DataError  # noqa: E402

SIZE = 48


def scene(seed: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image with structure, and a blocky label map using labels {0, 2, 5, 7}
    (non-adjacent values, so any interpolation between labels would show up as a new value)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = 0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 3)) * np.cos(4 * yy)
    img = np.clip(np.stack([base * rng.uniform(0.7, 1.0) for _ in range(channels)], -1), 0, 1)
    labels = np.array([0, 2, 5, 7])[rng.integers(0, 4, (6, 6))]
    mask = np.kron(labels, np.ones((SIZE // 6, SIZE // 6), dtype=np.int64))
    return img.astype(np.float32), mask.astype(np.int64)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_masks_stay_label_exact_under_every_preset(preset: str, channels: int) -> None:
    """The mask after == the source mask sampled where the spatial transform took each pixel
    from (read off an index map pushed through the very same draw), values only from the
    original label set, and unchanged altogether when the preset is pixel-only."""
    moved = 0
    index = np.arange(SIZE * SIZE, dtype=np.int64).reshape(SIZE, SIZE)
    for strength in (0.5, 1.0):
        aug = get_preset(preset, strength, p=1.0, image_size=SIZE, seed=11)
        pixel_only = get_preset(preset, strength, p=1.0, image_size=SIZE, seed=11, spatial=False)
        for k in range(6):
            img, mask = scene(k, channels)
            out = aug(img, mask, seed=k)
            where = aug(img, index, seed=k)["mask"]  # same seed -> same spatial draw
            assert out["mask"].dtype == np.int64 and out["mask"].shape == mask.shape
            np.testing.assert_array_equal(out["mask"], mask.ravel()[where])
            assert set(np.unique(out["mask"])) <= {0, 2, 5, 7}
            moved += int(not np.array_equal(where, index))
            still = pixel_only(img, mask, seed=k)
            np.testing.assert_array_equal(still["mask"], mask)
            assert not np.array_equal(still["image"], img)
    if preset == "photometric":  # pixel-only by design: no draw may move a pixel
        assert moved == 0
    else:
        assert moved >= 6  # the spatial part really moved pixels, so the check above had teeth


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_pixel_only_and_keeps_shape_dtype_range(name: str) -> None:
    for channels in (1, 3):
        img, mask = scene(1, channels)
        for image in (img, (img * 255).round().astype(np.uint8)):
            out = Augmenter(build_family(name, 1.0, image_size=SIZE), seed=3)(image, mask)
            assert out["image"].shape == image.shape and out["image"].dtype == image.dtype
            np.testing.assert_array_equal(out["mask"], mask)
            if image.dtype == np.float32:
                assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    # a 2-D grey image comes back 2-D
    grey2d = scene(2, 1)[0][:, :, 0]
    assert Augmenter(build_family(name, 0.5, image_size=SIZE))(grey2d)["image"].shape == grey2d.shape


def test_strength_zero_is_identity_and_strength_scales_the_change() -> None:
    img, mask = scene(3, 1)
    for name in PRESETS:
        out = get_preset(name, 0.0, p=1.0)(img, mask)
        np.testing.assert_array_equal(out["image"], img)
        np.testing.assert_array_equal(out["mask"], mask)
    # a family's effect grows with strength (mean over draws)
    for fam in ("noise", "blur", "fog"):
        change = []
        for s in (0.2, 1.0):
            aug = Augmenter(build_family(fam, s, image_size=SIZE), seed=0)
            change.append(np.mean([np.abs(aug(img)["image"] - img).mean() for _ in range(8)]))
        assert change[1] > 1.5 * change[0], (fam, change)
    with pytest.raises(ValueError, match="strength"):
        get_preset("radiograph_acquisition", 1.5)


def test_same_seed_reproduces_and_transforms_draw_independently() -> None:
    img, _ = scene(4, 3)
    a = get_preset("driving_conditions", 0.8, image_size=SIZE, seed=5)
    b = get_preset("driving_conditions", 0.8, image_size=SIZE, seed=5)
    c = get_preset("driving_conditions", 0.8, image_size=SIZE, seed=6)
    ra = [a(img)["image"] for _ in range(4)]
    rb = [b(img)["image"] for _ in range(4)]
    rc = [c(img)["image"] for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(ra, rb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(ra, rc, strict=True))
    assert not np.array_equal(ra[0], ra[1])  # successive calls differ
    # albumentations' Compose(seed=) gives every child the same seed, so two p=0.5 transforms
    # would always fire together; ours are seeded apart.
    from albumentations import HorizontalFlip, VerticalFlip

    both = Augmenter([HorizontalFlip(p=0.5), VerticalFlip(p=0.5)], seed=0)
    probe = np.arange(16, dtype=np.float32).reshape(4, 4, 1) / 16
    outcomes = set()
    for _ in range(40):
        out = both(probe)["image"][:, :, 0]
        outcomes.add((bool(out[0, 0] == probe[0, -1, 0] or out[0, 0] == probe[-1, -1, 0]),
                      bool(out[0, 0] == probe[-1, 0, 0] or out[0, 0] == probe[-1, -1, 0])))
    assert len(outcomes) == 4


def test_item_wrapper_round_trips_shiftkit_items() -> None:
    img, mask = scene(5, 1)
    item = {"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "mask": torch.from_numpy(mask),
            "label": torch.tensor(1), "domain": "city", "index": 3}
    aug = get_preset("radiograph_acquisition", 0.7, p=1.0, image_size=SIZE)
    out = aug.item_transform()(item)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (1, SIZE, SIZE)
    assert out["mask"].dtype == torch.int64 and out["mask"].shape == (SIZE, SIZE)
    assert out["domain"] == "city" and int(out["label"]) == 1 and out["index"] == 3
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    with pytest.raises(DataError, match="mask"):
        aug(img, mask[:-1])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        aug(img * 3)


def _pool(n: int, channels: int, bright: bool) -> np.ndarray:
    rng = np.random.default_rng(7 if bright else 8)
    imgs = np.stack([scene(int(rng.integers(0, 1000)), channels)[0] for _ in range(n)])
    if bright:  # the "target": brighter, flatter, with a display gamma
        imgs = np.clip(0.35 + 0.6 * imgs**0.5, 0, 1)
    else:
        imgs = imgs * 0.6
    return imgs.astype(np.float32)


@pytest.mark.parametrize("method", ["fda", "histogram", "pda", "mixed"])
def test_restyle_moves_source_toward_target_through_metadata(method: str) -> None:
    src, tgt = _pool(24, 3, bright=False), _pool(24, 3, bright=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deprecated reference_images path would warn
        aug = target_restyle(tgt, method=method, strength=1.0, seed=0)  # NHWC array pool
        restyled = np.stack([aug(im)["image"] for im in src])
    # Restyling targets global intensity and colour statistics: mean, sd and percentiles of the
    # grey level (columns 16-24 of shift_features) and channel means and sds (40-45).
    cols = np.r_[16:25, 40:46]
    f_src, f_tgt, f_new = (shift_features(x)[:, cols] for x in (src, tgt, restyled))
    sd = np.concatenate([f_src, f_tgt]).std(0)
    used = sd > 1e-3

    def dist(a: np.ndarray) -> float:
        return float(np.linalg.norm((a.mean(0) - f_tgt.mean(0))[used] / sd[used]))

    assert dist(f_new) < 0.6 * dist(f_src), (method, dist(f_new), dist(f_src))
    # masks untouched, reproducible per seed
    img, mask = scene(0, 3)
    again = target_restyle(tgt, method=method, strength=1.0, seed=0)
    np.testing.assert_array_equal(again(src[0])["image"], restyled[0])
    np.testing.assert_array_equal(aug(img, mask)["mask"], mask)


def test_pda_blend_is_repaired_for_float_images() -> None:
    """albumentations 2.0.8's PixelDistributionAdaptation whitens float images for blend < 1;
    ours blends: the result lies between the source and the fully adapted image."""
    import albumentations as A

    src, tgt = _pool(1, 3, bright=False)[0], _pool(1, 3, bright=True)[0]
    broken = A.Compose([A.PixelDistributionAdaptation(blend_ratio=(0.5, 0.5), transform_type="standard",
                                                      metadata_key="ref", p=1.0)])(image=src, ref=[tgt])["image"]
    assert broken.mean() > 0.99  # the upstream bug this works around; if it fails, upstream is fixed
    half = target_restyle([tgt], method="pda", strength=1.0)
    half.transforms[0].blend_ratio = (0.5, 0.5)
    out = half(src)["image"]
    assert src.mean() + 0.1 < out.mean() < tgt.mean() - 0.1


def test_target_pool_reads_manifest_dataset_and_arrays(tmp_path) -> None:
    from PIL import Image

    rows = ["image,domain,split,label"]
    for i in range(6):
        arr = (scene(i, 1)[0][:, :, 0] * 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"im{i}.png")
        rows.append(f"im{i}.png,{'rural' if i % 2 else 'city'},train,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    pool = load_target_pool(tmp_path / "manifest.csv", domain="rural")
    assert len(pool) == 3 and pool[0].shape == (SIZE, SIZE, 1) and pool[0].dtype == np.float32
    with pytest.raises(DataError, match="no rows"):
        load_target_pool(tmp_path / "manifest.csv", domain="mars")

    nchw = torch.rand(5, 3, 20, 24)
    from_tensor = load_target_pool(nchw)
    assert from_tensor[0].shape == (20, 24, 3)
    np.testing.assert_allclose(from_tensor[1], nchw[1].permute(1, 2, 0).numpy())
    assert load_target_pool(np.random.rand(4, 20, 24), max_images=2)[0].shape == (20, 24, 1)
    with pytest.raises(DataError, match="ambiguous"):
        load_target_pool(np.random.rand(2, 3, 5, 3))
    ds = [{"image": torch.rand(1, 16, 16), "label": torch.tensor(-1)} for _ in range(4)]
    assert load_target_pool(ds)[0].shape == (16, 16, 1)
    with pytest.raises(DataError, match="outside"):
        load_target_pool(np.full((2, 8, 8, 1), 4.0, np.float32))
    # a grey pool restyles RGB images (channels matched once, cached)
    aug = target_restyle(load_target_pool(np.random.rand(4, 16, 16)), method="histogram")
    assert aug(np.random.rand(16, 16, 3).astype(np.float32))["image"].shape == (16, 16, 3)


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.items = [scene(i, 1) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        img, mask = self.items[i]
        return {"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "mask": torch.from_numpy(mask),
                "label": torch.tensor(i % 2), "index": i}


def test_augmented_dataset_is_deterministic_per_item_and_fresh_per_epoch() -> None:
    aug = combine(target_restyle(_pool(8, 1, bright=True), method="mixed"),
                  get_preset("radiograph_acquisition", 0.6, p=0.6, image_size=SIZE))
    ds = AugmentedDataset(_Items(6), aug, seed=1)
    ds.set_epoch(0)
    forward = [ds[i]["image"] for i in range(6)]
    backward = [ds[i]["image"] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))  # order-free
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], forward[0])
    assert len(ds) == 6 and ds[2]["index"] == 2 and int(ds[3]["label"]) == 1
    half = AugmentedDataset(_Items(6), aug, seed=1, p=0.0)
    assert torch.equal(half[0]["image"], _Items(1)[0]["image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 1, SIZE, SIZE) and batch["mask"].dtype == torch.int64
