"""Streams of batches with a known change point, for drift monitoring tests and demos.

A stream is ``n_batches`` batches of ``batch_size`` generated images in arrival order. The
first ``change_point`` batches come from the scenario's ``before`` setting, the rest from its
``after`` setting, so a monitor's false alarms (before) and detection delay (after) can be
read off exactly.

Scenarios (:data:`SCENARIOS`):

- ``city_to_rural``: radiographs, the city hospital's DR room, then the rural hospital's CR
  plates and population (the default source -> target pair);
- ``scanner_change``: radiographs, city, then a teaching-hospital archive whose scanner stores
  images with inverted polarity;
- ``fog``: dashcam, urban day, then urban fog;
- ``city_to_night``: dashcam, urban day, then urban night;
- ``prevalence``: radiographs, rural at its own prevalence (0.40), then rural with the
  prevalence doubled (``after_prevalence``, default 0.80). Only the label mix changes: images
  are the same generator's rural images selected by label, so ``p(x | label)`` is unchanged.

Every batch is a dict: ``image`` float32 ``(B, C, H, W)``, ``label`` int64 ``(B,)``, ``mask``
int64 ``(B, H, W)``, ``domain`` / ``index`` (the generator's item index) / attribute columns as
lists, ``batch`` (its position) and
``shifted`` (bool: after the change point). Deterministic per (scenario, seed, split).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import atomic_write_bytes
from ._common import encode_png, to_uint8_rgb, write_manifest


@dataclass(frozen=True)
class Scenario:
    """Which generator and settings come before and after the change point."""

    benchmark: str
    before: str
    after: str
    description: str
    before_prevalence: float | None = None
    after_prevalence: float | None = None


SCENARIOS: dict[str, Scenario] = {
    "city_to_rural": Scenario("radiograph", "city", "rural", "radiographs: city hospital, then rural hospital"),
    "scanner_change": Scenario("radiograph", "city", "teaching",
                               "radiographs: city, then a scanner storing inverted polarity"),
    "fog": Scenario("dashcam", "urban_day", "urban_fog", "dashcam: urban day, then fog"),
    "city_to_night": Scenario("dashcam", "urban_day", "urban_night", "dashcam: urban day, then night"),
    "prevalence": Scenario("radiograph", "rural", "rural", "radiographs: rural, then rural with doubled prevalence",
                           before_prevalence=None, after_prevalence=0.80),
}

__all__ = ["SCENARIOS", "Scenario", "batches", "export_stream"]


def _module(benchmark: str):
    from . import get

    return get(benchmark)


def _check(scenario: str, n_batches: int, change_point: int, batch_size: int) -> Scenario:
    problems = []
    if scenario not in SCENARIOS:
        problems.append(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if not isinstance(n_batches, (int, np.integer)) or n_batches < 1:
        problems.append(f"n_batches={n_batches!r}: expected an int >= 1")
    if not isinstance(change_point, (int, np.integer)) or not 0 <= change_point <= max(int(n_batches), 0):
        problems.append(f"change_point={change_point!r}: expected an int in 0..n_batches")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
        problems.append(f"batch_size={batch_size!r}: expected an int >= 2")
    if problems:
        raise DataError("stream: " + "; ".join(problems))
    return SCENARIOS[scenario]


class _Source:
    """Items of one domain in index order, optionally re-mixed to a given prevalence."""

    def __init__(self, mod: Any, domain: str, seed: int, split: str | None, size: Any, prevalence: float | None,
                 rng: np.random.Generator):
        self.mod, self.domain, self.seed, self.split, self.size = mod, domain, seed, split, size
        self.prevalence, self.rng = prevalence, rng
        self.next_index = 0
        self.queues: dict[int, list[dict[str, Any]]] = {0: [], 1: []}

    def _gen(self) -> dict[str, Any]:
        s = self.mod.sample(self.domain, self.next_index, seed=self.seed, size=self.size, split=self.split)
        self.next_index += 1
        return s

    def take(self) -> dict[str, Any]:
        if self.prevalence is None:
            return self._gen()
        want = int(self.rng.random() < self.prevalence)
        while not self.queues[want]:
            s = self._gen()
            self.queues[int(s["label"])].append(s)
        return self.queues[want].pop(0)


def batches(scenario: str, n_batches: int, change_point: int, *, batch_size: int = 64, seed: int = 0,
            split: str | None = "test", size: int | tuple[int, int] | None = None,
            after_prevalence: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield the stream's batches in arrival order (see the module docstring).

    Args:
        scenario: a key of :data:`SCENARIOS`.
        n_batches: batches in the stream; change_point: index of the first shifted batch.
        batch_size: images per batch; seed / split: the generator's data seed and split.
        size: image size (default: 32 px radiographs, 32 x 64 dashcam frames).
        after_prevalence: override the scenario's prevalence after the change (``prevalence``).
    """
    sc = _check(scenario, n_batches, change_point, batch_size)
    mod = _module(sc.benchmark)
    size = size if size is not None else (32 if sc.benchmark == "radiograph" else (32, 64))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7, len(scenario)])
    after_prev = after_prevalence if after_prevalence is not None else sc.after_prevalence
    if after_prev is not None and not 0 <= after_prev <= 1:
        raise DataError(f"stream: after_prevalence={after_prev!r}: expected a share in [0, 1]")
    before = _Source(mod, sc.before, seed, split, size, sc.before_prevalence, rng)
    # the same domain before and after (prevalence scenario) shares one index stream: no image twice
    after = before if sc.after == sc.before else _Source(mod, sc.after, seed, split, size, None, rng)
    attrs = mod.ATTRIBUTES
    for b in range(int(n_batches)):
        shifted = b >= change_point
        src = after if shifted else before
        src_prev = src.prevalence
        if shifted and after_prev is not None:
            src.prevalence = after_prev
        items = [src.take() for _ in range(batch_size)]
        src.prevalence = src_prev
        out: dict[str, Any] = {
            "image": np.stack([s["image"] for s in items]).astype(np.float32),
            "label": np.array([s["label"] for s in items], np.int64),
            "mask": np.stack([s["mask"] for s in items]).astype(np.int64),
            "domain": [s["domain"] for s in items],
            "index": [int(s["index"]) for s in items],
            "batch": b, "shifted": shifted,
        }
        for a in attrs:
            out[a] = [s[a] for s in items]
        yield out


def export_stream(out_dir: str | os.PathLike[str], scenario: str, n_batches: int, change_point: int, *,
                  batch_size: int = 64, seed: int = 0, split: str | None = "test",
                  size: int | tuple[int, int] | None = None, after_prevalence: float | None = None) -> Path:
    """Write the stream as PNGs + ``manifest.csv`` in arrival order; returns the manifest path.

    Columns: image, label, mask, domain, batch, shifted (0/1), and the benchmark's attributes;
    paths relative to ``out_dir``. Every file is written atomically.
    """
    sc = _check(scenario, n_batches, change_point, batch_size)
    mod = _module(sc.benchmark)
    to_array = mod._to_uint16 if sc.benchmark == "radiograph" else to_uint8_rgb
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for bt in batches(scenario, n_batches, change_point, batch_size=batch_size, seed=seed, split=split, size=size,
                      after_prevalence=after_prevalence):
        for i in range(len(bt["label"])):
            n = len(rows)
            rel_img, rel_mask = f"stream/{n:06d}.png", f"stream/{n:06d}_mask.png"
            atomic_write_bytes(out / rel_img, encode_png(to_array(bt["image"][i])))
            atomic_write_bytes(out / rel_mask, encode_png(bt["mask"][i].astype(np.uint8)))
            row = {"image": rel_img, "label": int(bt["label"][i]), "mask": rel_mask, "domain": bt["domain"][i],
                   "batch": bt["batch"], "shifted": int(bt["shifted"])}
            row.update({a: bt[a][i] for a in mod.ATTRIBUTES})
            rows.append(row)
    manifest = out / "manifest.csv"
    write_manifest(manifest, rows, ["image", "label", "mask", "domain", "batch", "shifted", *mod.ATTRIBUTES])
    return manifest
