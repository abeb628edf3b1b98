"""ManifestDataset: item layout, collation, workers, MONAI / albumentations, skipping bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shiftkit.datasets import DataError, ImageReadError, ManifestDataset, load_manifest, scan_readable
from shiftkit.datasets.synth import radiograph


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    return radiograph.export(out, ["city", "rural"], 10, size=32, progress=False)


def test_item_layout_and_default_collate(exported):
    ds = ManifestDataset(load_manifest(exported))
    assert len(ds) == 20
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 32, 32)
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (32, 32)
    assert set(item) == {"image", "label", "mask", "domain", "index", "sex", "age", "site", "portable"}
    assert isinstance(item["age"], int) and item["sex"] in ("F", "M")
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["image"].shape == (8, 1, 32, 32) and batch["mask"].shape == (8, 32, 32)
    assert batch["age"].dtype == torch.int64 and len(batch["sex"]) == 8


def test_synth_dataset_matches_exported_rows(exported):
    ds = ManifestDataset(exported, domains="rural", split="test")
    synth = radiograph.SynthDataset("rural", len(ds), size=32, split="test")
    assert set(synth[0]) == set(ds[0])
    for i in range(len(ds)):
        a, b = ds[i], synth[i]
        assert torch.allclose(a["image"], b["image"], atol=1 / 65535 + 1e-6)  # 16-bit PNG round trip
        assert torch.equal(a["mask"], b["mask"]) and int(a["label"]) == int(b["label"])
        assert (a["sex"], a["age"], a["site"], a["portable"]) == (b["sex"], b["age"], b["site"], b["portable"])


def test_dataloader_with_workers(exported):
    ds = ManifestDataset(exported)
    seen = []
    for batch in DataLoader(ds, batch_size=5, num_workers=2, shuffle=False):
        seen.extend(batch["index"].tolist())
    assert seen == list(range(len(ds)))


def test_monai_dict_transforms_and_cache_datasets(exported, tmp_path):
    from monai.data import CacheDataset, PersistentDataset
    from monai.transforms import Compose, EnsureChannelFirstd, RandFlipd, ScaleIntensityd, SqueezeDimd

    frame = load_manifest(exported)
    # MONAI wants channel-first arrays: give the (H, W) mask a channel for the spatial step, then drop it
    flip = Compose([EnsureChannelFirstd(keys="mask", channel_dim="no_channel"),
                    RandFlipd(keys=["image", "mask"], prob=1.0, spatial_axis=1),
                    SqueezeDimd(keys="mask", dim=0),
                    ScaleIntensityd(keys="image")])
    plain = ManifestDataset(frame)
    flipped = ManifestDataset(frame, transform=flip)
    a, b = plain[3], flipped[3]
    # the mask followed the image: flipping back restores both
    assert torch.equal(torch.as_tensor(b["mask"]).flip(-1), a["mask"])
    assert float(torch.as_tensor(b["image"]).max()) == pytest.approx(1.0)
    cached = CacheDataset(data=ManifestDataset(frame), transform=None, cache_rate=1.0, num_workers=0,
                          progress=False)
    assert torch.equal(cached[2]["image"], plain[2]["image"])
    items = [plain[i] for i in range(3)]
    persistent = PersistentDataset(data=items, transform=ScaleIntensityd(keys="image"),
                                   cache_dir=str(tmp_path / "pc"))
    assert torch.as_tensor(persistent[1]["image"]).shape == (1, 32, 32)
    assert os.listdir(tmp_path / "pc")


def test_albumentations_spatial_transform_moves_mask_with_image(exported):
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    aug = A.Compose([A.HorizontalFlip(p=1.0), A.RandomBrightnessContrast(p=1.0)], seed=0)

    def transform(item):
        out = aug(image=item["image"].numpy().transpose(1, 2, 0), mask=item["mask"].numpy())
        item["image"] = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        item["mask"] = torch.from_numpy(np.ascontiguousarray(out["mask"]))
        return item

    frame = load_manifest(exported)
    a, b = ManifestDataset(frame)[1], ManifestDataset(frame, transform=transform)[1]
    assert torch.equal(b["mask"], a["mask"].flip(-1))
    assert b["image"].shape == a["image"].shape and not torch.equal(b["image"], a["image"].flip(-1))


def _broken_copy(exported, tmp_path):
    """A manifest with one corrupt image, one wrong-size mask, one truncated image."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(exported.parent, root)
    f = load_manifest(root / "manifest.csv")
    (root / "city/train/000000.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    data = (root / "city/train/000001.png").read_bytes()
    (root / "city/train/000001.png").write_bytes(data[: len(data) // 2])
    import cv2

    cv2.imwrite(str(root / "city/train/000002_mask.png"), np.zeros((10, 12), np.uint8))
    return f


def test_bad_files_clear_errors_and_skip_bad(exported, tmp_path):
    f = _broken_copy(exported, tmp_path)
    ds = ManifestDataset(f)
    with pytest.raises(ImageReadError, match="000000.png"):
        ds[0]
    with pytest.raises(ImageReadError, match="000001.png"):
        ds[1]
    with pytest.raises(ImageReadError, match=r"000002_mask.png: mask shape \(10, 12\) does not match"):
        ds[2]
    good, bad = scan_readable(f, progress=False)
    assert len(good) == len(f) - 3
    assert [b.row for b in bad] == [1, 2, 3]
    assert bad[2].path.endswith("000002_mask.png")
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        skipping = ManifestDataset(f, skip_bad=True)
    assert len(skipping) == len(f) - 3 and len(skipping.bad) == 3
    assert next(iter(DataLoader(skipping, batch_size=4)))["image"].shape[0] == 4


def test_missing_file_after_loading_names_it(exported, tmp_path):
    f = load_manifest(exported)
    f.loc[0, "image"] = str(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="gone.png: file not found"):
        ManifestDataset(f)[0]


def test_empty_domain_and_split(exported):
    f = load_manifest(exported)
    with pytest.raises(DataError, match=r"no rows for domain\(s\) \['suburb'\]"):
        ManifestDataset(f, domains="suburb")
    with pytest.raises(DataError, match="no rows in split 'holdout'"):
        ManifestDataset(f, split="holdout")


def test_rows_without_mask_get_ignore_mask(tmp_path, write_png):
    write_png(tmp_path / "a.png", np.zeros((4, 6), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((4, 6), np.uint8))
    write_png(tmp_path / "bm.png", np.ones((4, 6), np.uint8))
    (tmp_path / "m.csv").write_text("image,mask,domain,age\na.png,,x,\nb.png,bm.png,x,3.5\n")
    ds = ManifestDataset(tmp_path / "m.csv")
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["mask"][0].eq(-1).all() and batch["mask"][1].eq(1).all()
    assert torch.isnan(batch["age"][0]) and batch["age"][1] == 3.5
    assert batch["label"].tolist() == [-1, -1]
