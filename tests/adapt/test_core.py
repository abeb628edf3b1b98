"""Fast unit tests of the adaptation core: backbones, gradient reversal, trainer, DANN wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from shiftkit.adapt.methods.dann import DANN, DomainDiscriminator
from shiftkit.adapt.methods.grl import grad_reverse
from shiftkit.adapt.methods.source_only import SourceOnly
from shiftkit.adapt.models.backbones import (
    CLASSIFIER_NAMES,
    SplitModel,
    as_split_model,
    build_classifier,
    build_mlp,
)
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.adapt.training.schedules import dann_lambda, dann_lr_factor
from shiftkit.adapt.training.trainer import NonFiniteLossError, TrainConfig
from shiftkit.datasets.errors import ConfigError, DataError


def blobs(n: int = 64, shift: float = 0.0, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Tiny 1-channel images whose class is the sign of the mean brightness offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, 1, size, size)).astype("f4") + (2 * y - 1)[:, None, None, None] * 0.8 + shift
    return x.astype("f4"), y


@pytest.mark.parametrize("name", ["tiny", "resnet10"])
def test_build_classifier_split_matches_forward(name: str) -> None:
    m = build_classifier(name, 1, 3).eval()
    x = torch.randn(2, 1, 32, 32)
    f = m.encoder(x)
    assert f.shape == (2, m.feature_dim)
    assert torch.allclose(m.head(f), m(x))
    assert m(x).shape == (2, 3)


def test_build_classifier_rejects_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_classifier("vgg", 1, 2)
    assert "densenet121" in CLASSIFIER_NAMES


def test_split_protocol_accepts_pair_and_attribute_modules() -> None:
    enc, head = nn.Sequential(nn.Flatten(), nn.Linear(4, 5)), nn.Linear(5, 2)
    m = as_split_model((enc, head))
    assert isinstance(m, SplitModel) and m.feature_dim == 5

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = enc, head

    assert as_split_model(Mine()).feature_dim == 5
    with pytest.raises(ConfigError, match="split protocol"):
        as_split_model(nn.Linear(3, 3))


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(3)
    (grad_reverse(x, 0.7) * w).sum().backward()
    # d/dx of sum(x*w) is w; reversal must give exactly -0.7 w, and leave the forward alone.
    assert torch.allclose(x.grad, -0.7 * w.expand(5, 3))
    assert torch.equal(grad_reverse(x, 0.7), x)


def test_dann_schedules_follow_the_paper() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lr_factor(0.5) == pytest.approx(1 / 6**0.75)


def test_discriminator_ends_in_one_logit_and_learns() -> None:
    d = DomainDiscriminator(4, (8,))
    assert d.net[-1].out_features == 1
    xs, xt = torch.randn(128, 4), torch.randn(128, 4) + 1.0
    opt = torch.optim.Adam(d.parameters(), 1e-2)
    y = torch.cat([torch.zeros(128), torch.ones(128)])
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(d(torch.cat([xs, xt])).squeeze(1), y)
        loss.backward()
        opt.step()
    acc = ((d(torch.cat([xs, xt])).squeeze(1) > 0).float() == y).float().mean()
    assert acc > 0.8  # separable up to noise: a one-logit BCE discriminator does learn


def test_source_only_learns_and_history_has_contract_keys(tmp_path) -> None:
    x, y = blobs(96)
    xv, yv = blobs(64, seed=1)
    m = SourceOnly("tiny", epochs=3, batch_size=16, lr=3e-3, progress=False,
                   checkpoint_dir=str(tmp_path)).fit(ArrayDataset(x, y), val=ArrayDataset(xv, yv))
    h = m.history_
    assert [r["epoch"] for r in h] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_auroc", "warnings"):
        assert key in h[-1]
    assert h[-1]["val_acc"] > 0.8
    assert m.predict_proba(xv).shape == (64, 2)
    assert m.features(xv).shape == (64, m.model_.feature_dim)
    assert (tmp_path / "last.pt").exists()


def test_resume_from_checkpoint_reproduces_uninterrupted_run(tmp_path) -> None:
    x, y = blobs(64)
    xt, _ = blobs(64, shift=1.0, seed=2)
    src, tgt = ArrayDataset(x.reshape(64, -1), y), ArrayDataset(xt.reshape(64, -1))
    common = dict(epochs=4, batch_size=16, lr=1e-2, progress=False, seed=3)

    def net() -> SplitModel:
        torch.manual_seed(0)  # same initial weights for every run
        return build_mlp(64, [8], 2)

    full = DANN(net(), **common).fit(src, tgt)

    class Stop(Exception):
        pass

    def crash_in_epoch_2(epoch: int, model: nn.Module) -> None:
        if epoch == 2:
            raise Stop  # dies after epoch 2's training, before its checkpoint

    ck = str(tmp_path / "ck")
    with pytest.raises(Stop):
        DANN(net(), checkpoint_dir=ck, **common).fit(src, tgt, callback=crash_in_epoch_2)
    # A fresh process would rebuild the model from scratch: different init, weights from disk.
    torch.manual_seed(123)
    resumed = DANN(build_mlp(64, [8], 2), checkpoint_dir=ck, **common).fit(src, tgt)
    assert resumed.result_.resumed_from_epoch == 1
    for a, b in zip(full.model_.state_dict().values(), resumed.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in full.history_] == [r["train_loss"] for r in resumed.history_]


def test_nonfinite_batch_stops_with_clear_message_and_keeps_checkpoint(tmp_path) -> None:
    x, y = blobs(64)
    ds = ArrayDataset(x.reshape(64, -1), y)

    def poison_after_epoch_1(epoch: int, model: nn.Module) -> None:
        if epoch == 1:
            ds.images[40:] = float("nan")  # epoch 2's batches carry NaN pixels

    m = SourceOnly(build_mlp(64, [8], 2), epochs=3, batch_size=64, progress=False, checkpoint_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="non-finite loss.*epoch 2.*last good checkpoint kept"):
        m.fit(ds, callback=poison_after_epoch_1)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["modules"]["model"].values())

    x2, y2 = blobs(64)
    x2[[3, 17, 30, 50]] = np.inf
    skip = SourceOnly(build_mlp(64, [8], 2), epochs=2, batch_size=1, progress=False, on_nonfinite="skip")
    skip.fit(ArrayDataset(x2.reshape(64, -1), y2))
    assert [r["skipped_batches"] for r in skip.history_] == [4, 4]
    assert any("skipped 4 batch" in w for w in skip.warnings_)
    assert all(torch.isfinite(p).all() for p in skip.model_.parameters())


def test_target_labels_cannot_drive_early_stopping_without_oracle() -> None:
    with pytest.raises(ConfigError, match="oracle"):
        TrainConfig(early_stopping="target_acc").validate()
    TrainConfig(early_stopping="target_acc", oracle=True).validate()
    TrainConfig(early_stopping="target_entropy").validate()


def test_unlabelled_source_is_a_clear_error() -> None:
    x, _ = blobs(32)
    with pytest.raises(DataError, match="unlabelled"):
        SourceOnly("tiny", epochs=1, batch_size=16, progress=False).fit(ArrayDataset(x))
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        SourceOnly("tiny", epoch=3)  # parameters are named arguments: a typo fails at once


def test_segmenter_can_be_deepcopied_after_a_forward_and_the_copy_hooks_itself() -> None:
    """The pipeline adapts a deep copy of the fitted source segmenter: the copy must exist and
    its bottleneck hook must fill the copy, not the original."""
    import copy

    from shiftkit.adapt.models.backbones import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("tiny-unet", 3, 4)
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()  # a training-style forward leaves nothing behind
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.5)
        logits, feat = twin.forward_with_features(x)
        _, feat_orig = model.forward_with_features(x)
    assert logits.shape == (2, 4, 16, 16)
    assert feat.shape[1] == twin.feature_dim
    assert not torch.allclose(feat, feat_orig)
    assert twin._captured is None and model._captured is None
