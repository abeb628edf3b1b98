"""Procedural benchmarks: determinism, layout, population/acquisition differences, export, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftkit.datasets import DataError, load_manifest, read_image, read_mask
from shiftkit.datasets.synth import dashcam, digits, get, radiograph
from shiftkit.datasets.synth.preview import preview_grid


@pytest.mark.parametrize("mod,domain,size", [(radiograph, "city", 32), (dashcam, "urban_day", (32, 64)),
                                             (digits, "camera", 16)])
def test_deterministic_per_domain_seed_split_index(mod, domain, size):
    a = mod.sample(domain, 5, seed=1, size=size)
    b = mod.sample(domain, 5, seed=1, size=size)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    for other in (dict(index=6, seed=1), dict(index=5, seed=2)):
        c = mod.sample(domain, other["index"], seed=other["seed"], size=size)
        assert not np.array_equal(a["image"], c["image"])
    d = mod.sample(domain, 5, seed=1, size=size, split="test")
    assert not np.array_equal(a["image"], d["image"])


def test_radiograph_item_contract():
    s = radiograph.sample("rural", 0, size=48)
    assert s["image"].shape == (1, 48, 48) and s["image"].dtype == np.float32
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert s["mask"].dtype == np.int64 and set(np.unique(s["mask"])) <= {0, 1, 2}
    item = radiograph.SynthDataset("rural", 3, size=48)[0]
    assert item["image"].shape == (1, 48, 48) and item["label"].dtype == torch.int64


def test_radiograph_lesion_iff_finding_and_inside_lung():
    n_pos = 0
    for i in range(40):
        s = radiograph.sample("city", i, size=48)
        lesion = s["lesion_mask"].astype(bool)
        assert lesion.any() == bool(s["label"]), i
        assert not (lesion & ~s["lung_mask"].astype(bool)).any()
        assert s["lung_mask"].mean() > 0.1  # two lungs are always there
        n_pos += s["label"]
    assert 0 < n_pos < 40


def test_sites_differ_in_population_and_shortcut():
    """Prevalence, age and the portable-marker shortcut differ by site as the profiles say."""
    def stats(domain, n=300):
        rows = [radiograph.sample(domain, i, size=16) for i in range(n)]
        lab = np.array([r["label"] for r in rows])
        port = np.array([r["portable"] for r in rows])
        age = np.array([r["age"] for r in rows])
        return lab, port, age

    lab_c, port_c, age_c = stats("city")
    lab_r, port_r, age_r = stats("rural")
    # shortcut at city: the marker is far more common on sick patients
    assert port_c[lab_c == 1].mean() - port_c[lab_c == 0].mean() > 0.2
    # not at rural
    assert abs(port_r[lab_r == 1].mean() - port_r[lab_r == 0].mean()) < 0.15
    assert age_r.mean() - age_c.mean() > 4


def test_rural_acquisition_differs_from_city():
    """Same anatomy code, different detector: rural is blurrier (lower resolution) and collimated."""
    def hf_noise(domain):
        vals = []
        for i in range(20):
            img = radiograph.sample(domain, i, size=64)["image"][0]
            vals.append(np.abs(np.diff(img[20:44, 20:44], axis=1)).mean())
        return float(np.mean(vals))

    assert hf_noise("rural") < 0.8 * hf_noise("city")
    border = [radiograph.sample("rural", i, size=64)["image"][0, 0, 20:44].std() for i in range(10)]
    assert np.median(border) < 1e-3  # collimator blade: a flat unexposed band along the top
    teaching = np.mean([radiograph.sample("teaching", i, size=32)["image"][0, 14:18, 4:10].mean() for i in range(10)])
    city = np.mean([radiograph.sample("city", i, size=32)["image"][0, 14:18, 4:10].mean() for i in range(10)])
    assert teaching > city  # inverted polarity: lungs bright


def test_dashcam_contract_and_layouts():
    urban = [dashcam.sample("urban_day", i, size=(48, 96)) for i in range(12)]
    rural = [dashcam.sample("rural_day", i, size=(48, 96)) for i in range(12)]
    s = urban[0]
    assert s["image"].shape == (3, 48, 96) and s["mask"].shape == (48, 96)
    assert s["mask"].min() >= 0 and s["mask"].max() <= 8
    assert (s["scene"], s["timeofday"], s["weather"]) == ("urban", "daytime", "clear")

    def frac(samples, c):
        return float(np.mean([(x["mask"] == c).mean() for x in samples]))

    assert frac(urban, dashcam.BUILDING) > 5 * frac(rural, dashcam.BUILDING)
    assert frac(urban, dashcam.SIDEWALK) > 0.02 and frac(rural, dashcam.SIDEWALK) == 0.0
    assert frac(rural, dashcam.VEGETATION) + frac(rural, dashcam.TERRAIN) > 2 * (
        frac(urban, dashcam.VEGETATION) + frac(urban, dashcam.TERRAIN))
    assert frac(urban, dashcam.VEHICLE) > frac(rural, dashcam.VEHICLE)
    for samples in (urban, rural):
        assert frac(samples, dashcam.ROAD) > 0.1 and frac(samples, dashcam.SKY) > 0.02
        assert frac(samples, dashcam.LANE) > 0.0


def test_dashcam_source_labels_every_class_the_target_has():
    """Closed-set adaptation needs the source to show each target class: rural fields are
    terrain, so urban streets have grass verges (terrain) between the road and the footway."""
    urban = np.stack([dashcam.sample("urban_day", i, size=(32, 64))["mask"] for i in range(40)])
    rural = np.stack([dashcam.sample("rural_day", i, size=(32, 64))["mask"] for i in range(40)])
    src, tgt = np.bincount(urban.ravel(), minlength=9), np.bincount(rural.ravel(), minlength=9)
    assert all(src[c] > 0 for c in np.flatnonzero(tgt)), (src, tgt)
    share = src[dashcam.TERRAIN] / src.sum()
    assert 0.005 < share < 0.1 < tgt[dashcam.TERRAIN] / tgt.sum()  # rare in town, common in fields
    # a verge lines the carriageway: some terrain pixel has road (or its solid edge line) beside it
    with_verge = [m for m in urban if (m == dashcam.TERRAIN).any()]
    assert 0.3 * len(urban) < len(with_verge) < len(urban)
    for m in with_verge:
        t = m == dashcam.TERRAIN
        beside = np.zeros_like(t)
        road = np.isin(m, (dashcam.ROAD, dashcam.LANE))
        beside[:, 1:] |= road[:, :-1]
        beside[:, :-1] |= road[:, 1:]
        assert (t & beside).any()


def test_dashcam_conditions_change_appearance_not_layout():
    day = dashcam.sample("urban_day", 3, size=(32, 64))
    night = dashcam.sample("urban_night", 3, size=(32, 64))
    fog = dashcam.sample("urban_fog", 3, size=(32, 64))
    assert night["image"].mean() < 0.5 * day["image"].mean()
    assert fog["image"].std() < day["image"].std()
    assert night["timeofday"] == "night" and fog["weather"] == "foggy"


def test_bad_arguments_are_clear():
    with pytest.raises(DataError, match="unknown radiograph domain 'suburb'.*city"):
        radiograph.sample("suburb", 0)
    with pytest.raises(DataError, match="split='dev'"):
        radiograph.SynthDataset("city", 3, split="dev")
    with pytest.raises(DataError, match="size"):
        dashcam.sample("urban_day", 0, size=4)
    with pytest.raises(DataError, match="unknown synthetic benchmark"):
        get("mnist")
    with pytest.raises(DataError, match="no radiograph domains"):
        radiograph.export("/nonexistent-never-created", "", 3)


@pytest.mark.parametrize("mod,size,domains", [(radiograph, 32, ["city", "icu"]), (dashcam, (32, 64), ["rural_rain"]),
                                              (digits, 16, ["scanner", "fax"])])
def test_export_writes_manifest_that_reads_back(tmp_path, mod, size, domains):
    m = mod.export(tmp_path, domains, 10, size=size, splits=(0.6, 0.2, 0.2), progress=False)
    f = load_manifest(m)
    assert len(f) == 10 * len(domains)
    assert f.groupby(["domain", "split"]).size().to_dict() == {(d, s): n for d in domains
                                                             for s, n in (("test", 2), ("train", 6), ("val", 2))}
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    row = f.iloc[0]
    img = read_image(row["image"])
    assert img.shape[0] == (1 if mod is radiograph else 3)
    ref = mod.sample(row["domain"], 0, size=size, split="train")
    np.testing.assert_array_equal(read_mask(row["mask"]), ref["mask"])
    for col in mod.ATTRIBUTES:
        assert col in f.columns


def test_preview_and_cli(tmp_path):
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    p = preview_grid(radiograph, "city", tmp_path / "p.png", n=4, size=32)
    img = read_image(p)
    assert img.shape == (3, (32 + 32) + 2 + 2, 4 * (32 + 2) + 2)  # one row of 4 tiles: image above overlay
    res = CliRunner().invoke(app, ["synth", "dashcam", "--out", str(tmp_path / "d"), "--n", "5",
                                   "--domains", "urban_day,rural_fog", "--size", "32x64", "--preview"])
    assert res.exit_code == 0, res.output
    f = load_manifest(tmp_path / "d" / "manifest.csv")
    assert sorted(f["domain"].unique()) == ["rural_fog", "urban_day"]
    assert read_image(f["image"][0]).shape == (3, 32, 64)
    assert (tmp_path / "d" / "preview_rural_fog.png").is_file()
    bad = CliRunner().invoke(app, ["synth", "radiograph", "--out", str(tmp_path / "r"), "--domains", "mars"])
    assert bad.exit_code == 2 and "unknown radiograph domain 'mars'" in bad.output
