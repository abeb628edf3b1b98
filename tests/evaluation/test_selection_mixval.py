"""MixVal (parity with the official code) and the safety rule of label-free selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shiftkit.evaluation.selection import (
    CandidateOutputs,
    Selection,
    mixval_probes,
    safe_choice,
    select,
)


def _official_mixval(net: torch.nn.Module, inputs_all: torch.Tensor, class_num: int, bs: int, lam: float,
                     kind: str) -> float:
    """Port of ``mixval()`` in github.com/LHXXHB/MixVal, val_mixval_inter.py / val_mixval_intra.py
    (one epoch, ``synth='mixup'``): ``inputs_all`` is the target list in the order the official
    DataLoader (shuffle=False) reads it. Only the list I/O and ``.cuda()`` are dropped."""
    with torch.no_grad():
        saved_logits = net(inputs_all).float()
    raw_pl = F.one_hot(saved_logits.max(dim=-1)[1], num_classes=class_num).float()
    total = 0
    all_mix_logits, all_mix_labels, all_same_idx, all_diff_idx = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(inputs_all), bs):
            inputs = inputs_all[start:start + bs]
            idx = torch.arange(start, start + len(inputs))
            batch_size = inputs.size(0)
            mix_lam = lam
            rand_idx = torch.arange(batch_size).flip([0])
            pl_a = raw_pl[idx]
            pl_b = pl_a[rand_idx]
            inputs_a = inputs
            inputs_b = inputs_a[rand_idx]
            same_idx = (pl_a.max(dim=-1)[1] == pl_b.max(dim=-1)[1]).nonzero(as_tuple=True)[0] + total
            diff_idx = (pl_a.max(dim=-1)[1] != pl_b.max(dim=-1)[1]).nonzero(as_tuple=True)[0] + total
            mix_inputs = mix_lam * inputs_a + (1 - mix_lam) * inputs_b
            mix_labels = mix_lam * pl_a + (1 - mix_lam) * pl_b
            all_mix_logits.append(net(mix_inputs).detach().float())
            all_mix_labels.append(mix_labels)
            all_same_idx.append(same_idx)
            all_diff_idx.append(diff_idx)
            total += batch_size
    all_mix_logits = torch.cat(all_mix_logits)
    all_mix_labels = torch.cat(all_mix_labels)
    sel = torch.cat(all_same_idx if kind == "intra" else all_diff_idx)
    return torch.sum(all_mix_logits[sel].max(dim=-1)[1].float() == all_mix_labels[sel].max(dim=-1)[1].float()).item() / \
        float(all_mix_labels[sel].size()[0])


@pytest.mark.parametrize("bs", [128, 50])
def test_mixval_parity_with_the_official_code(bs: int) -> None:
    torch.manual_seed(0)
    k = 4
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, k)).eval()
    x = np.random.default_rng(1).normal(size=(301, 3, 8, 8)).astype(np.float32)  # a partial last batch

    def predict(b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(b)).numpy()

    ours = mixval_probes(predict, x, batch_size=bs, seed=3)
    # The official target list is a shuffled list ("_shuffle{run}.txt"); intra re-orders it by
    # predicted class. Our port sorts stably (torch's argsort leaves ties in any order).
    order = np.random.default_rng(3).permutation(len(x))
    xt = torch.from_numpy(x[order])
    with torch.no_grad():
        pl = net(xt).argmax(1).numpy()
    inter = _official_mixval(net, xt, k, bs, 0.55, "inter")
    intra = _official_mixval(net, xt[np.argsort(pl, kind="stable")], k, bs, 0.55, "intra")
    assert ours["inter"] == pytest.approx(inter, abs=1e-12)
    assert ours["intra"] == pytest.approx(intra, abs=1e-12)
    assert ours["n_intra"] > 0 and ours["n_inter"] > 0


def test_mixval_segmentation_counts_pixels_and_a_constant_model_has_no_inter_pairs() -> None:
    x = np.random.default_rng(0).random((10, 1, 6, 6)).astype(np.float32)

    def seg(b: np.ndarray) -> np.ndarray:  # class 1 where the pixel is bright: mixtures move it
        return np.concatenate([0.5 - b, b - 0.5], axis=1)

    out = mixval_probes(seg, x)
    assert out["n_intra"] + out["n_inter"] == 10 * 36
    assert 0 <= out["intra"] <= 1 and 0 <= out["inter"] <= 1

    def const(b: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.1, 0.9]], np.float32), (len(b), 1))

    out = mixval_probes(const, x)
    assert out["intra"] == 1.0 and math.isnan(out["inter"])


def _cand(p1: np.ndarray, intra: float = math.nan, inter: float = math.nan) -> CandidateOutputs:
    proba = np.stack([1 - p1, p1], 1).astype(np.float32)
    z = np.zeros((len(p1), 2), np.float32)
    return CandidateOutputs(source_val_loss=np.ones(4, np.float32), source_val_score=0.7, source_features=z,
                            source_val_features=z[:4], target_features=z, target_proba=proba,
                            target_pred=proba.argmax(1), mixval_intra=intra, mixval_inter=inter)


def test_mixval_validator_ranks_by_both_probes_and_refuses_missing_probes() -> None:
    p = np.random.default_rng(0).random(50)
    cands = {"a": _cand(p, 0.9, 0.6), "b": _cand(p, 0.8, 0.5), "c": _cand(p, 0.95, 0.7)}
    sel = select(cands, "mixval")
    assert sel.chosen == "c" and sel.scores["mixval"]["b"] < sel.scores["mixval"]["a"]
    plain = {"a": _cand(p), "b": _cand(p)}
    assert "mixval" not in select(plain, "entropy").scores  # every other validator still runs
    with pytest.raises(Exception, match="mixval"):
        select(plain, "mixval")


def test_safe_choice_falls_back_when_the_committee_disagrees() -> None:
    names = ["source_only", "x", "y"]
    COM = ("entropy", "mixval", "ensv")  # noqa: N806
    agree = {"entropy": dict(zip(names, [0.0, 1.0, 0.5], strict=True)),
             "ensv": dict(zip(names, [0.2, 0.9, 0.3], strict=True))}
    kept = safe_choice(Selection(agree, "entropy", "x"), "source_only", committee=COM, margin=0.0)
    assert kept.chosen == "x" and not kept.fell_back and kept.leads["entropy"] == pytest.approx(1.0)
    disagree = {**agree, "mixval": dict(zip(names, [3.0, 1.0, 2.0], strict=True))}
    fb = safe_choice(Selection(disagree, "entropy", "x"), "source_only", fallback="ensemble", committee=COM, margin=0.0)
    assert fb.chosen == "ensemble" and fb.fell_back and "mixval" in fb.reason
    # A lead smaller than the margin is not confident.
    close = {**agree, "ensv": dict(zip(names, [0.85, 0.9, 0.3], strict=True))}  # lead 0.05 of a 0.6 range
    assert not safe_choice(Selection(close, "entropy", "x"), "source_only", committee=COM, margin=0.0).fell_back
    assert safe_choice(Selection(close, "entropy", "x"), "source_only", committee=COM, margin=0.1).fell_back
