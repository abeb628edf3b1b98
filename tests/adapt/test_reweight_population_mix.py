"""Importance weighting on the radiograph benchmark under a population-mix shift.

The shift is built so that covariate shift holds by construction. Source and target images
both come from the ``city`` site's generator: same acquisition and the same anatomy and
lesion code, so the images cannot differ in how they are rendered. What differs is who gets
in. Each hospital admits a patient from the shared pool with a probability that depends only
on recorded attributes z = (portable film, age >= 60):

    source keeps portable films with 0.25 and patients aged 60+ with 0.6 (the two multiply),
    target keeps non-portable films with 0.4 and patients under 60 with 0.5.

The selection looks at z alone, so p(y | image, z) is the same at both hospitals and the
target joint is the source joint times w(z) = b(z) / a(z) (up to a constant), exactly. The
mix does matter. At ``city``, findings go with the portable unit (P(finding) is about 0.7 on
portable films and 0.25 on the rest) and patients with findings are 4 years older on average.
So target prevalence is 0.43-0.48, against 0.26-0.31 at the source (seeds 0-2, 10-14, 20-24).

The classifier is a linear model (``build_mlp(d, (), 2)``) on the library's ``pooled_pixels``
(each image average-pooled to 3 x 3), trained by the shared trainer. It is too small to fit
p(y | image) for every group, so the fit depends on the mix it sees. That is where weighting can
help. For a well-specified model, weighting changes nothing in the limit and only costs effective
sample size.
The weights are estimated without target labels by ``ClassifierRatio`` on the attributes
(age, sex, portable) of the source and target patients, which a hospital's DICOM headers give.

Settings (3 x 3 pooling, selection rates, pool size, optimiser) were fixed on seeds 10-14
(``population_mix_run(seed)``) before seeds 0, 1 and 2 were run. On those seeds, with richer
features the model fits the groups better and weighting gains less or loses: target accuracy
+1.3 points at 4 x 4 pooling and -2.0 points at 8 x 8, against +6.8 points at 3 x 3.
The learning rate is 0.01, not the 0.05 first tried. The weighted loss scales some gradients by
the largest weight (up to ~40 here), so at 0.05 the last SGD iterate was noisy: on seed 11 it
sat 4 points of target accuracy below the converged weighted logistic fit, and the first run on
seeds 0-2 failed the NLL check that way. At 0.01 both models match their converged optimum on
seeds 10-12, and weighting won on all of seeds 10-14 and 20-24 before seeds 0-2 were rerun.
docs/reweight.md ("Radiograph population mix") has the figures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.models.backbones import build_mlp
from shiftkit.adapt.reweight import (
    ClassifierRatio,
    ImportanceWeighting,
    dataset_features,
    iwcv_risk,
    pooled_pixels,
)
from shiftkit.adapt.training.data import ArrayDataset, CachedDataset
from shiftkit.datasets.synth import radiograph

torch.set_num_threads(1)

# Admission probabilities by recorded attribute (fixed on seeds 10-14; see the module docstring).
SOURCE_KEEP = {"portable": 0.25, "old": 0.6}  # multiplies in for each attribute that is present
TARGET_KEEP = {"not_portable": 0.4, "young": 0.5}
OLD_AGE = 60  # years


def admission(portable: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Admission probabilities (n,) at the source and at the target hospital, from z alone."""
    old = age >= OLD_AGE
    a = np.where(portable == 1, SOURCE_KEEP["portable"], 1.0) * np.where(old, SOURCE_KEEP["old"], 1.0)
    b = np.where(portable == 1, 1.0, TARGET_KEEP["not_portable"]) * np.where(old, 1.0, TARGET_KEEP["young"])
    return a, b


def population_mix_split(seed: int, n_pool: int = 6000, size: int = 32) -> dict[str, dict]:
    """Draw a city pool and admit patients to a source (train/val) and a target hospital.

    Returns {"train", "val", "target"}: each a dict with ``items`` (a CachedDataset of radiograph
    items: image (1, size, size), label, age, sex, portable) and ``true_w`` (n,), the true
    density ratio p_t(z)/p_s(z) at those items, scaled to mean 1 over the source train set.
    The pool is split in half before admission, so no patient can be admitted by both hospitals.
    """
    pool = CachedDataset(radiograph.SynthDataset("city", n_pool, seed=seed, size=size))
    port = np.array([int(it["portable"]) for it in pool.items])
    age = np.array([int(it["age"]) for it in pool.items])
    a, b = admission(port, age)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_pool)
    src, tgt = perm[: n_pool // 2], perm[n_pool // 2:]
    src = src[rng.random(src.size) < a[src]]
    tgt = tgt[rng.random(tgt.size) < b[tgt]]
    n_val = src.size // 3
    parts = {"val": src[:n_val], "train": src[n_val:], "target": tgt}
    ratio = b / a
    scale = ratio[parts["train"]].mean()
    return {k: {"items": CachedDataset(torch.utils.data.Subset(pool, idx)), "true_w": ratio[idx] / scale}
            for k, idx in parts.items()}


def _labels(ds: CachedDataset) -> np.ndarray:
    return np.array([int(it["label"]) for it in ds.items])


def _nll(method, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample negative log-likelihood (n,) in nats."""
    p = torch.as_tensor(method.predict_proba(x.astype(np.float32)))
    return F.nll_loss(p.clamp_min(1e-7).log(), torch.as_tensor(y), reduction="none").numpy()


def population_mix_run(seed: int, *, pool_size: int = 3, n_pool: int = 6000, lr: float = 0.01) -> dict[str, float]:
    """One seed: source-only vs importance-weighted training on the target, and IWCV vs source validation.

    Returns target accuracy and NLL of both models, the estimated weights' ESS and their Pearson
    correlation with the true ratio, and for each model the true target NLL, its IWCV estimate
    and the plain source-validation NLL.
    """
    data = population_mix_split(seed, n_pool=n_pool)
    tr, va, tg = (data[k]["items"] for k in ("train", "val", "target"))
    feats = {k: pooled_pixels(d, size=pool_size) for k, d in (("train", tr), ("val", va), ("target", tg))}
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-8  # standardise on source train only
    x = {k: (v - mu) / sd for k, v in feats.items()}
    y = {"train": _labels(tr), "val": _labels(va), "target": _labels(tg)}

    # Label-free weights: a domain classifier on the patients' attributes (no target labels).
    attrs = ["age", "sex", "portable"]
    est = ClassifierRatio(seed=seed).fit(dataset_features(tr, attrs), dataset_features(tg, attrs))
    w_train = est.weights_
    w_val = est.weight(dataset_features(va, attrs))

    common = dict(epochs=30, batch_size=64, lr=lr, optimizer="sgd", weight_decay=0.0, seed=seed, progress=False)
    d = x["train"].shape[1]
    source = ArrayDataset(x["train"].astype(np.float32), y["train"])
    plain = SourceOnly(build_mlp(d, (), 2), **common).fit(source)
    weighted = SourceOnly(build_mlp(d, (), 2), source_adapter=ImportanceWeighting(weights=w_train), **common).fit(source)

    out = {"n_train": float(len(tr)), "n_target": float(len(tg)), "ess": est.ess_,
           "w_corr": float(np.corrcoef(w_train, data["train"]["true_w"])[0, 1]),
           "prev_source": float(y["train"].mean()), "prev_target": float(y["target"].mean())}
    for name, m in (("plain", plain), ("weighted", weighted)):
        proba = m.predict_proba(x["target"].astype(np.float32))
        val_losses = _nll(m, x["val"], y["val"])
        out[f"{name}_acc"] = float((proba.argmax(1) == y["target"]).mean())
        out[f"{name}_auroc"] = float(roc_auc_score(y["target"], proba[:, 1]))
        out[f"{name}_true"] = float(_nll(m, x["target"], y["target"]).mean())
        out[f"{name}_iwcv"] = iwcv_risk(val_losses, w_val)["risk"]
        out[f"{name}_srcval"] = float(val_losses.mean())
    return out


def _report(seed: int, r: dict[str, float]) -> str:
    return (f"seed {seed}: n_s {r['n_train']:.0f} n_t {r['n_target']:.0f} "
            f"prevalence {r['prev_source']:.2f}->{r['prev_target']:.2f} ESS {r['ess']:.0f} "
            f"corr(w, true) {r['w_corr']:.3f} | target acc plain {r['plain_acc']:.3f} weighted "
            f"{r['weighted_acc']:.3f} | AUROC {r['plain_auroc']:.3f} {r['weighted_auroc']:.3f} | target NLL plain {r['plain_true']:.3f} weighted {r['weighted_true']:.3f}"
            f" | plain: IWCV {r['plain_iwcv']:.3f} src-val {r['plain_srcval']:.3f}"
            f" | weighted: IWCV {r['weighted_iwcv']:.3f} src-val {r['weighted_srcval']:.3f}")


@pytest.mark.slow
def test_importance_weighting_population_mix_radiographs():
    runs = {seed: population_mix_run(seed) for seed in (0, 1, 2)}
    for seed, r in runs.items():
        print(_report(seed, r))
    acc_gain = np.mean([r["weighted_acc"] - r["plain_acc"] for r in runs.values()])
    nll_gain = np.mean([r["plain_true"] - r["weighted_true"] for r in runs.values()])
    print(f"mean target accuracy gain {acc_gain:+.4f}, mean target NLL reduction {nll_gain:+.4f}")
    assert acc_gain > 0.0, runs
    assert nll_gain > 0.0, runs
    # IWCV vs plain source validation as estimates of each model's target NLL.
    iw_err = [abs(r[f"{m}_iwcv"] - r[f"{m}_true"]) for r in runs.values() for m in ("plain", "weighted")]
    src_err = [abs(r[f"{m}_srcval"] - r[f"{m}_true"]) for r in runs.values() for m in ("plain", "weighted")]
    print(f"mean |IWCV - true| {np.mean(iw_err):.4f}, mean |source-val - true| {np.mean(src_err):.4f}")
    assert np.mean(iw_err) < np.mean(src_err), (iw_err, src_err)
    # For the source-only model (the one a hospital would be checking) IWCV was closer on every
    # one of seeds 10-14 and 20-24, so this is asserted per seed.
    for seed, r in runs.items():
        assert abs(r["plain_iwcv"] - r["plain_true"]) < abs(r["plain_srcval"] - r["plain_true"]), (seed, r)
