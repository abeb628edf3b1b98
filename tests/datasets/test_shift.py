"""Each benchmark has a real, learnable shift (slow: trains small models; prints the numbers).

For source S and target T: a model trained on S scores clearly lower on T's test split than on
S's, and a model trained on T scores clearly higher on T than the S model does. So the gap is
not noise (S->S >> S->T) and not an unlearnable target (T->T >> S->T): there is something for
adaptation to win back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from shiftkit.datasets.synth import dashcam, radiograph

pytestmark = pytest.mark.slow


def _stack(mod, domain, n, split, size):
    items = [mod.sample(domain, i, size=size, split=split) for i in range(n)]
    x = torch.from_numpy(np.stack([s["image"] for s in items]))
    y = torch.as_tensor(np.stack([s["label"] if mod is radiograph else s["mask"] for s in items]))
    return x, y


def _block(i: int, o: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.BatchNorm2d(o), nn.ReLU())


def _classifier() -> nn.Module:
    return nn.Sequential(_block(1, 16), nn.MaxPool2d(2), _block(16, 32), nn.MaxPool2d(2), _block(32, 32),
                         nn.MaxPool2d(2), _block(32, 32), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 2))


class _Segmenter(nn.Module):
    """Tiny encoder-decoder with one skip: (N, 3, H, W) -> (N, 9, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.e1, self.e2, self.e3 = _block(3, 16), _block(16, 32, 2), _block(32, 32, 2)
        self.d2 = _block(64, 32)
        self.d1 = _block(48, 16)
        self.out = nn.Conv2d(16, 9, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(a)
        c = self.e3(b)
        up = nn.functional.interpolate
        d = self.d2(torch.cat([up(c, size=b.shape[-2:]), b], 1))
        return self.out(self.d1(torch.cat([up(d, size=a.shape[-2:]), a], 1)))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 2e-3) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _auroc(model, x, y) -> float:
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[:, 1].numpy()
    return float(roc_auc_score(y.numpy(), p))


def _miou(model, x, y) -> float:
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x.split(64)])
    ious = []
    for c in range(9):
        inter = ((pred == c) & (y == c)).sum().item()
        union = ((pred == c) | (y == c)).sum().item()
        if (y == c).any():
            ious.append(inter / union)
    return float(np.mean(ious))


def _report(name, s_s, s_t, t_t):
    print(f"\n[{name}] source->source {s_s:.3f}  source->target {s_t:.3f}  target->target {t_t:.3f}")


def test_radiograph_city_to_rural_shift_is_real_and_learnable():
    torch.manual_seed(0)
    size, n_train, n_test = 64, 600, 400
    xs, ys = _stack(radiograph, "city", n_train, "train", size)
    xt, yt = _stack(radiograph, "rural", n_train, "train", size)
    xs_te, ys_te = _stack(radiograph, "city", n_test, "test", size)
    xt_te, yt_te = _stack(radiograph, "rural", n_test, "test", size)
    src = _train(_classifier(), xs, ys, epochs=8)
    torch.manual_seed(0)
    tgt = _train(_classifier(), xt, yt, epochs=8)
    s_s, s_t, t_t = _auroc(src, xs_te, ys_te), _auroc(src, xt_te, yt_te), _auroc(tgt, xt_te, yt_te)
    _report("radiograph city->rural AUROC", s_s, s_t, t_t)
    assert s_s > 0.8
    assert s_s - s_t > 0.1
    assert t_t - s_t > 0.1


def test_dashcam_urban_to_rural_shift_is_real_and_learnable():
    torch.manual_seed(0)
    size, n_train, n_test = (32, 64), 300, 100
    xs, ys = _stack(dashcam, "urban_day", n_train, "train", size)
    xt, yt = _stack(dashcam, "rural_day", n_train, "train", size)
    xs_te, ys_te = _stack(dashcam, "urban_day", n_test, "test", size)
    xt_te, yt_te = _stack(dashcam, "rural_day", n_test, "test", size)
    src = _train(_Segmenter(), xs, ys, epochs=4)
    torch.manual_seed(0)
    tgt = _train(_Segmenter(), xt, yt, epochs=4)
    s_s, s_t, t_t = _miou(src, xs_te, ys_te), _miou(src, xt_te, yt_te), _miou(tgt, xt_te, yt_te)
    _report("dashcam urban_day->rural_day mIoU", s_s, s_t, t_t)
    assert s_s > 0.4
    assert s_s - s_t > 0.1
    assert t_t - s_t > 0.1
