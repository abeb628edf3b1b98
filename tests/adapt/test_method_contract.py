"""The contract every method follows, checked on every registered method (and on the public
methods the pipeline does not register): scikit-learn parameters and clone, fit returns self,
output shapes, target labels never read, same seed same predictions, save/load round trip,
unfitted predict refused. A method added to the registry is tested here without a new line.

Also: per-sample weights really remove rows (task loss and domain loss, both adversaries), and
DANN warns when its discriminator has swapped the domains.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import sklearn.exceptions
import torch
from sklearn.base import clone

from shiftkit.adapt.methods import (
    DANN,
    FineTune,
    LinearProbe,
    Method,
    NotFittedError,
    Requires,
    SegDANN,
    get_method,
    method_names,
    register,
)
from shiftkit.adapt.models.backbones import build_mlp
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.adapt.training.trainer import TrainConfig

torch.set_num_threads(1)

#: Public methods that are not registered names (the pipeline builds SegDANN through "dann").
UNREGISTERED = {"FineTune": FineTune, "LinearProbe": LinearProbe, "SegDANN": SegDANN}
ALL = [*method_names(), *UNREGISTERED]
N_SOURCE, N_TARGET, SIZE, K = 32, 24, 32, 2
TINY = dict(epochs=1, batch_size=8, progress=False, seed=0, device="cpu", eval_batch_size=64)


def _cls(key: str) -> type[Method]:
    return UNREGISTERED[key] if key in UNREGISTERED else get_method(key)


def _segmentation(key: str) -> bool:
    return issubclass(_cls(key), SegDANN)


def make(key: str) -> Method:
    """The method under its defaults, sized for a unit test."""
    if _segmentation(key):
        return _cls(key)("tiny-unet", num_classes=3, **TINY)
    return _cls(key)("tiny", num_classes=K, **TINY)


class _LabelRead(AssertionError):
    pass


class _GuardedItem(dict):
    """A target item that advertises ``label``/``mask`` but raises when either is read."""

    _HIDDEN = ("label", "mask")

    def __init__(self, visible: dict, hidden: tuple[str, ...]):
        super().__init__(visible)
        self._hidden_keys = hidden

    def __getitem__(self, k):  # noqa: ANN001, ANN204
        if k in self._hidden_keys:
            raise _LabelRead(f"a method read the target {k!r}")
        return super().__getitem__(k)

    def get(self, k, default=None):  # noqa: ANN001, ANN201
        if k in self._hidden_keys:
            raise _LabelRead(f"a method read the target {k!r}")
        return super().get(k, default)

    def __contains__(self, k) -> bool:  # noqa: ANN001
        return k in self._hidden_keys or super().__contains__(k)

    def keys(self):  # noqa: ANN201
        return [*super().keys(), *self._hidden_keys]

    def __iter__(self):  # noqa: ANN204
        return iter(self.keys())

    def items(self):  # noqa: ANN201
        return [(k, self[k]) for k in self.keys()]

    def values(self):  # noqa: ANN201
        return [self[k] for k in self.keys()]


class GuardedTarget(torch.utils.data.Dataset):
    """Unlabelled target images whose ``label`` and ``mask`` raise on access."""

    def __init__(self, base: ArrayDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        hidden = tuple(k for k in ("label", "mask") if k in item)
        return _GuardedItem({k: v for k, v in item.items() if k not in hidden}, hidden)


def _data(key: str) -> dict:
    rng = np.random.default_rng(0)
    if _segmentation(key):
        xs = rng.random((N_SOURCE, 3, SIZE, SIZE)).astype("f4")
        ms = (xs[:, 0] > 0.5).astype(int) + (xs[:, 1] > 0.8).astype(int)
        xt = np.clip(xs[:N_TARGET] * 0.8 + 0.1, 0, 1).astype("f4")
        mt = ms[:N_TARGET]
        return {"source": ArrayDataset(xs, masks=ms), "target_labelled": ArrayDataset(xt, masks=mt),
                "target": GuardedTarget(ArrayDataset(xt, masks=mt)), "x": xt[:8]}
    ys = rng.integers(0, K, N_SOURCE)
    xs = np.clip(rng.normal(0.3, 0.1, (N_SOURCE, 1, SIZE, SIZE)) + 0.3 * ys[:, None, None, None], 0, 1).astype("f4")
    yt = rng.integers(0, K, N_TARGET)
    xt = np.clip(rng.normal(0.4, 0.15, (N_TARGET, 1, SIZE, SIZE)) + 0.3 * yt[:, None, None, None], 0, 1).astype("f4")
    return {"source": ArrayDataset(xs, ys), "target_labelled": ArrayDataset(xt, yt),
            "target": GuardedTarget(ArrayDataset(xt, yt)), "x": xt[:8]}


def fit(method: Method, data: dict) -> Method:
    """Fit on what the method declares; the target's labels raise unless it declares them."""
    req = method.requires
    target = data["target_labelled"] if req.target == "labelled" else data["target"]
    return method.fit(data["source"] if req.source != "none" else None, target)


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[Method, dict]]:
    out = {}
    for key in ALL:
        data = _data(key)
        out[key] = (fit(make(key), data), data)
    return out


@pytest.mark.parametrize("key", ALL)
def test_init_stores_parameters_only_and_clone_round_trips(key: str) -> None:
    m = make(key)
    params = m.get_params(deep=False)
    assert set(vars(m)) == set(params), set(vars(m)) ^ set(params)  # nothing but the parameters
    assert isinstance(m.requires, Requires)
    twin = clone(m)
    assert type(twin) is type(m) and twin is not m
    assert twin.get_params(deep=False) == params
    assert m.set_params(epochs=3) is m and m.epochs == 3 and twin.epochs == 1
    assert "epochs=3" in repr(m)
    # A module given as the model is copied by clone (sklearn deep-copies non-estimators).
    module = build_mlp(4, [8], 2)
    m.set_params(model=module)
    copy_ = clone(m)
    assert copy_.model is not module
    for a, b in zip(copy_.model.state_dict().values(), module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key", ALL)
def test_fit_returns_self_with_fitted_state_and_shapes(key: str, fitted) -> None:
    m, data = fitted[key]
    params = set(m.get_params(deep=False))
    assert all(k.endswith("_") for k in set(vars(m)) - params), sorted(set(vars(m)) - params)
    assert m.history_ == [] or len(m.history_) == m.epochs
    x = data["x"]
    proba = m.predict_proba(x)
    k = 3 if _segmentation(key) else K
    if _segmentation(key):
        assert proba.shape == (len(x), k, SIZE, SIZE) and m.predict(x).shape == (len(x), SIZE, SIZE)
    else:
        assert proba.shape == (len(x), k) and m.predict(x).shape == (len(x),)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    feats = m.features(x)
    assert feats.ndim == 2 and feats.shape[0] == len(x) and np.isfinite(feats).all()


@pytest.mark.parametrize("key", ALL)
def test_same_seed_gives_identical_predictions(key: str, fitted) -> None:
    m, data = fitted[key]
    again = fit(clone(m), data)
    np.testing.assert_array_equal(again.predict_proba(data["x"]), m.predict_proba(data["x"]))


@pytest.mark.parametrize("key", ALL)
def test_save_load_round_trip(key: str, fitted, tmp_path: Path) -> None:
    from shiftkit.adapt import load, save_model

    m, data = fitted[key]
    save_model(m, tmp_path / "model", target=data["target_labelled"])
    pred = load(tmp_path / "model").predict(data["x"])
    if _segmentation(key):
        np.testing.assert_array_equal(pred.mask, m.predict(data["x"]))
    else:
        np.testing.assert_allclose(pred.proba, m.predict_proba(data["x"]), atol=1e-5)


@pytest.mark.parametrize("key", ALL)
def test_unfitted_predict_is_a_clear_error(key: str) -> None:
    m = make(key)
    with pytest.raises(NotFittedError, match="fit") as info:
        m.predict(np.zeros((2, 1, SIZE, SIZE), "f4"))
    assert isinstance(info.value, sklearn.exceptions.NotFittedError)


def test_training_options_default_as_trainconfig() -> None:
    sig = inspect.signature(Method.__init__).parameters
    for f in fields(TrainConfig):
        assert sig[f.name].default == f.default, f.name


def test_registry_builds_and_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftkit.adapt.job.config import RunConfig
    from shiftkit.adapt.methods import registry
    from shiftkit.datasets.errors import ConfigError

    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))  # undone after the test
    for name in method_names():
        cls = get_method(name)
        assert issubclass(cls, Method) and cls.title, name
    with pytest.raises(KeyError, match="registered methods"):
        get_method("magic")
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig(methods=["source_only", "magic"])

    @register("contract_probe")
    class Probe(DANN):
        pass

    assert "contract_probe" in method_names() and get_method("contract_probe") is Probe
    assert RunConfig(methods=["contract_probe"]).methods == ["contract_probe"]
    from typer.testing import CliRunner

    from shiftkit.adapt.cli import app

    listed = CliRunner().invoke(app, ["methods"])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.output.splitlines()] == list(method_names())
    with pytest.raises(ValueError, match="already registered"):
        register("contract_probe", DANN)
    with pytest.raises(ValueError, match="'dann' is already registered|'dann' is a built-in"):
        register("dann", Probe)
    with pytest.raises(ConfigError):
        Requires(source="none", target="none")


# ---------------------------------------------------------------------------------------------
# Per-sample weights: a zero weight removes a row from the task loss and the domain loss.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adversary", ["grl", "confusion"])
def test_zero_weight_rows_contribute_nothing(adversary: str) -> None:
    """Half of a source batch weighs 0: replacing those rows' images and labels by anything else
    leaves the step's loss, its task and domain parts, and every gradient (encoder, head,
    discriminator) exactly as they were; changing a weighted row does not."""
    from shiftkit.adapt.methods.losses import adversarial_loss, supervised_loss

    rng = np.random.default_rng(0)
    xs = rng.normal(0, 1, (16, 4)).astype("f4")
    ys = (xs[:, 0] > 0).astype(int)
    m = DANN(build_mlp(4, [8], 2), disc_hidden=(8,), adversary=adversary, epochs=1, batch_size=8,
             progress=False).fit(ArrayDataset(xs, ys), ArrayDataset(xs + 1.0))
    w = torch.tensor([1.0, 2.0, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0])

    def step(x_src: np.ndarray, y_src: np.ndarray) -> tuple[dict, dict]:
        for mod in m.modules_.values():
            mod.zero_grad(set_to_none=True)
        src = {"image": torch.from_numpy(x_src), "label": torch.from_numpy(y_src), "weight": w}
        tgt = {"image": torch.from_numpy(xs[8:] + 1.0)}
        loss, logs = m.training_step(src, tgt, 0.7)
        loss.backward()
        grads = {f"{n}.{k}": p.grad.clone() for n, mod in m.modules_.items() for k, p in mod.named_parameters()}
        f = m.model_.encoder(torch.cat([src["image"], tgt["image"]]))
        parts = {"total": loss.detach(), "domain": logs["domain_loss"],
                 "task": supervised_loss(m.model_.head(f[:8]), src, "classification")[0].detach(),
                 "adv": adversarial_loss(m.discriminator, f, 8, 0.7, adversary, weight=w)[0].detach()}
        return parts, grads

    base_parts, base_grads = step(xs[:8], ys[:8])
    x_other, y_other = xs[:8].copy(), ys[:8].copy()
    x_other[4:] = rng.normal(5, 3, (4, 4))  # zero-weight rows: other images, flipped labels
    y_other[4:] = 1 - y_other[4:]
    parts, grads = step(x_other, y_other)
    for k in base_parts:
        torch.testing.assert_close(parts[k], base_parts[k], rtol=0, atol=1e-6, msg=k)
    for k in base_grads:
        torch.testing.assert_close(grads[k], base_grads[k], rtol=0, atol=1e-6, msg=k)
    x_other[0] += 3.0  # a weighted row does count
    parts, _ = step(x_other, y_other)
    assert abs(float(parts["task"] - base_parts["task"])) > 1e-4
    assert abs(float(parts["domain"] - base_parts["domain"])) > 1e-4


def test_unit_weights_equal_no_weights() -> None:
    from shiftkit.adapt.methods.dann import DomainDiscriminator
    from shiftkit.adapt.methods.losses import adversarial_loss, supervised_loss

    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(supervised_loss(logits, {"label": y}, "classification")[0],
                               supervised_loss(logits, {"label": y, "weight": torch.ones(6)}, "classification")[0])
    disc, f = DomainDiscriminator(4, (8,)), torch.randn(8, 4)
    for adversary in ("grl", "confusion"):
        torch.testing.assert_close(adversarial_loss(disc, f, 4, 0.5, adversary)[0],
                                   adversarial_loss(disc, f, 4, 0.5, adversary, weight=torch.ones(4))[0])


def test_dann_defaults_to_confusion_and_warns_on_swapped_domains() -> None:
    m = DANN("tiny", epochs=10)
    assert m.adversary == "confusion"
    swapped = {"epoch": 8, "disc_acc": 0.05, "disc_logit_std": 2.0, "domain_loss": 2.5}
    assert any("swapped" in w for w in m.epoch_warnings(swapped))
    assert m.epoch_warnings({**swapped, "epoch": 2}) == []  # early: still learning
    assert m.epoch_warnings({**swapped, "disc_acc": 0.45}) == []  # lost the game, not swapped
