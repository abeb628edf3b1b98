"""`shiftkit rank` and `rank_candidates` on a small cached radiograph zoo: the table holds every
score, each equal to the score computed from the candidate's own outputs; files are written;
verification fine-tunes the top candidates; bad candidates give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from shiftkit.adapt.cli import app
from shiftkit.adapt.deploy.model_format import UnsafeModelFileError
from shiftkit.adapt.harness.rank import DEFAULT_SCORE, load_candidate, rank_candidates
from shiftkit.adapt.harness.zoo import SMALL_ZOO, build_radiograph_zoo
from shiftkit.datasets import ManifestDataset, load_manifest
from shiftkit.datasets.errors import DataError
from shiftkit.datasets.synth import radiograph
from shiftkit.evaluation import risk
from shiftkit.evaluation.transferability import SCORE_NAMES, logme

SIZE = 32


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> list:
    return build_radiograph_zoo(tmp_path_factory.mktemp("zoo"), SMALL_ZOO, size=SIZE, n_train=120)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("data")
    target = radiograph.export(root / "target", ["rural"], 60, seed=7, size=SIZE, splits=(0.5, 0.0, 0.5))
    sources = radiograph.export(root / "sources", ["city", "icu", "teaching"], 30, seed=8, size=SIZE)
    return {"target": target, "sources": sources}


def test_rank_api_scores_equal_direct_computation(zoo: list, manifests: dict, tmp_path) -> None:
    frame = load_manifest(manifests["target"])
    tds = ManifestDataset(frame)
    res = rank_candidates(zoo, tds, verify=2, verify_seeds=(0,), verify_epochs=2)
    t = res.table
    assert list(t["rank"]) == [1, 2, 3, 4] and len(t) == len(SMALL_ZOO)
    assert set(SCORE_NAMES) <= set(t.columns) and {"entropy", "snd", "measured_auroc"} <= set(t.columns)
    assert t[DEFAULT_SCORE].is_monotonic_decreasing
    assert t["measured_auroc"].notna().sum() == 2 and t["measured_auroc"].iloc[:2].notna().all()
    assert res.info["n_scored"] == int((frame["split"] == "train").sum())
    # One candidate by hand: its features on the labelled train rows give the same LogME, its
    # predictions on every target image the same entropy.
    cand = load_candidate(zoo[0])
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    imgs = torch.stack([ManifestDataset(train)[i]["image"] for i in range(len(train))])
    with torch.no_grad():
        feats = cand.model.eval().encoder(imgs).double().numpy()
        all_imgs = torch.stack([tds[i]["image"] for i in range(len(tds))])
        proba = torch.softmax(cand.model(all_imgs), 1).numpy()
    row = t[t["candidate"] == cand.name].iloc[0]
    assert row["logme"] == pytest.approx(logme(feats, train["label"].astype(int).to_numpy()), abs=1e-5)
    assert row["entropy"] == pytest.approx(risk.prediction_entropy(proba), abs=1e-5)
    paths = res.write(tmp_path / "out")
    assert pd.read_csv(paths["csv"]).shape[0] == len(SMALL_ZOO)
    doc = json.loads(paths["json"].read_text())
    assert doc["default_score"] == DEFAULT_SCORE and len(doc["candidates"]) == len(SMALL_ZOO)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic writes leave nothing behind


def test_cli_rank_with_backbone_weights_and_sources(zoo: list, manifests: dict, tmp_path) -> None:
    out = tmp_path / "cli"
    weights = zoo[0] / "model.safetensors"
    args = ["rank", "--candidates", str(zoo[1]), str(zoo[2]), f"tiny:{weights}",
            "--target", str(manifests["target"]), "--sources", str(manifests["sources"]), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ranking.csv")
    assert len(table) == 3 and (out / "ranking.png").exists()
    # Gap columns exist for the zoo candidates (their sidecar names the source site), not for
    # the bare backbone:weights one; PAD is a proxy A-distance in [0, 2].
    zoo_rows = table[table["source"].notna()]
    assert len(zoo_rows) == 2 and zoo_rows["pad"].between(0, 2).all() and zoo_rows["mmd2"].notna().all()
    assert table.loc[table["source"].isna(), "pad"].isna().all()
    # The bare weights are the same network as zoo[0]: same scores as ranking zoo[0] directly.
    direct = rank_candidates([zoo[0], zoo[1]], ManifestDataset(load_manifest(manifests["target"]))).table
    bare = table[table["candidate"].str.startswith("tiny:")].iloc[0]
    assert bare["logme"] == pytest.approx(direct.set_index("candidate").loc[zoo[0].name, "logme"], abs=1e-6)


def test_bad_candidates_are_named(zoo: list, manifests: dict, tmp_path) -> None:
    tds = ManifestDataset(load_manifest(manifests["target"]))
    with pytest.raises(DataError, match="nowhere"):
        rank_candidates([zoo[0], tmp_path / "nowhere"], tds)
    pickle = tmp_path / "model.pt"
    torch.save({"a": np.arange(3)}, pickle)  # a numpy array inside: refused by weights_only
    with pytest.raises(UnsafeModelFileError, match="refused"):
        load_candidate(f"tiny:{pickle}")
    result = CliRunner().invoke(app, ["rank", "--candidates", str(zoo[0]), "--target", str(manifests["target"]),
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "at least two candidates" in result.output
