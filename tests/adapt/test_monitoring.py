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
from shiftkit.adapt.data import CachedDataset
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.monitoring import forward
from shiftkit.adapt.predictor import save_model
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
    for bt in batches("city_to_rural", 14, change, seed=TEST_DATA_SEEDS[0]):
        res = pred.monitor(bt["image"], attributes={"sex": bt["sex"], "site": bt["site"]})
        verdicts.append(res.drift)
        alarms.append(res.alarm)
        top.append(res.most_drifted)
    shifted = verdicts[change:]
    print("verdicts", verdicts, "alarms", alarms)
    assert np.mean(shifted) >= 0.9  # city -> rural batches of 64 flagged >= 90 %
    s = pred._monitor_state.drift.summary(change_point=change)
    assert s["false_alarms_before_change"] == 0
    assert s["detection_delay_batches"] is not None and s["detection_delay_batches"] <= 1
    # every shifted batch is all rural: site is one group, so it is the top "site" row
    assert all(t is not None for t in top[change:])


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
    a = pred.monitor(bt["image"][:64], online=False)
    pred2 = load(model_dir)
    pred2.load_reference(tmp_path)
    b = pred2.monitor(bt["image"][:64], online=False)
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
    return res, out


def test_shiftkit_monitor_cli_on_a_generated_stream(cli_run):
    res, out = cli_run
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["batches"]) == 6 and m["monitor"]["change_point (evaluation only)"] == 3
    assert m["monitor"]["detection_delay_batches"] is not None
    assert all(r["drift"] for r in m["batches"][3:])
    assert {"cbpe", "atc", "doc", "prior", "true_accuracy", "estimate_trusted"} <= set(m["batches"][0])
    assert not any(r["estimate_trusted"] for r in m["batches"][3:])
    text = (out / "metrics.json").read_text() + (out / "report.html").read_text()
    assert "stream/0" not in text  # no image paths (could carry identifiers) in the outputs


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
    res, out = cli_run
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
