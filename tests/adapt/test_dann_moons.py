"""The DANN paper's toy (Ganin et al. 2016, section 5.1.1): two moons, target rotated 35 degrees.

Source: sklearn make_moons (noise 0.1), 150 points per class. Target: a fresh sample rotated
35 degrees about its centre, labels used only to score. Network: one hidden layer of 15
units. All hyper-parameters below were fixed on development seeds 100-104 and are not tuned
on the test seeds; no choice during training looks at target labels (no early stopping,
the last epoch is scored).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shiftkit.adapt.methods.dann import DANN, DomainDiscriminator
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.models.backbones import build_mlp
from shiftkit.adapt.training.data import ArrayDataset

SEEDS = (0, 1, 2, 3, 4)
# Chosen on the development seeds 100-104 (mean target accuracy): gradient reversal 0.877
# (0.973 0.847 0.943 0.820 0.800), confusion loss 0.911 (0.773 0.987 0.993 0.813 0.990); a
# (64, 64) discriminator (0.716) or lambda_max 3 (0.850) did worse with confusion.
ADVERSARY = "confusion"
# The domains differ along curves (a rotated crescent), which a linear domain classifier
# cannot see: on the development seeds the linear PAD of the raw inputs was 0.00-0.03 and of
# the features did not move consistently (source-only 0.47-0.57, DANN 0.25-0.69), while an
# RBF-SVM PAD fell on every seed (source-only 0.88-0.99, DANN 0.44-0.75).
PAD = dict(classifier="rbf")
TRAIN = dict(epochs=200, batch_size=32, lr=0.05, optimizer="sgd", weight_decay=0.0, grad_clip=None, progress=False)


def rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate points ``(N, 2)`` about their centre."""
    c = x.mean(0)
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (x - c) @ r.T + c


def moons(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    xs, ys = make_moons(300, noise=0.1, random_state=seed)  # 150 per class
    xt, yt = make_moons(300, noise=0.1, random_state=seed + 1000)  # a fresh sample
    return xs.astype("f4"), ys, rotate(xt, 35).astype("f4"), yt


@pytest.fixture(scope="module")
def runs() -> dict[int, dict]:
    from shiftkit.evaluation.gap import proxy_a_distance

    out = {}
    for seed in SEEDS:
        xs, ys, xt, yt = moons(seed)
        src, tgt = ArrayDataset(xs, ys), ArrayDataset(xt)  # target dataset: no labels at all
        torch.manual_seed(seed)
        so = SourceOnly(build_mlp(2, [15], 2), seed=seed, **TRAIN).fit(src)
        torch.manual_seed(seed)
        dann = DANN(build_mlp(2, [15], 2), disc_hidden=(15,), adversary=ADVERSARY, seed=seed, **TRAIN).fit(src, tgt)
        out[seed] = {
            "so": so, "dann": dann, "xs": xs, "xt": xt,
            "acc_so": float((so.predict(xt) == yt).mean()),
            "acc_dann": float((dann.predict(xt) == yt).mean()),
            "pad_so": proxy_a_distance(so.features(xs), so.features(xt), seed=seed, **PAD)["proxy_a_distance"],
            "pad_dann": proxy_a_distance(dann.features(xs), dann.features(xt), seed=seed, **PAD)["proxy_a_distance"],
        }
        r = out[seed]
        print(f"\nmoons seed {seed}: target accuracy source-only {r['acc_so']:.3f} DANN {r['acc_dann']:.3f}; "
              f"PAD source-only {r['pad_so']:.3f} DANN {r['pad_dann']:.3f}", flush=True)
    return out


@pytest.mark.slow
def test_dann_beats_source_only_on_every_seed(runs) -> None:
    acc_so = np.array([r["acc_so"] for r in runs.values()])
    acc_dann = np.array([r["acc_dann"] for r in runs.values()])
    assert 0.6 < acc_so.mean() < 0.85  # the shift is real: the paper reports about 0.71
    assert (acc_dann > acc_so).all(), (acc_so, acc_dann)
    assert acc_dann.mean() > acc_so.mean() + 0.05, (acc_so, acc_dann)


# Measured (seeds 0-4, confusion adversary): source-only 0.697 0.693 0.710 0.683 0.710 (mean
# 0.699), DANN 0.967 0.993 0.993 0.997 0.967 (mean 0.983). With gradient reversal the same seeds
# gave 0.827 0.833 0.750 0.693 0.830 (mean 0.787): its encoder overshoots (see dann.py).
@pytest.mark.slow
def test_dann_reaches_085_on_average(runs) -> None:
    acc_dann = np.array([r["acc_dann"] for r in runs.values()])
    assert acc_dann.mean() >= 0.85, acc_dann


@pytest.mark.slow
def test_dann_shrinks_the_proxy_a_distance_of_the_features(runs) -> None:
    pad_so = np.array([r["pad_so"] for r in runs.values()])
    pad_dann = np.array([r["pad_dann"] for r in runs.values()])
    assert (pad_dann < pad_so).all(), (pad_so, pad_dann)
    assert pad_dann.mean() < 0.8 * pad_so.mean(), (pad_so, pad_dann)


@pytest.mark.slow
def test_domain_discriminator_learns_before_alignment(runs) -> None:
    """On source-only features the one-logit BCE discriminator beats chance on held-out points;
    a softmax over that single logit (a peer library's bug) is constant and gets no gradient."""
    r = runs[SEEDS[0]]
    fs = torch.from_numpy(r["so"].features(r["xs"]))
    ft = torch.from_numpy(r["so"].features(r["xt"]))
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    tr, te = perm[:200], perm[200:]
    torch.manual_seed(0)
    disc = DomainDiscriminator(fs.shape[1], (15,))
    opt = torch.optim.Adam(disc.parameters(), 1e-2)
    x_tr = torch.cat([fs[tr], ft[tr]])
    d_tr = torch.cat([torch.zeros(200), torch.ones(200)])
    for _ in range(300):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(disc(x_tr).squeeze(1), d_tr).backward()
        opt.step()
    x_te = torch.cat([fs[te], ft[te]])
    d_te = torch.cat([torch.zeros(100), torch.ones(100)])
    acc = ((disc(x_te).squeeze(1) > 0).float() == d_te).float().mean().item()
    assert acc > 0.65, acc

    broken = DomainDiscriminator(fs.shape[1], (15,))
    p = torch.softmax(broken(x_tr), dim=1)  # softmax over ONE output: always 1.0
    loss = F.binary_cross_entropy(p.squeeze(1).clamp(1e-6, 1 - 1e-6), d_tr)
    loss.backward()
    assert torch.all(p == 1.0)
    assert all(q.grad is None or q.grad.abs().max() == 0 for q in broken.parameters())

    # During DANN training the discriminator is better than chance early, then confused.
    hist = runs[SEEDS[0]]["dann"].history_
    assert max(h["disc_acc"] for h in hist[:20]) > 0.6
