"""FineTune, LinearProbe, AdaBN, SegDANN and DANN's discriminator warnings (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shiftkit.adapt.methods.adabn import AdaBN
from shiftkit.adapt.methods.dann import DANN
from shiftkit.adapt.methods.dann_seg import OutputDiscriminator, SegDANN
from shiftkit.adapt.methods.finetune import FineTune
from shiftkit.adapt.methods.linear_probe import LinearProbe
from shiftkit.adapt.models.backbones import build_classifier, build_mlp
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.datasets.errors import ConfigError, DataError


def _imgs(n: int, offset: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.3, 0.1, (n, 1, 16, 16)) + y[:, None, None, None] * 0.3 + offset
    return x.astype("f4"), y


def test_adabn_sets_bn_statistics_to_the_target_statistics() -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2)
    xt, _ = _imgs(48, offset=2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = AdaBN(model, train_source=False, bn_batch_size=16).fit(None, ArrayDataset(xt)).model_
    for k, v in model.state_dict().items():  # the module passed in is copied, never changed
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        a = adapted.encoder.conv1(torch.from_numpy(xt))  # input of the first BN layer
    bn = adapted.encoder.bn1
    torch.testing.assert_close(bn.running_mean, a.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    # cumulative average of per-batch unbiased variances (equal batches) ~ the pooled variance
    assert torch.allclose(bn.running_var, a.var(dim=(0, 2, 3)), rtol=0.05)
    assert bn.momentum == 0.1  # restored after the pass
    with pytest.raises(ConfigError, match="no BatchNorm"):
        AdaBN(build_mlp(4, [3], 2), train_source=False).fit(None, ArrayDataset(np.zeros((4, 4), "f4")))


def test_linear_probe_moves_only_the_head() -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _imgs(32)
    after = LinearProbe(model, epochs=2, batch_size=8, lr=1e-2, progress=False).fit(None, ArrayDataset(x, y)).model_.state_dict()
    for k in before:
        if k.startswith("encoder."):
            assert torch.equal(before[k], after[k]), f"{k} moved"  # weights and BN statistics
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_finetune_freezes_prefixes_and_scales_encoder_lr() -> None:
    torch.manual_seed(0)
    model = build_classifier("tiny", 1, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _imgs(32)
    ft = FineTune(model, freeze=("encoder.conv1", "encoder.layer1"), encoder_lr_mult=0.1, epochs=1,
                  batch_size=8, lr=1e-2, progress=False).fit(None, ArrayDataset(x, y))
    after = ft.model_.state_dict()
    assert torch.equal(before["encoder.layer1.0.conv1.weight"], after["encoder.layer1.0.conv1.weight"])
    assert torch.equal(before["encoder.conv1.weight"], after["encoder.conv1.weight"])
    assert not torch.equal(before["encoder.layer4.0.conv1.weight"], after["encoder.layer4.0.conv1.weight"])
    groups = ft.param_groups(1e-2)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-3), 1e-2]
    with pytest.raises(DataError, match="no label"):
        FineTune(model, epochs=1, progress=False).fit(None, ArrayDataset(x))  # unlabelled target
    with pytest.raises(ConfigError, match="matches no parameter"):
        FineTune(model, freeze=("encoder.nope",), epochs=1, progress=False).fit(None, ArrayDataset(x, y))


def test_segdann_step_trains_model_and_both_discriminators() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((8, 3, 32, 32)).astype("f4")
    masks = rng.integers(0, 4, (8, 32, 32))
    m = SegDANN("tiny-unet", feature_level=True, num_classes=4, epochs=1, batch_size=4, progress=False)
    m.fit(ArrayDataset(x, masks=masks), ArrayDataset(x + 0.5))
    h = m.history_[-1]
    for key in ("cls_loss", "domain_loss", "disc_acc", "out_domain_loss", "out_disc_acc", "lambda"):
        assert key in h and np.isfinite(h[key])
    assert m.predict(x[:2]).shape == (2, 32, 32)
    assert OutputDiscriminator(4).net[-1].out_channels == 1
    # gradients reach all three modules in one step
    src = {"image": torch.from_numpy(x[:4]), "mask": torch.from_numpy(masks[:4])}
    tgt = {"image": torch.from_numpy(x[4:] + 0.5)}
    loss, _ = m.training_step(src, tgt, 0.5)
    loss.backward()
    for name, mod in m.modules_.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), name


def test_dann_warns_when_the_discriminator_saturates() -> None:
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, 4)).astype("f4")
    ys = (xs[:, 0] > 0).astype(int)
    xt = xs + 20.0  # trivially separable, and lambda_max=0 lets nothing align the features
    torch.manual_seed(0)
    m = DANN(build_mlp(4, [8], 2), disc_hidden=(8,), lambda_max=0.0, epochs=6, batch_size=16, lr=0.1,
             progress=False)
    with pytest.warns(RuntimeWarning, match="saturated"):
        m.fit(ArrayDataset(xs, ys), ArrayDataset(xt))
    assert any("saturated" in w for h in m.history_ for w in h["warnings"])
    collapsed = m.epoch_warnings({"epoch": 3, "disc_acc": 0.5, "disc_logit_std": 0.0, "domain_loss": 0.69})
    assert collapsed and "collapsed" in collapsed[0]
    assert m.epoch_warnings({"epoch": 3, "disc_acc": 0.55, "disc_logit_std": 0.3, "domain_loss": 0.68}) == []


def test_confusion_adversary_trains_d_on_detached_features_and_the_encoder_towards_one_half() -> None:
    import torch.nn.functional as F

    from shiftkit.adapt.methods.dann import DomainDiscriminator
    from shiftkit.adapt.methods.losses import adversarial_loss

    torch.manual_seed(0)
    disc = DomainDiscriminator(4, (8,))
    f = torch.randn(6, 4, requires_grad=True)
    loss, logs = adversarial_loss(disc, f, 3, 0.7, "confusion")
    loss.backward()
    dom = torch.tensor([0.0, 0, 0, 1, 1, 1]).unsqueeze(1)

    # D's gradient is that of its own BCE on detached features: the confusion term leaves D alone.
    ref = DomainDiscriminator(4, (8,))
    ref.load_state_dict(disc.state_dict())
    F.binary_cross_entropy_with_logits(ref(f.detach()), dom).backward()
    for a, b in zip(disc.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    # The features' gradient is lambda times that of BCE(D(f), 1/2) - no reversed BCE in it.
    g = f.detach().clone().requires_grad_(True)
    (0.7 * F.binary_cross_entropy_with_logits(ref(g), torch.full((6, 1), 0.5))).backward()
    torch.testing.assert_close(f.grad, g.grad)
    assert logs["domain_loss"] == pytest.approx(F.binary_cross_entropy_with_logits(ref(f), dom).item())

    # Swapped domains (the encoder overshot: source looks like target, logit +2, and target
    # like source, -2). A descent step on gradient reversal's loss makes D *more* wrong; one on
    # the confusion loss moves both towards the 1/2 boundary.
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    lin = torch.nn.Linear(4, 1, bias=False)
    lin.weight.data.copy_(w)
    swapped = torch.tensor([[2.0, 0, 0, 0]] * 3 + [[-2.0, 0, 0, 0]] * 3, requires_grad=True)
    for adversary, further in (("grl", True), ("confusion", False)):
        swapped.grad = None
        adversarial_loss(lin, swapped, 3, 1.0, adversary)[0].backward()
        logit_change = -(swapped.grad @ w.T).squeeze(1)  # per row, for a small descent step
        wrong_direction = torch.cat([logit_change[:3] > 0, logit_change[3:] < 0])
        # every row: further from the boundary under GRL, back towards it under confusion
        assert bool((wrong_direction == further).all()), (adversary, logit_change)
    bad = DANN(build_mlp(2, [4], 2), adversary="minimax")  # stored as given; fit validates
    with pytest.raises(ValueError, match="adversary"):
        bad.fit(ArrayDataset(np.zeros((4, 2), "f4"), [0, 1, 0, 1]), ArrayDataset(np.zeros((4, 2), "f4")))
