"""A saved model watches a generated stream: Predictor.monitor / estimate_performance and
`shiftkit monitor` (report.html renders in headless Chromium).

One tiny classifier (32 px, trained briefly on city radiographs of a development data seed)
serves the whole module; the streams it watches are drawn from test data seeds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from shiftkit.adapt import load
from shiftkit.adapt.deploy.monitoring import forward
from shiftkit.adapt.deploy.saving import save_model
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.training.data import CachedDataset
from shiftkit.datasets.errors import DataError
from shiftkit.datasets.synth import radiograph
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS
from shiftkit.datasets.synth.stream import batches, export_stream

SIZE = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    train = CachedDataset(radiograph.SynthDataset("city", 256, split="train", seed=DEV_DATA_SEEDS[0], size=SIZE))
    m = SourceOnly("tiny", num_classes=2, epochs=2, batch_size=32, lr=3e-3, progress=False, seed=0).fit(train)
    out = tmp_path_factory.mktemp("model")
    save_model(m, out, class_names=["no_finding", "finding"], image_size=(SIZE, SIZE), in_channels=1)
    return out


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = radiograph.SynthDataset("city", 384, split="val", seed=DEV_DATA_SEEDS[0], size=SIZE)
    items = [ds.sample(i) for i in range(len(ds))]
    return (np.stack([s["image"] for s in items]), np.array([s["label"] for s in items]),
            np.array([s["sex"] for s in items]))


def test_city_to_rural_stream_is_flagged_and_the_delay_reported(model_dir: Path, reference):
    pred = load(model_dir)
    images, labels, _ = reference
    pred.set_reference(images, labels)
    verdicts, alarms, top = [], [], []
    change = 4
    stream = pred.stream()
    for bt in batches("city_to_rural", 14, change, seed=TEST_DATA_SEEDS[0]):
        res = stream.update(bt["image"], attributes={"sex": bt["sex"], "site": bt["site"]}).drift
        verdicts.append(res.drift)
        alarms.append(res.alarm)
        top.append(res.most_drifted)
    shifted = verdicts[change:]
    print("verdicts", verdicts, "alarms", alarms)
    assert np.mean(shifted) >= 0.9  # city -> rural batches of 64 flagged >= 90 %
    s = stream.summary(change_point=change)
    assert s["untrusted_batches"] == [i for i, v in enumerate(verdicts) if v]
    assert s["false_alarms_before_change"] == 0
    assert s["detection_delay_batches"] is not None and s["detection_delay_batches"] <= 1
    # every shifted batch is all rural: site is one group, so it is the top "site" row
    assert all(t is not None for t in top[change:])
    # explicit state: a one-off check leaves the stream alone; reset empties it
    cusum = stream.drift.cusum_
    pred.monitor(bt["image"])
    pred.check(bt["image"])
    assert stream.drift.cusum_ == cusum and len(stream.steps) == 14
    assert pred._monitor_state.drift.history_ == []  # the predictor's own monitor never advanced
    stream.reset()
    assert stream.summary()["batches"] == 0 and stream.drift.cusum_ == 0.0


def test_trusted_false_with_reason_for_a_shifted_batch_true_in_domain(model_dir: Path, reference):
    pred = load(model_dir)
    images, labels, _ = reference
    pred.set_reference(images, labels)
    city = next(batches("city_to_rural", 1, 1, seed=TEST_DATA_SEEDS[3], batch_size=64))
    rural = next(batches("city_to_rural", 1, 0, seed=TEST_DATA_SEEDS[3], batch_size=64))
    ok, bad = pred.estimate_performance(city["image"]), pred.estimate_performance(rural["image"])
    for m in ("atc", "doc", "cbpe", "prior"):
        assert ok[m].trusted is True, (m, ok[m])
        assert bad[m].trusted is False and "differs from the reference" in bad[m].why, (m, bad[m])
    assert ok["cbpe"].interval is not None and ok["cbpe"].low <= ok["cbpe"].value <= ok["cbpe"].high
    # the same verdict comes with the stateless check
    assert pred.check(rural["image"]).trusted is False and pred.check(city["image"]).trusted is True


def test_repeated_images_warn(model_dir: Path, reference):
    from shiftkit.adapt.deploy.monitoring import RepeatedImagesWarning

    pred = load(model_dir)
    images, labels, _ = reference
    pred.set_reference(images, labels)
    with pytest.warns(RepeatedImagesWarning, match="repeat"):
        res = pred.check(np.concatenate([images[:20], images[:12]]))
    assert res.repeated_images == 12 and "repeated" in res.why


def test_estimates_have_intervals_and_save_load_roundtrip(model_dir: Path, reference, tmp_path: Path):
    pred = load(model_dir)
    images, labels, _ = reference
    pred.set_reference(images, labels, save=tmp_path)
    bt = next(batches("city_to_rural", 1, 1, seed=TEST_DATA_SEEDS[1], batch_size=192))  # no shift: city
    est = pred.estimate_performance(bt["image"])
    true_acc = float((forward(pred, bt["image"])["proba"].argmax(1) == bt["label"]).mean())
    for m in ("atc", "doc", "cbpe"):
        assert est[m].low <= est[m].value <= est[m].high
    assert est["cbpe"].low <= true_acc <= est["cbpe"].high, (est["cbpe"], true_acc)
    assert abs(sum(est["prior"].prior) - 1) < 1e-9
    # the saved reference gives the same verdict (same statistic, same permutations)
    a = pred.monitor(bt["image"][:64])
    pred2 = load(model_dir)
    pred2.load_reference(tmp_path)
    b = pred2.monitor(bt["image"][:64])
    assert a.p_values == pytest.approx(b.p_values, rel=1e-5, abs=1e-6)
    with pytest.raises(DataError, match="set_reference"):
        load(model_dir).monitor(bt["image"][:8])


def _chromium() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(p).exists():
            return p
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def cli_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    tmp = tmp_path_factory.mktemp("cli")
    ref_manifest = radiograph.export(tmp / "ref", ["city"], 160, seed=DEV_DATA_SEEDS[0], size=SIZE, progress=False)
    stream = export_stream(tmp / "stream", "city_to_rural", 6, 3, batch_size=48, seed=TEST_DATA_SEEDS[2])
    out = tmp / "out"
    res = CliRunner().invoke(app, ["monitor", str(model_dir), str(stream), "--reference", str(ref_manifest),
                                   "--out", str(out), "--group-by", "site,sex"])
    return res, out, ref_manifest, stream


def test_shiftkit_monitor_cli_on_a_generated_stream(cli_run):
    res, out, *_ = cli_run
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["batches"]) == 6 and m["monitor"]["change_point (evaluation only)"] == 3
    assert m["monitor"]["detection_delay_batches"] is not None
    assert all(r["drift"] for r in m["batches"][3:])
    assert {"cbpe", "atc", "doc", "prior", "true_accuracy", "estimate_trusted"} <= set(m["batches"][0])
    assert not any(r["estimate_trusted"] for r in m["batches"][3:])
    text = (out / "metrics.json").read_text() + (out / "report.html").read_text()
    assert "stream/0" not in text  # no image paths (could carry identifiers) in the outputs


def test_cli_writes_the_trusted_verdicts_of_the_python_api(cli_run, model_dir: Path):
    from shiftkit.datasets import load_manifest

    res, out, ref_manifest, stream = cli_run
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "metrics.json").read_text())["batches"]
    ref = load_manifest(ref_manifest)
    pred = load(model_dir)
    pred.set_reference(list(ref["image"]), ref["label"].to_numpy())
    frame = load_manifest(stream)
    for row, (_, part) in zip(rows, frame.groupby("batch", sort=False), strict=True):
        est = pred.estimate_performance(list(part["image"]))
        assert row["estimate_trusted"] == est["cbpe"].trusted, row["batch"]
        for m in ("atc", "doc", "cbpe"):
            assert row[m]["trusted"] == est[m].trusted and row[m]["why"] == est[m].why
            assert row[m]["value"] == pytest.approx(est[m].value, abs=1e-6)
    assert [r["estimate_trusted"] for r in rows] == [True, True, True, False, False, False]


_USER_NET = """
import torch
from torch import nn


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


def build():
    return UserNet()
"""


def test_shiftkit_monitor_model_factory_rebuilds_a_user_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    pkg = tmp_path / "code"
    pkg.mkdir()
    (pkg / "clinic_net.py").write_text(_USER_NET)
    monkeypatch.syspath_prepend(str(pkg))
    import clinic_net

    torch.manual_seed(0)
    model = tmp_path / "model"
    save_model(clinic_net.build(), model, class_names=["no_finding", "finding"], image_size=(SIZE, SIZE),
               in_channels=1)
    ref = radiograph.export(tmp_path / "ref", ["city"], 64, seed=DEV_DATA_SEEDS[1], size=SIZE, progress=False)
    stream = export_stream(tmp_path / "stream", "city_to_rural", 2, 1, batch_size=16, seed=TEST_DATA_SEEDS[4])
    base = ["monitor", str(model), str(stream), "--reference", str(ref), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "--model-factory" in res.output, res.output  # the error says how
    res = CliRunner().invoke(app, [*base, "--model-factory", "clinic_net:build"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(m["batches"]) == 2 and all("cbpe" in r for r in m["batches"])
    res = CliRunner().invoke(app, [*base, "--model-factory", "clinic_net:nothing"])
    assert res.exit_code == 2 and "no function 'nothing'" in res.output


def test_shiftkit_monitor_errors_are_clear(model_dir: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    res = CliRunner().invoke(app, ["monitor", str(model_dir), str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "monitoring reference" in res.output


@pytest.mark.browser
def test_monitor_report_renders_in_headless_chromium(cli_run, tmp_path: Path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium not installed (/usr/bin/chromium absent); `apt-get install -y chromium` enables this test")
    res, out, *_ = cli_run
    assert res.exit_code == 0, res.output
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10.0 and (img < 200).mean() > 0.02  # plots drawn, not a blank page


def test_segmentation_estimates_count_images_and_carry_the_trusted_verdict(tmp_path: Path):
    from shiftkit.adapt.models.backbones import build_segmenter
    from shiftkit.datasets.synth import dashcam

    torch.manual_seed(0)
    save_model(build_segmenter("tiny-unet", 3, 9), tmp_path, image_size=(32, 64), in_channels=3)
    pred = load(tmp_path)
    items = [dashcam.sample("urban_day", i, seed=DEV_DATA_SEEDS[2], size=(32, 64), split="val") for i in range(80)]
    pred.set_reference(np.stack([s["image"] for s in items]), np.stack([s["mask"] for s in items]))
    perf = pred._monitor_state.performance
    assert perf.n_reference_ == 80  # images, not 80 x 256 pixel rows
    batch = np.stack([dashcam.sample("urban_day", i, seed=DEV_DATA_SEEDS[2], size=(32, 64), split="test")["image"]
                      for i in range(16)])
    est = pred.estimate_performance(batch)
    assert est["cbpe"].metric == "pixel_accuracy" and est["cbpe"].trusted in (True, False)
    lo, hi = est["cbpe"].interval
    # pixels of one image err together: counted as independent rows, the interval would be narrower
    from shiftkit.evaluation.performance_estimation import PerformanceEstimator

    state = pred._monitor_state
    rows = PerformanceEstimator().fit(state.pixel_proba, state.pixel_labels)
    assert hi - lo > 2 * 1.96 * np.sqrt(rows.residual_var_[2] * (1 / (16 * 256) + 1 / (80 * 256)))
