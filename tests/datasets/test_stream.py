"""Generated streams: the change point is where it is said to be, and the prevalence scenario
moves only the label mix."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from shiftkit.datasets.errors import DataError
from shiftkit.datasets.synth import radiograph
from shiftkit.datasets.synth.stream import batches, export_stream


def test_change_point_domains_and_determinism():
    a = list(batches("city_to_rural", 4, 2, batch_size=4, seed=5, size=16))
    b = list(batches("city_to_rural", 4, 2, batch_size=4, seed=5, size=16))
    assert [bt["shifted"] for bt in a] == [False, False, True, True]
    assert [set(bt["site"]) for bt in a] == [{"city"}, {"city"}, {"rural"}, {"rural"}]
    assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))
    # no image twice within a domain
    assert not np.array_equal(a[0]["image"], a[1]["image"])
    assert a[0]["image"].shape == (4, 1, 16, 16)


def test_prevalence_scenario_moves_only_the_label_mix():
    bts = list(batches("prevalence", 6, 2, batch_size=32, seed=5, size=16, after_prevalence=0.9))
    before = np.concatenate([bt["label"] for bt in bts[:2]]).mean()
    after = np.concatenate([bt["label"] for bt in bts[2:]]).mean()
    assert after > 0.8 and before < 0.6
    # every image is the generator's own rural image with its own label (same p(x | label)),
    # and none is used twice
    idx = [i for bt in bts for i in bt["index"]]
    assert len(set(idx)) == len(idx)
    for j in (0, 5, 17):
        s = radiograph.sample("rural", bts[3]["index"][j], seed=5, size=16, split="test")
        assert np.array_equal(s["image"], bts[3]["image"][j]) and s["label"] == bts[3]["label"][j]


def test_export_stream_writes_arrival_order(tmp_path):
    m = export_stream(tmp_path, "fog", 3, 1, batch_size=2, seed=1, size=(16, 32))
    rows = list(csv.DictReader(m.open()))
    assert [r["batch"] for r in rows] == ["0", "0", "1", "1", "2", "2"]
    assert [r["domain"] for r in rows] == ["urban_day"] * 2 + ["urban_fog"] * 4
    assert (tmp_path / rows[0]["image"]).exists()
    with pytest.raises(DataError, match="change_point"):
        export_stream(tmp_path, "fog", 3, 5)
    with pytest.raises(DataError, match="unknown scenario"):
        list(batches("snow", 3, 1))
