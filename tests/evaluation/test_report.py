"""Reports: versioned strict JSON, self-contained HTML, no identifiers, terminal summary, and a
render in a real headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shiftkit.evaluation import gap, report
from shiftkit.evaluation.metrics import classification_metrics


def _pipeline_like_metrics() -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.clip(0.5 * y + 0.5 * rng.random(200), 0, 1)
    poor = np.clip(0.15 * y + 0.85 * rng.random(200), 0, 1)
    fs, ft = rng.normal(size=(80, 6)), rng.normal(size=(80, 6)) + 0.8
    hist = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 0.6 + 0.02 * (e - 4) ** 2,
             "train_acc": 0.6 + 0.03 * e, "val_acc": 0.7, "target_acc": 0.55 + 0.01 * e} for e in range(8)]
    return {
        "run": {"task": "radiograph", "source": "city", "target": "rural", "seed": 0,
                "example_image": "/data/site_a/patient_0042/img_0001.dcm"},
        "methods": {
            "source_only": {"source": classification_metrics(y, good), "target": classification_metrics(y, poor),
                            "gap": gap.gap_summary(fs, ft, n_permutations=49)},
            "dann": {"source": classification_metrics(y, good), "target": classification_metrics(y, good),
                     "gap": gap.gap_summary(fs, ft * 0.2 + 0.1, n_permutations=49)},
        },
        "histories": {"source_only": hist},
        "my_extra_section": {"rows": [{"site": "a", "value": 1.5}, {"site": "b", "value": float("nan")}]},
        "warnings": ["target validation set has only 200 images"],
    }


def test_write_report_files_schema_and_privacy(tmp_path: Path):
    metrics = _pipeline_like_metrics()
    metrics["patient_id"] = "P-123"
    json_path, html_path = report.write_report(tmp_path / "run", metrics,
                                               history=[{"epoch": 0, "train_loss": 0.5}])
    assert json_path == tmp_path / "run" / "metrics.json" and html_path.name == "report.html"
    text = json_path.read_text()
    data = json.loads(text)  # strict: NaN must have become null
    assert "NaN" not in text
    assert data["schema_version"] == report.SCHEMA_VERSION
    assert list(data)[0] == "schema_version"
    assert data["my_extra_section"]["rows"][1]["value"] is None
    assert data["histories"]["model"] == [{"epoch": 0, "train_loss": 0.5}]
    assert data["histories"]["source_only"][0]["epoch"] == 0
    assert data["run"]["example_image"] == report.REMOVED and data["patient_id"] == report.REMOVED
    assert "metrics" not in metrics or metrics["patient_id"] == "P-123"  # caller's dict untouched
    page = html_path.read_text()
    assert "patient_0042" not in page and "P-123" not in page and "patient_0042" not in text
    # Self-contained: no external resources or scripts.
    assert "<script" not in page.lower() and "src='http" not in page and 'src="http' not in page
    assert page.count("data:image/png;base64,") >= 4  # curves, comparison, gap, reliability x2
    for caption in ("Learning curves", "Before / after", "Domain gap per method", "Reliability diagram"):
        assert caption in page
    assert "my_extra_section" in page and "site" in page  # unknown sections become tables
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_user_figures_and_bad_figure(tmp_path: Path):
    from shiftkit.evaluation.plots import embedding_figure, figure_to_png

    rng = np.random.default_rng(1)
    fig = embedding_figure({"before": (rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 2),
                            "after": (rng.normal(size=(30, 4)), rng.normal(size=(30, 4)))})
    png = figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "x.png").write_bytes(png)
    _, html_path = report.write_report(tmp_path, {"run": {"a": 1}},
                                       figures={"Embedding": fig, "bytes": png, "file": tmp_path / "x.png"})
    assert html_path.read_text().count("data:image/png;base64,") == 3
    from shiftkit.datasets.errors import DataError
    with pytest.raises(DataError, match="not a Figure"):
        report.write_report(tmp_path, {}, figures={"bad": 3})


def test_terminal_summary_lists_methods_gap_and_warnings():
    text = report.terminal_summary(_pipeline_like_metrics())
    assert "source_only" in text and "dann" in text and "auroc" in text
    assert "proxy_a_distance" in text
    assert "warnings:" in text and "only 200 images" in text
    assert "patient_0042" not in text
    # Any dict works, with a generic fallback.
    generic = report.terminal_summary({"a": {"b": 1.23456}, "c": math.nan})
    assert "a.b: 1.235" in generic and "c: n/a" in generic


def _chromium() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(p).exists():
            return p
    return shutil.which("chromium")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path: Path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium not installed (/usr/bin/chromium absent); `apt-get install -y chromium` enables this test")
    _, html_path = report.write_report(tmp_path / "run", _pipeline_like_metrics())
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    assert img.std() > 10.0  # a blank page has variance ~0
    # Plots are drawn (not only text): a good share of the page is non-white.
    assert (img < 200).mean() > 0.02


def test_embedding_and_segmentation_overlay_figures():
    from shiftkit.evaluation.plots import embedding_figure, segmentation_overlay_figure

    rng = np.random.default_rng(2)
    fig = embedding_figure({"before": (rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 3)}, method="pca")
    xy = fig.axes[0].collections
    src, tgt = xy[0].get_offsets(), xy[1].get_offsets()
    # Shifted domains are separated in the 2-D embedding (centroids further apart than the spread).
    assert np.linalg.norm(src.mean(0) - tgt.mean(0)) > src.std(0).mean()
    imgs = rng.random((2, 3, 16, 16))
    masks = rng.integers(0, 9, (2, 16, 16))
    seg = segmentation_overlay_figure(imgs, masks, masks, num_classes=9)
    assert len(seg.axes) == 6


def test_run_result_reads_back_exactly_what_metrics_json_holds(tmp_path: Path):
    from shiftkit.datasets.errors import DataError
    from shiftkit.evaluation.results import MethodResult, RunResult

    metrics = _pipeline_like_metrics()
    report.write_report(tmp_path / "run", metrics)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    result = RunResult.load(tmp_path / "run")
    assert result.to_dict() == saved  # lossless, extra sections included
    assert list(result.methods) == ["source_only", "dann"]
    dann = result.methods["dann"]
    assert dann.target["auroc"] == saved["methods"]["dann"]["target"]["auroc"]
    assert dann.gap["mmd2"] == saved["methods"]["dann"]["gap"]["mmd2"]
    assert set(result.extra) == {"my_extra_section"} and result.warnings == tuple(saved["warnings"])
    assert result.model_dir("dann") == tmp_path / "run" / "models" / "dann"
    assert MethodResult.from_dict("dann", dann.to_dict()) == dann
    odd = RunResult.from_dict({"methods": [1, 2], "warnings": "one"})  # other shapes: kept, not guessed
    assert not odd.methods and odd.extra == {"methods": [1, 2], "warnings": "one"}
    saved["schema_version"] = "2.0"
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match="schema 2.0"):
        RunResult.load(tmp_path / "run")
