"""The contract every adaptation method follows.

A method is a scikit-learn style estimator:

* ``__init__`` stores its arguments under the same names and does nothing else: a backbone
  name or a module is kept as given (a module is copied at ``fit``, never trained in place),
  so ``get_params``/``set_params`` and ``sklearn.base.clone`` work on every method;
* ``fit(source, target=None, *, val=None, callback=None)`` validates the parameters, builds
  the model and trains it through the one shared loop (:func:`shiftkit.adapt.training.trainer.train`),
  and returns ``self``;
* fitted state ends in ``_``: ``model_`` (the trained ``nn.Module``), ``history_`` (per-epoch
  dicts), ``warnings_``, ``task_``, ``config_`` (the :class:`TrainConfig` used),
  ``extra_modules_`` (e.g. a discriminator), ``source_adapter_`` (the fitted adapters);
* ``predict_proba(data) -> (N, K)`` (segmentation ``(N, K, H, W)``), ``predict(data)``,
  ``features(data) -> (N, D)``; before ``fit`` they raise :class:`NotFittedError`.

Each method declares once, in its class attribute ``requires``, what data it needs
(:class:`Requires`); ``fit``, the trainer and the pipeline read only that.

Writing a method: subclass :class:`Method`, set ``requires``, store your own arguments in
``__init__`` (pass the rest to ``super().__init__`` through ``**kwargs``), and override
:meth:`Method.training_step` (plus :meth:`Method.extra_modules`, :meth:`Method.param_groups`,
:meth:`Method.lr_factor`, :meth:`Method.epoch_warnings`, :meth:`Method.check_params` when
needed). Register it with :func:`shiftkit.adapt.methods.register`; ``from_config`` builds it
for ``shiftkit run``. See ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shiftkit.adapt.methods.adapters import apply_source_adapters
from shiftkit.adapt.methods.losses import supervised_loss
from shiftkit.adapt.models.backbones import SegModel, as_split_model, build_classifier, build_segmenter
from shiftkit.adapt.training.data import as_dataset, check_compatible
from shiftkit.adapt.training.inference import predict_loader, resolve_device
from shiftkit.adapt.training.train_config import TrainConfig
from shiftkit.adapt.training.trainer import TrainResult, train
from shiftkit.datasets.errors import ConfigError, DataError, ShiftkitError

if TYPE_CHECKING:
    from shiftkit.adapt.methods.build import BuildContext

__all__ = ["Method", "NotFittedError", "Requires", "TargetView", "labelled_count", "supervised_loss"]

_HIDDEN_TARGET_KEYS = ("label", "mask")
_TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


class NotFittedError(ShiftkitError, sklearn.exceptions.NotFittedError):
    """``predict``/``features`` was called before ``fit``."""


@dataclass(frozen=True)
class Requires:
    """What data a method's ``fit`` needs (a class attribute, read by fit, trainer and pipeline).

    Attributes:
        source: ``"labelled"`` (needed), ``"optional"`` (used when given) or ``"none"``
            (source-free: starts from a trained model).
        target: ``"none"``, ``"unlabelled"`` (images only: ``label`` and ``mask`` are hidden
            from the method) or ``"labelled"`` (the method trains on target labels: a
            supervised baseline or an oracle, never an unsupervised adaptation).
        target_batches: whether each training step gets a target batch. ``False`` when the
            target is used outside the steps (AdaBN's statistics pass, a weight estimate).
    """

    source: Literal["labelled", "optional", "none"] = "labelled"
    target: Literal["none", "unlabelled", "labelled"] = "none"
    target_batches: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.source not in ("labelled", "optional", "none"):
            problems.append(f"source must be 'labelled', 'optional' or 'none', got {self.source!r}")
        if self.target not in ("none", "unlabelled", "labelled"):
            problems.append(f"target must be 'none', 'unlabelled' or 'labelled', got {self.target!r}")
        if self.source == "none" and self.target == "none":
            problems.append("a method needs source or target data")
        if problems:
            raise ConfigError("Requires", problems)

    @property
    def steps_on_target(self) -> bool:
        """Whether the trainer draws a target batch for every step."""
        return self.target != "none" and (self.target_batches or self.source == "none")


class TargetView(Dataset):
    """A target dataset seen without its ``label`` and ``mask`` (never read, not even copied).

    Items are new dicts holding every other key of the underlying item.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        return {k: item[k] for k in item.keys() if k not in _HIDDEN_TARGET_KEYS}


def labelled_count(ds: Dataset, task: str) -> int:
    """Number of items carrying a label (classification) or a mask (segmentation)."""
    if task == "segmentation":
        return sum(1 for i in range(len(ds)) if "mask" in ds[i])
    return sum(1 for i in range(len(ds)) if int(ds[i]["label"]) >= 0)


def _short(v: Any) -> str:
    if isinstance(v, nn.Module):
        return f"<{type(v).__name__}>"
    if isinstance(v, np.ndarray | torch.Tensor):
        return f"<{type(v).__name__} {tuple(v.shape)}>"
    return repr(v)


class Method(BaseEstimator):
    """Base class: stores parameters, builds the model in ``fit``, trains, predicts.

    Args:
        model: a backbone name (``"tiny"``, ``"densenet121"``, ``"resnet18"``,
            ``"tiny-unet"``, ``"flexibleunet-resnet34"``, ...), a split-protocol module or an
            ``(encoder, head)`` pair. A module is deep-copied at ``fit``: the fitted network is
            ``model_`` and the module you passed stays as it was.
        num_classes: ``K`` (used when ``model`` is a name).
        in_channels: ``C``; ``None`` = read from the first training image.
        task: ``"classification"`` or ``"segmentation"``; ``None`` = segmentation for
            :class:`SegModel` models and segmenter names.
        source_adapter: a :class:`~shiftkit.adapt.methods.adapters.SourceAdapter` (or a list, applied
            in order) that turns the source set into what the method trains on, e.g.
            ``ImportanceWeighting(ClassifierRatio())`` or ``TargetStyle("fda")``.
        epochs ... sync_batchnorm: the training options, as in :class:`TrainConfig`.
    """

    #: What data ``fit`` needs; the trainer and the pipeline read only this.
    requires: ClassVar[Requires] = Requires()
    #: Display name in reports.
    title: ClassVar[str] = ""
    #: How ``shiftkit run`` starts this method (:data:`shiftkit.adapt.methods.build.RECIPES`): ``None``
    #: (the backbone, ``train``'s options), ``"adapt"`` (a copy of the fitted source-only model
    #: at ``train.lr * lr_mult``), ``"source_free"`` or ``"online"``. The recipe's fields join
    #: the method's config section.
    recipe: ClassVar[str | None] = None
    #: Classes of the same family whose constructor settings the config section also holds
    #: (``"module:Class"``; e.g. the segmentation variant ``from_config`` builds for segmentation).
    settings_also: ClassVar[tuple[str, ...]] = ()
    #: Labelled-target methods only (``requires.target == "labelled"``): the share of the labelled
    #: target training set the efficacy harness gives the method when a cell does not say
    #: (``name[frac=f]``); ``None``: the cell must say.
    labelled_fraction: ClassVar[float | None] = 1.0
    #: Settings worth trying in label-free selection (``auto`` / the harness's ``selected``), each
    #: a dict of this method's settings; ``{}`` = its defaults. Read by
    #: :func:`shiftkit.adapt.harness.candidates.candidate_pool`; a subclass with a setting that matters
    #: lists a small grid here and says in ``selection_grid_provenance`` how it was chosen.
    selection_grid: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    selection_grid_provenance: ClassVar[str] = "the method's defaults only"

    def __init__(
        self,
        model: str | nn.Module | tuple[nn.Module, nn.Module] = "tiny",
        *,
        num_classes: int = 2,
        in_channels: int | None = None,
        task: str | None = None,
        source_adapter: Any = None,
        epochs: int = 10,
        batch_size: int = 32,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        lr_decay: str = "constant",
        warmup: float = 0.0,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        grad_clip: float | None = 5.0,
        amp: bool | None = None,
        channels_last: bool | None = None,
        seed: int = 0,
        device: str | None = None,
        num_workers: int = 0,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        early_stopping: str | None = None,
        early_stopping_mode: str | None = None,
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
        calibrate: bool = False,
        target_metrics: tuple[str, ...] = (),
        oracle: bool = False,
        on_nonfinite: str = "stop",
        steps_per_epoch: int | None = None,
        eval_batch_size: int = 128,
        progress: bool = True,
        sync_batchnorm: bool = False,
    ):
        self.model = model
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.task = task
        self.source_adapter = source_adapter
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.lr_decay = lr_decay
        self.warmup = warmup
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.grad_clip = grad_clip
        self.amp = amp
        self.channels_last = channels_last
        self.seed = seed
        self.device = device
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.early_stopping = early_stopping
        self.early_stopping_mode = early_stopping_mode
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.calibrate = calibrate
        self.target_metrics = target_metrics
        self.oracle = oracle
        self.on_nonfinite = on_nonfinite
        self.steps_per_epoch = steps_per_epoch
        self.eval_batch_size = eval_batch_size
        self.progress = progress
        self.sync_batchnorm = sync_batchnorm

    # ---------------------------------------------------------------- scikit-learn protocol
    @classmethod
    def _get_param_names(cls) -> list[str]:
        # Subclasses pass the base parameters on through **kwargs: the parameters are the
        # union of the named arguments of every __init__ along the MRO.
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass in (BaseEstimator, object):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                names.add(p.name)
        return sorted(names)

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # noqa: N803 - BaseEstimator's signature
        defaults: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            init = klass.__dict__.get("__init__")
            if init is not None and klass not in (BaseEstimator, object):
                defaults.update({p.name: p.default for p in inspect.signature(init).parameters.values()})
        shown = []
        for k, v in self.get_params(deep=False).items():
            d = defaults.get(k, inspect.Parameter.empty)
            same = d is not inspect.Parameter.empty and type(d) is type(v) and not isinstance(v, nn.Module) \
                and _safe_equal(d, v)
            if k == "model" or not same:
                shown.append(f"{k}={_short(v)}")
        text = f"{type(self).__name__}({', '.join(shown)})"
        return text if len(text) <= N_CHAR_MAX else text[: N_CHAR_MAX - 4] + "...)"

    # ---------------------------------------------------------------- building
    @classmethod
    def from_config(cls, context: BuildContext) -> Method:
        """Build this method in ``context``: ``shiftkit run``, ``auto``, the efficacy harness or
        ``Predictor.adapt`` (every caller builds through here).

        ``context`` (:class:`shiftkit.adapt.methods.build.BuildContext`) knows where the method starts
        and with which training options (the caller's recipe) and which settings it was given
        (its config section, generated from this constructor, or ``name[key=value]``);
        ``context.make(cls)`` puts them together. Override only to build another class of
        the family or to fix an argument from the context (e.g. the segmentation variant).
        """
        return context.make(cls)

    def check_params(self) -> list[str]:
        """Problems with this method's own parameters (override; called by ``fit``)."""
        return []

    def default_source_adapter(self) -> Any:
        """The adapter ``fit`` uses when ``source_adapter`` is ``None`` (none by default)."""
        return None

    def _validate_params(self) -> None:
        problems = []
        if not isinstance(self.model, (str, nn.Module, tuple, list)):
            problems.append(f"model: expected a backbone name or an nn.Module, got {type(self.model).__name__}")
        if self.task not in (None, "classification", "segmentation"):
            problems.append(f"task must be 'classification', 'segmentation' or None, got {self.task!r}")
        problems += self.check_params()
        if problems:
            raise ConfigError(type(self).__name__, problems)

    def _train_config(self) -> TrainConfig:
        cfg = TrainConfig(**{k: getattr(self, k) for k in _TRAIN_FIELDS})
        if isinstance(cfg.target_metrics, list):
            cfg.target_metrics = tuple(cfg.target_metrics)
        try:
            cfg.validate()
        except ConfigError as exc:
            raise ConfigError(type(self).__name__, exc.problems) from None
        return cfg

    def _resolve_task(self) -> str:
        if self.task is not None:
            return self.task
        if isinstance(self.model, SegModel):
            return "segmentation"
        if isinstance(self.model, str) and ("unet" in self.model.lower() or "segresnet" in self.model.lower()
                                            or self.model.lower().startswith("smp:")):
            return "segmentation"
        return "classification"

    def _build_model(self, data: Dataset) -> nn.Module:
        if isinstance(self.model, str):
            c = self.in_channels or int(data[0]["image"].shape[0])
            # Model init follows the method's seed so repeated fits are reproducible.
            torch.manual_seed(self.seed)
            build = build_segmenter if self.task_ == "segmentation" else build_classifier
            return build(self.model, c, self.num_classes)
        # A copy: fit never changes a parameter (the scikit-learn rule), and a module used as
        # the starting point of several methods stays what it was.
        return as_split_model(copy.deepcopy(self.model))

    def _check_data(self, source: Any, target: Any, val: Any) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
        req, name = self.requires, type(self).__name__
        if req.source == "labelled" and source is None:
            raise ConfigError(name, ["fit() needs a labelled source dataset"])
        if req.target != "none" and target is None:
            article = "an" if req.target == "unlabelled" else "a"
            raise ConfigError(name, [f"fit() needs {article} {req.target} target dataset"])
        source = as_dataset(source, name="source") if source is not None and req.source != "none" else None
        val = as_dataset(val, name="val") if val is not None else None
        if target is not None:
            target = as_dataset(target, name="target")
            if req.target == "labelled":
                n = labelled_count(target, self.task_)
                if n < len(target):
                    raise DataError(f"{name}: {len(target) - n} of {len(target)} target items have no label/mask; "
                                    "this method trains on target labels: pass only the labelled target subset")
            else:
                target = TargetView(target)  # the method cannot read what it is not given
        check_compatible(source, target, val)  # channels and size agree, before any model is built
        return source, target, val

    # ---------------------------------------------------------------- training hooks
    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules besides the model that train with it (e.g. a domain discriminator).

        Called by ``fit`` after ``model_`` is built; seed your own initialisation here.
        """
        return {}

    @property
    def modules_(self) -> dict[str, nn.Module]:
        """Every trained module: ``{"model": model_, **extra_modules_}`` (the trainer's view)."""
        return {"model": self.model_, **self.extra_modules_}

    def param_groups(self, lr: float) -> list[dict]:
        params = [p for m in self.modules_.values() for p in m.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]

    def lr_factor(self, p: float) -> float:
        return 1.0

    def training_step(self, source: dict | None, target: dict | None, p: float) -> tuple[torch.Tensor, dict]:
        """Loss of one step and its logs.

        Args:
            source: a source batch (``image`` ``(B, C, H, W)``, ``label`` ``(B,)`` or ``mask``
                ``(B, H, W)``, and ``weight`` ``(B,)`` when a source adapter weights samples);
                ``None`` for source-free methods.
            target: a target batch when ``requires.steps_on_target`` (images only unless the
                method declares a labelled target), else ``None``.
            p: training progress in [0, 1].
        """
        raise NotImplementedError

    def epoch_warnings(self, epoch_logs: dict[str, float]) -> list[str]:
        return []

    # ---------------------------------------------------------------- fit
    def fit(self, source: Dataset | None = None, target: Dataset | None = None, *, val: Dataset | None = None,
            callback: Any = None) -> Method:
        """Train on what ``requires`` declares; returns ``self``.

        Args:
            source: labelled source dataset (dict items, or images ``(N, C, H, W)``).
            target: target dataset; unless the method declares a labelled target, its
                ``label`` and ``mask`` are hidden from the method (never read).
            val: labelled source-domain validation data (``val_*`` history keys).
            callback: ``callback(epoch, model) -> dict | None`` adds metrics to the history
                (see :func:`shiftkit.adapt.training.trainer.train`).
        """
        self._validate_params()
        self.task_ = self._resolve_task()
        source, target, val = self._check_data(source, target, val)
        self.config_ = self._train_config()
        if source is not None:
            adapter = self.source_adapter if self.source_adapter is not None else self.default_source_adapter()
            images_only = target if target is None or isinstance(target, TargetView) else TargetView(target)
            source, self.source_adapter_ = apply_source_adapters(  # adapters never see target labels
                adapter, source, images_only, seed=self.seed, owner=type(self).__name__)
        else:
            self.source_adapter_ = []
        self.model_ = self._build_model(source if source is not None else target)
        self.extra_modules_ = self.extra_modules()
        # Kept (by reference) so save_model can summarise the data and store target statistics.
        self.fit_source_, self.fit_target_ = source, target
        self._fit_model(source, target, val, callback)
        return self

    def setup(self, example: Any) -> Method:
        """Validate the parameters and build ``model_`` and ``extra_modules_`` without training.

        For benchmarks and hand-written loops around :meth:`training_step`. ``example``: a
        dataset (or a list of items) whose first ``image`` ``(C, H, W)`` sets the input width.
        Returns ``self``; :meth:`fit` does the same before training.
        """
        self._validate_params()
        self.task_ = self._resolve_task()
        self.config_ = self._train_config()
        self.source_adapter_ = []
        self.model_ = self._build_model(example)
        self.extra_modules_ = self.extra_modules()
        return self

    def _fit_model(self, source: Dataset | None, target: Dataset | None, val: Dataset | None, callback: Any) -> None:
        """Run the shared loop (override to add passes before or after it, as AdaBN does)."""
        self._set_result(train(self, source, target, val, self.config_, callback=callback))

    def _set_result(self, result: TrainResult | None) -> None:
        self.result_ = result
        self.history_ = result.history if result is not None else []
        self.warnings_ = result.warnings if result is not None else []

    # ---------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() before predicting")

    def _predict(self, data: Any, want: tuple[str, ...], batch_size: int | None) -> dict[str, np.ndarray]:
        self._check_fitted()
        ds = as_dataset(data)
        device = resolve_device(self.device)
        self.model_.to(device)
        loader = DataLoader(ds, batch_size=batch_size or self.eval_batch_size, shuffle=False)
        amp = self.amp if self.amp is not None else device.type == "cuda"
        return predict_loader(self.model_, loader, device, amp=amp, want=want)

    def predict_proba(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities: ``(N, K)`` float32, or ``(N, K, H, W)`` for segmentation.

        ``data``: a dict-yielding Dataset or images ``(N, C, H, W)`` (array or tensor).
        """
        return self._predict(data, ("proba",), batch_size)["proba"]

    def predict(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Class indices ``(N,)`` (segmentation: ``(N, H, W)``), int64."""
        return self.predict_proba(data, batch_size=batch_size).argmax(1)

    def predict_proba_and_features(self, data: Any, *, batch_size: int | None = None
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and encoder features from one pass: ``((N, K[, H, W]), (N, D))``."""
        out = self._predict(data, ("proba", "features"), batch_size)
        return out["proba"], out["features"]

    def features(self, data: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Encoder features ``(N, D)`` float32 (segmenters: pooled bottleneck)."""
        return self._predict(data, ("features",), batch_size)["features"]


def _safe_equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and tensors: ambiguous truth value
        return False
