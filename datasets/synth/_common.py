"""Machinery shared by the procedural benchmarks: seeding, the torch Dataset, PNG export.

Every generator is a pure function ``sample(domain, index, *, seed, size, split)``; this module
turns such a function into a deterministic torch Dataset and into PNG files + ``manifest.csv``.

Determinism: one image depends only on (domain, seed, split, index), through
``numpy.random.SeedSequence``, so any worker process regenerates the same item, and
``SynthDataset(domain, n, split="test")[i]`` is the same image as the i-th test row an
``export`` of that domain wrote.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..files import atomic_write_bytes

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Split None (a plain stream, no split) gets code 0 so it never collides with a named split.
_SPLIT_CODE = {None: 0, "train": 1, "val": 2, "test": 3}

SampleFn = Callable[..., dict[str, Any]]


def check_split(split: str | None) -> None:
    """Raise `DataError` unless ``split`` is None or one of ``SPLITS``."""
    if split not in _SPLIT_CODE:
        raise DataError(f"split={split!r}: expected one of {list(SPLITS)} or None")


def make_rng(domain: str, seed: int, split: str | None, index: int) -> np.random.Generator:
    """The random stream of one generated item.

    ``crc32`` of the domain name (not Python's salted ``hash``) keeps streams identical
    across processes and interpreter runs.
    """
    check_split(split)
    if index < 0:
        raise DataError(f"index={index}: must be >= 0")
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(domain.encode()), _SPLIT_CODE[split], int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


_NOISE_BANK_SIZE = 1 << 21


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard-normal float32 values (8 MiB), drawn once per process.

    Drawing 16k-65k fresh normals per image is the slowest step of generation; a random
    contiguous window of a fixed bank costs nothing and is just as noisy to a model.
    """
    return np.random.default_rng(20240607).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of ``shape`` (a view into the bank; do not modify in place)."""
    n = math.prod(shape)  # math.prod: np.prod costs microseconds on a tuple
    bank = _noise_bank()
    if n > bank.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - n))
    return bank[start:start + n].reshape(shape)


@lru_cache(maxsize=512)
def glyph(text: str, scale: float, thickness: int) -> tuple[np.ndarray, int]:
    """A cached float32 alpha stencil (0..1) of ``text`` (OpenCV Hershey simplex) and its baseline offset.

    OpenCV >= 5 draws text on 8-bit images only and ``putText`` on a full frame per image is
    slow; stencils are drawn once, kept as float alpha (no per-paste conversion) and pasted
    with `paste_glyph`.
    """
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = thickness + 1
    patch = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(patch, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = patch.astype(np.float32) * np.float32(1.0 / 255.0)
    alpha.setflags(write=False)
    return alpha, th + pad


def paste_glyph(img: np.ndarray, patch: np.ndarray, top: int, left: int, value: float | np.ndarray) -> None:
    """Burn a `glyph` stencil into ``img`` (H, W) or (H, W, C) at (top, left), clipped to the frame."""
    h, w = img.shape[:2]
    ph, pw = patch.shape
    i0, j0 = max(top, 0), max(left, 0)
    i1, j1 = min(top + ph, h), min(left + pw, w)
    if i0 >= i1 or j0 >= j1:
        return
    alpha = patch[i0 - top:i1 - top, j0 - left:j1 - left]
    region = img[i0:i1, j0:j1]
    if region.ndim == 3:
        alpha = alpha[..., None]
    region += alpha * (np.asarray(value, np.float32) - region)


def check_domain(domain: str, domains: Sequence[str], what: str) -> None:
    """Raise `DataError` naming the known domains when ``domain`` is not one of them."""
    if domain not in domains:
        raise DataError(f"unknown {what} domain {domain!r}; known: {', '.join(domains)}")


def check_size(size: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    """Normalise ``size`` (int or (H, W)) and reject sizes too small to draw anatomy into."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(s) for s in size)
    else:
        raise DataError(f"size={size!r}: expected an int or a (height, width) pair")
    if h < minimum or w < minimum:
        raise DataError(f"size={size!r}: each side must be >= {minimum} pixels")
    return h, w


def split_counts(n: int, splits: Sequence[float]) -> dict[str, int]:
    """How many of ``n`` items go to train / val / test for fractions ``splits``.

    Rounding leftovers go to train, so the counts always add up to ``n``.
    """
    if len(splits) != 3 or any(not np.isfinite(f) or f < 0 for f in splits) or sum(splits) <= 0:
        raise DataError(f"splits={tuple(splits)!r}: expected three non-negative fractions (train, val, test)")
    total = float(sum(splits))
    n_val = int(round(n * splits[1] / total))
    n_test = int(round(n * splits[2] / total))
    n_train = max(n - n_val - n_test, 0)
    return {"train": n_train, "val": n_val, "test": n_test}


def to_item(sample: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Convert one ``sample()`` dict into the `ManifestDataset` item layout.

    image -> float32 tensor (C, H, W); label -> int64 scalar tensor; mask -> int64 tensor (H, W);
    the rest (domain, index, attributes) stay str / int / float so ``default_collate`` works.
    """
    item: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32)),
        "label": torch.tensor(int(sample["label"]), dtype=torch.int64),
        "mask": torch.from_numpy(np.ascontiguousarray(sample["mask"], dtype=np.int64)),
        "domain": str(sample["domain"]),
        "index": int(sample["index"]),
    }
    for k in keys:
        item[k] = sample[k]
    return item


class SynthDatasetBase(Dataset):
    """A torch Dataset over ``n`` generated items of one domain (generated lazily, per index)."""

    _sample: SampleFn
    _domains: tuple[str, ...]
    _attributes: tuple[str, ...]
    _default_size: int | tuple[int, int]
    _min_size: int

    def __init__(
        self,
        domain: str,
        n: int,
        *,
        seed: int = 0,
        size: int | tuple[int, int] | None = None,
        split: str | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_domain(domain, self._domains, type(self).__module__.rsplit(".", 1)[-1])
        check_split(split)
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise DataError(f"n={n!r}: expected a non-negative int")
        self.domain = domain
        self.n = int(n)
        self.seed = int(seed)
        self.size = self._default_size if size is None else size
        check_size(self.size, self._min_size)
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> dict[str, Any]:
        """The raw numpy ``sample()`` dict of item ``index`` (extra keys included)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        fn = type(self)._sample
        return fn(self.domain, index, seed=self.seed, size=self.size, split=self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = to_item(self.sample(int(index)), self._attributes)
        return self.transform(item) if self.transform is not None else item


# ----------------------------------------------------------------------------------------------
# Writing files


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a grey (H, W) or RGB (H, W, 3) uint8/uint16 array (RGB order)."""
    import cv2

    if array.ndim == 3:
        array = array[..., ::-1]  # cv2 writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 only fails on unsupported dtypes, which we never pass
        raise DataError(f"could not encode a {array.dtype} array of shape {array.shape} as PNG")
    return buf.tobytes()


def write_manifest(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` as CSV with ``columns`` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def export_generic(
    sample_fn: SampleFn,
    known_domains: Sequence[str],
    what: str,
    out_dir: str | os.PathLike[str],
    domains: Sequence[str] | str,
    n_per_domain: int,
    *,
    seed: int,
    size: int | tuple[int, int],
    min_size: int,
    splits: Sequence[float],
    attributes: Sequence[str],
    image_to_array: Callable[[np.ndarray], np.ndarray],
    progress: bool = True,
) -> Path:
    """Generate and write images, masks and ``manifest.csv``; return the manifest path.

    Layout: ``out_dir/<domain>/<split>/<index>.png`` and ``.../<index>_mask.png``; manifest
    paths are relative to ``out_dir``. Item i of split s equals ``sample(domain, i, split=s)``.
    """
    from ..progress import progress_bar

    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    if not domains:
        raise DataError(f"no {what} domains given; known: {', '.join(known_domains)}")
    for d in domains:
        check_domain(d, known_domains, what)
    if not isinstance(n_per_domain, (int, np.integer)) or n_per_domain < 1:
        raise DataError(f"n_per_domain={n_per_domain!r}: expected an int >= 1")
    check_size(size, min_size)
    counts = split_counts(int(n_per_domain), splits)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    total = len(domains) * int(n_per_domain)
    with progress_bar(total=total, desc=f"synth {what}", unit="img", enabled=progress) as bar:
        for domain in domains:
            for split in SPLITS:
                for i in range(counts[split]):
                    s = sample_fn(domain, i, seed=seed, size=size, split=split)
                    rel_img = f"{domain}/{split}/{i:06d}.png"
                    rel_mask = f"{domain}/{split}/{i:06d}_mask.png"
                    atomic_write_bytes(out / rel_img, encode_png(image_to_array(s["image"])))
                    atomic_write_bytes(out / rel_mask, encode_png(s["mask"].astype(np.uint8)))
                    row = {"image": rel_img, "label": int(s["label"]), "mask": rel_mask,
                           "domain": domain, "split": split}
                    row.update({k: s[k] for k in attributes})
                    rows.append(row)
                    bar.update(1)
    manifest = out / "manifest.csv"
    write_manifest(manifest, rows, ["image", "label", "mask", "domain", "split", *attributes])
    return manifest


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8 (what an RGB PNG stores)."""
    return np.round(image.transpose(1, 2, 0) * 255.0).astype(np.uint8)
