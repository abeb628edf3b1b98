"""Rank candidate source models for a target site before adapting any of them.

``rank_candidates(candidates, target)`` runs every candidate over the target images and
scores it with the transferability scores of :mod:`shiftkit.evaluation.transferability`
(labelled target images) and the label-free estimates of :mod:`shiftkit.evaluation.risk`
and :mod:`shiftkit.evaluation.gap` (all target images; labels never read for these). With
``verify=N`` it also fine-tunes the N top-ranked candidates on the labelled target images
and measures their AUROC on held-out labelled target images, so the user sees how well the
scores ranked on their own data.

Candidates are model folders written by :func:`shiftkit.adapt.save_model`,
``BACKBONE:WEIGHTS`` (a name from ``CLASSIFIER_NAMES`` and a safetensors / state-dict file), or
``timm:<name>=WEIGHTS`` / ``tv:<name>=WEIGHTS`` (a pretrained timm or torchvision model from a
local file, its own classifier kept, images resized to its pretrained input size).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.adapt.models.backbones import CLASSIFIER_NAMES, build_classifier
from shiftkit.adapt.models.ecosystem import is_ecosystem_name
from shiftkit.adapt.training.trainer import predict_loader
from shiftkit.datasets.errors import ConfigError, DataError

__all__ = ["Candidate", "RankResult", "DEFAULT_SCORE", "LABEL_FREE", "load_candidate", "rank_candidates",
           "split_target"]

#: The score the table is sorted by. Chosen on development data seeds by
#: ``examples/transferability_study.py --seeds dev`` (highest mean weighted Kendall tau with
#: fine-tuned target AUROC on the radiograph zoo); see docs/transferability.md.
DEFAULT_SCORE = "leep"
#: Label-free columns and their direction (+1 higher is better, -1 lower is better).
LABEL_FREE = {"entropy": -1, "snd": 1, "pad": -1, "mmd2": -1}


@dataclass
class Candidate:
    """A loaded candidate model.

    Attributes:
        name: table label (folder name or file stem).
        model: split-protocol classifier (``.encoder``: images -> ``(N, D)``, ``.head``).
        image_size: ``(H, W)`` the model expects; ``None`` = any.
        in_channels: channels the model expects.
        source: source domain named in the sidecar, when known.
        path: where it was loaded from.
    """

    name: str
    model: nn.Module
    image_size: tuple[int, int] | None = None
    in_channels: int | None = None
    source: str | None = None
    path: str = ""


def load_candidate(spec: str | os.PathLike[str] | Candidate, *, num_classes: int = 2, in_channels: int = 1) -> Candidate:
    """A candidate from a ``save_model`` folder / file, or ``BACKBONE:WEIGHTS``.

    ``num_classes`` and ``in_channels`` are used only for ``BACKBONE:WEIGHTS`` (a bare
    state dict does not say how to build the network). Never unpickles.
    """
    from shiftkit.adapt.deploy.loading import load, load_weights

    if isinstance(spec, Candidate):
        return spec
    text = str(spec)
    lib_name, eq, wpath = text.partition("=")
    if eq and is_ecosystem_name(lib_name) and not Path(text).exists():
        # timm:/tv: NAME=WEIGHTS: the file's own classifier is kept (LEEP and NCE read the source
        # model's class probabilities), at the input size its pretrained config names.
        torch.manual_seed(0)
        try:
            model = build_classifier(lib_name, in_channels, None, weights=wpath)
        except ConfigError:  # a headless file: a new head for num_classes (probability scores then mean little)
            model = build_classifier(lib_name, in_channels, num_classes, weights=wpath)
        size = (model.arch.get("normalize") or {}).get("input_size")
        return Candidate(f"{lib_name}:{Path(wpath).stem}", model.eval(), tuple(size[1:]) if size else None,
                         in_channels, None, wpath)
    head, sep, tail = text.partition(":")
    if sep and head.lower() in CLASSIFIER_NAMES and not Path(text).exists():
        torch.manual_seed(0)
        model = build_classifier(head.lower(), in_channels, num_classes)
        load_weights(model, tail)
        return Candidate(f"{head}:{Path(tail).stem}", model, None, in_channels, None, tail)
    path = Path(text)
    if not path.exists():
        raise DataError(f"candidate {text!r}: no such model folder/file, and not BACKBONE:WEIGHTS with a backbone "
                        f"from {list(CLASSIFIER_NAMES)}")
    pred = load(path)
    if pred.task != "classification":
        raise DataError(f"candidate {text}: a {pred.task} model; ranking supports classifiers")
    src = (pred.sidecar.get("training_data") or {})
    source = src.get("source_site") or (src.get("source") or {}).get("domain") or None
    name = path.name if path.is_dir() else path.stem
    return Candidate(name, pred.model, pred.image_size, pred.in_channels, source, str(path))


class _Resized(Dataset):
    """Items of ``base`` with images resized / channel-converted to what a candidate expects."""

    def __init__(self, base: Dataset, size: tuple[int, int] | None, channels: int | None):
        self.base, self.size, self.channels = base, size, channels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        x = item["image"]
        if self.channels and x.shape[0] != self.channels:
            if self.channels == 1 and x.shape[0] == 3:
                x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
            elif self.channels == 3 and x.shape[0] == 1:
                x = x.repeat(3, 1, 1)
            else:
                raise DataError(f"image {i}: {x.shape[0]} channels, the candidate expects {self.channels}")
        if self.size and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x[None].float(), size=tuple(self.size), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        item["image"] = x
        return {k: v for k, v in item.items() if k in ("image", "label", "index", "mask")}


def _run(c: Candidate, ds: Dataset, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, D), proba (N, K))`` of candidate ``c`` on ``ds``."""
    loader = DataLoader(_Resized(ds, c.image_size, c.in_channels), batch_size=batch_size, shuffle=False)
    out = predict_loader(c.model, loader, torch.device("cpu"), want=("features", "proba"))
    return out["features"].astype(np.float64), out["proba"].astype(np.float64)


def _labels_of(ds: Dataset) -> np.ndarray:
    if isinstance(ds, _Subset) and hasattr(ds.base, "labels"):
        return np.asarray(ds.base.labels)[ds.idx].astype(np.int64)
    return np.array([int(ds[i]["label"]) for i in range(len(ds))], dtype=np.int64)


class _Subset(Dataset):
    def __init__(self, base: Dataset, idx: Sequence[int]):
        self.base, self.idx = base, list(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict:
        return self.base[self.idx[i]]


def split_target(target: Dataset, *, need_eval: bool, seed: int = 0) -> tuple[Dataset | None, Dataset | None]:
    """``(fit, eval)`` labelled subsets of ``target``.

    Items with a ``split`` key (manifests): ``train`` rows score and fine-tune, ``val`` /
    ``test`` rows measure. Without one: every labelled item scores; when ``need_eval`` a
    stratified half (``seed``) is held out for measuring instead.
    """
    frame = getattr(target, "frame", None)
    labels = (np.asarray(target.labels) if hasattr(target, "labels") and len(np.asarray(target.labels)) == len(target)
              else _labels_of(target))
    lab = np.flatnonzero(labels >= 0)
    if len(lab) == 0:
        return None, None
    if frame is not None and "split" in frame.columns and len(frame) == len(target):
        splits = [frame["split"].iloc[int(i)] for i in lab]
    else:
        splits = [target[int(i)].get("split") for i in lab]
    if any(s in ("train", "val", "test") for s in splits):
        fit = [int(i) for i, s in zip(lab, splits, strict=True) if s == "train"]
        ev = [int(i) for i, s in zip(lab, splits, strict=True) if s in ("val", "test")]
        if not fit:
            raise DataError("target: labelled rows carry a split column but none is 'train' (the rows to score on)")
        return _Subset(target, fit), (_Subset(target, ev) if ev else None)
    if not need_eval:
        return _Subset(target, lab.tolist()), None
    from sklearn.model_selection import train_test_split

    fit, ev = train_test_split(lab, test_size=0.5, stratify=labels[lab], random_state=seed)
    return _Subset(target, sorted(fit.tolist())), _Subset(target, sorted(ev.tolist()))


@dataclass
class RankResult:
    """Outcome of :func:`rank_candidates`.

    Attributes:
        table: one row per candidate, sorted by ``default_score`` (best first): ``rank``,
            ``candidate``, ``source``, the transferability scores (higher = better), the
            label-free estimates (``entropy`` lower = better, ``snd`` higher = better,
            ``pad`` / ``mmd2`` lower = better), and after verification ``measured_auroc``
            (mean over seeds) and ``measured_auroc_sd``.
        default_score: the column the table is sorted by.
        agreement: ``{score: weighted Kendall tau with measured AUROC}`` over the verified
            candidates (empty without verification).
        info: counts and settings (no per-image values).
    """

    table: Any
    default_score: str
    agreement: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rows = json.loads(self.table.to_json(orient="records"))
        return {"default_score": self.default_score, "candidates": rows, "agreement": self.agreement,
                "info": self.info}

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``ranking.csv``, ``ranking.json`` and ``ranking.png`` (atomically)."""
        from shiftkit.datasets.files import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / "ranking.csv", "json": out / "ranking.json", "png": out / "ranking.png"}
        atomic_write_bytes(paths["csv"], self.table.to_csv(index=False).encode())
        atomic_write_bytes(paths["json"], json.dumps(self.to_dict(), indent=2, allow_nan=True).encode())
        atomic_write_bytes(paths["png"], self._figure())
        return paths

    def _figure(self) -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = self.table
        scores = [s for s in ("logme", "leep", "nce", "h_score", "gbc") if s in t.columns and t[s].notna().any()]
        if "measured_auroc" in t.columns and t["measured_auroc"].notna().sum() >= 2:
            ver = t[t["measured_auroc"].notna()]
            fig, axes = plt.subplots(1, len(scores), figsize=(3.0 * len(scores), 3.0), squeeze=False)
            for ax, s in zip(axes[0], scores, strict=True):
                ax.scatter(ver[s], ver["measured_auroc"], s=18)
                for _, r in ver.iterrows():
                    ax.annotate(str(r["candidate"]), (r[s], r["measured_auroc"]), fontsize=5)
                tau = self.agreement.get(s, math.nan)
                ax.set_title(f"{s}: weighted tau {tau:.2f}", fontsize=8)
                ax.set_xlabel(s, fontsize=8)
                ax.set_ylabel("fine-tuned target AUROC", fontsize=8)
                ax.tick_params(labelsize=6)
        else:
            fig, ax = plt.subplots(figsize=(5, 0.3 * len(t) + 1.2))
            vals = t[self.default_score].to_numpy(dtype=float)
            ax.barh(t["candidate"].astype(str)[::-1], vals[::-1])
            ax.set_xlabel(f"{self.default_score} (higher = better transfer)")
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return buf.getvalue()


def _finetune_auroc(c: Candidate, fit: Dataset, ev: Dataset, *, seeds: Sequence[int], epochs: int, lr: float,
                    batch_size: int) -> list[float]:
    from shiftkit.adapt.methods import FineTune
    from shiftkit.evaluation.metrics import auroc

    fit_r = _Resized(fit, c.image_size, c.in_channels)
    ev_r = _Resized(ev, c.image_size, c.in_channels)
    y = _labels_of(ev)
    if len(np.unique(y)) < 2:
        raise DataError("verification needs both classes among the held-out labelled target images")
    out = []
    for seed in seeds:
        model = copy.deepcopy(c.model)
        want = max(2, int(np.max(_labels_of(fit))) + 1)
        if isinstance(model.head, nn.Linear) and model.head.out_features != want:  # e.g. an ImageNet head
            torch.manual_seed(int(seed))
            model.head = nn.Linear(model.head.in_features, want)
        m = FineTune(model, num_classes=int(model.head.out_features) if hasattr(model.head, "out_features") else 2,
                     epochs=epochs, lr=lr, batch_size=batch_size, seed=int(seed), device="cpu", progress=False)
        m.fit(target=fit_r)
        proba = m.predict_proba(ev_r)
        out.append(auroc(y, proba)[0])
    return out


def rank_candidates(
    candidates: Sequence[str | os.PathLike[str] | Candidate],
    target: Dataset,
    *,
    sources: Mapping[str, Dataset] | None = None,
    scores: Sequence[str] | None = None,
    default_score: str = DEFAULT_SCORE,
    verify: int = 0,
    verify_seeds: Sequence[int] = (0, 1, 2),
    verify_epochs: int = 15,
    verify_lr: float = 1e-3,
    verify_batch_size: int = 16,
    num_classes: int = 2,
    in_channels: int | None = None,
    max_label_free: int = 2000,
    seed: int = 0,
) -> RankResult:
    """Score and rank candidate source models for the ``target`` images.

    Args:
        candidates: model folders / files from ``save_model``, ``BACKBONE:WEIGHTS`` strings or
            :class:`Candidate` objects (>= 2).
        target: dict-yielding dataset of target images (e.g. ``ManifestDataset``); items with
            ``label >= 0`` are the labelled ones (see :func:`split_target`), the rest are used
            only by the label-free estimates.
        sources: ``{candidate name: its source images}``: adds ``pad`` (proxy A-distance between
            source and target in that candidate's own features; scale-free) and ``mmd2`` (in
            ONE shared feature space, the first candidate's, so values are comparable).
        scores: transferability scores to compute (default all of ``SCORE_NAMES``).
        default_score: the column to sort by (a score or a label-free column).
        verify: fine-tune the ``verify`` top-ranked candidates (all when >= their number) on
            the labelled fit images and measure AUROC on the held-out labelled images.
        verify_seeds, verify_epochs, verify_lr, verify_batch_size: fine-tuning settings
            (``FineTune``, encoder lr x 0.1).
        num_classes, in_channels: for ``BACKBONE:WEIGHTS`` candidates.
        max_label_free: at most this many target images for the label-free columns.
        seed: seed of the held-out split and subsamples.

    Returns:
        :class:`RankResult`.
    """
    import pandas as pd

    from shiftkit.evaluation import gap, risk
    from shiftkit.evaluation.transferability import SCORE_NAMES, rank_agreement, score_all

    scores = tuple(scores or SCORE_NAMES)
    if len(candidates) < 2:
        raise ConfigError("rank", ["give at least two candidates to rank"])
    if default_score not in (*scores, *LABEL_FREE):
        raise ConfigError("rank", [f"default_score {default_score!r} is not among the computed columns "
                                   f"{[*scores, *LABEL_FREE]}"])
    if in_channels is None:
        in_channels = int(target[0]["image"].shape[0])
    cands = [load_candidate(c, num_classes=num_classes, in_channels=in_channels) for c in candidates]
    names = [c.name for c in cands]
    if len(set(names)) != len(names):
        seen: dict[str, int] = {}
        for c in cands:
            seen[c.name] = seen.get(c.name, 0) + 1
            if seen[c.name] > 1:
                c.name = f"{c.name}#{seen[c.name]}"
    fit, ev = split_target(target, need_eval=verify > 0, seed=seed)
    if verify > 0 and ev is None:
        raise DataError("target: --verify needs held-out labelled images (rows with split val/test, or no split "
                        "column so that half the labelled rows are held out)")
    n = len(target)
    lf_idx = np.arange(n) if n <= max_label_free else np.sort(
        np.random.default_rng(seed).choice(n, max_label_free, replace=False))
    lf_ds = _Subset(target, lf_idx.tolist())
    rows = []
    shared_ref = cands[0]
    for c in cands:
        row: dict[str, Any] = {"candidate": c.name, "source": c.source or ""}
        if fit is not None:
            feats, proba = _run(c, fit)
            row.update(score_all(feats, _labels_of(fit), proba, scores=scores))
        else:
            row.update({s: math.nan for s in scores})
        t_feats, t_proba = _run(c, lf_ds)
        row["entropy"] = risk.prediction_entropy(t_proba)
        row["snd"] = risk.soft_neighborhood_density(t_proba)
        src = (sources or {}).get(c.name)
        if src is not None:
            s_feats, _ = _run(c, src)
            row["pad"] = gap.proxy_a_distance(s_feats, t_feats, seed=seed)["proxy_a_distance"]
            s_ref, _ = _run(shared_ref, src)
            t_ref, _ = _run(shared_ref, lf_ds)
            row["mmd2"] = gap.mmd2_unbiased(s_ref, t_ref)
        rows.append(row)
    table = pd.DataFrame(rows)
    sign = LABEL_FREE.get(default_score, 1)
    if table[default_score].isna().all():
        raise DataError(f"target: no labelled images, so {default_score!r} cannot be computed; choose a label-free "
                        f"default_score from {sorted(LABEL_FREE)}")
    table = table.sort_values(default_score, ascending=sign < 0, kind="stable", na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    agreement: dict[str, float] = {}
    if verify > 0 and fit is not None and ev is not None:
        by_name = {c.name: c for c in cands}
        k = min(int(verify), len(table))
        means, sds = [math.nan] * len(table), [math.nan] * len(table)
        for i in range(k):
            aucs = _finetune_auroc(by_name[table.loc[i, "candidate"]], fit, ev, seeds=verify_seeds,
                                   epochs=verify_epochs, lr=verify_lr, batch_size=verify_batch_size)
            means[i], sds[i] = float(np.mean(aucs)), float(np.std(aucs))
        table["measured_auroc"] = means
        table["measured_auroc_sd"] = sds
        ver = table[table["measured_auroc"].notna()]
        if len(ver) >= 2:
            cols = {s: ver[s].to_numpy() for s in scores}
            cols.update({k_: LABEL_FREE[k_] * ver[k_].to_numpy() for k_ in LABEL_FREE if k_ in ver.columns})
            agreement = rank_agreement(cols, ver["measured_auroc"].to_numpy())
    info = {"n_candidates": len(cands), "n_target": n, "n_scored": 0 if fit is None else len(fit),
            "n_held_out": 0 if ev is None else len(ev), "n_label_free": len(lf_ds), "verify": int(verify),
            "verify_seeds": list(verify_seeds), "verify_epochs": verify_epochs,
            "mmd2_feature_space": shared_ref.name if sources else None}
    return RankResult(table, default_score, agreement, info)
