"""The one training loop every method runs through.

What it does, so methods do not repeat it: optimiser (AdamW or SGD) with a per-step
learning-rate schedule, bf16 autocast and channels_last on CUDA, gradient clipping, a
non-finite guard, per-epoch validation (loss, accuracy, AUROC; pixel accuracy and mIoU for
segmentation), label-free target metrics, an optional per-epoch callback, early stopping,
an atomic checkpoint every epoch and exact resume, deterministic seeding, tqdm progress and
DistributedDataParallel under ``torchrun``.

A method plugs in through :class:`TrainTask` (see ``methods/base.py``): which modules train,
how one step computes its loss from a source batch and a target batch, and the schedule.

Determinism and resume: every epoch re-seeds torch, numpy and the data order from
``(seed, epoch)``, so an epoch's result depends only on the state at its start. The
checkpoint written at the end of an epoch is therefore enough to resume a killed run and
reproduce the uninterrupted run exactly on CPU.

Target labels: the loop never reads ``label`` from the target dataset. Early stopping may use
``val_*`` (labelled *source* validation) or label-free target metrics; any other
``target_*`` key (e.g. target accuracy reported by a callback) can only select a model when
``oracle=True`` is passed, and the history then says so.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from shiftkit.datasets.errors import ConfigError, DataError, ShiftkitError

from . import distributed as dist_utils

__all__ = [
    "LABEL_FREE_TARGET_METRICS",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "evaluate",
    "predict_loader",
    "train",
]

log = logging.getLogger("shiftkit.adapt")

#: Target metrics that need no target labels; only these (and ``val_*``) may drive early
#: stopping unless ``oracle=True``.
LABEL_FREE_TARGET_METRICS = frozenset(
    {
        "target_entropy",
        "target_confidence",
        "target_snd",
        "target_dev_risk",
        "target_iwv_loss",
        "target_mmd2",
        "target_pad",
    }
)
_BUILTIN_TARGET_METRICS = ("entropy", "confidence")
_MINIMISE_HINTS = ("loss", "entropy", "risk", "mmd", "pad", "error", "ece", "distance")


class NonFiniteLossError(ShiftkitError, FloatingPointError):
    """Training produced NaN/Inf; the last good checkpoint (if any) is left untouched."""


@dataclass
class TrainConfig:
    """Settings of :func:`train` (all methods accept them as keyword arguments).

    Attributes:
        epochs: passes over the source data.
        batch_size: *global* batch size per domain (source batch and target batch each);
            under torchrun every rank takes ``batch_size // world_size`` of each global batch,
            so results do not depend on the number of processes.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum ``momentum``, Nesterov off).
        lr: base learning rate; methods may scale it per parameter group and per step.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        grad_clip: max global gradient norm, ``None`` to disable.
        amp: bf16 autocast; ``None`` = on when the device is CUDA.
        channels_last: NHWC memory format; ``None`` = on when the device is CUDA.
        seed: seeds model init (where the method builds the model), data order and dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None`` = CUDA when available (the
            local rank's GPU under torchrun).
        num_workers: DataLoader workers.
        checkpoint_dir: where ``last.pt`` is written atomically after each epoch; ``None``
            disables checkpointing.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        early_stopping: history key to monitor (e.g. ``"val_loss"``, ``"val_auroc"``,
            ``"target_entropy"``); ``None`` trains all epochs and keeps the last weights.
        early_stopping_mode: ``"min"``/``"max"``; ``None`` infers from the name.
        patience: epochs without improvement before stopping.
        min_delta: improvement smaller than this does not count.
        restore_best: load the best epoch's weights at the end (when monitoring).
        target_metrics: label-free target metrics computed each epoch on the target data:
            ``"entropy"`` (mean normalised prediction entropy) and ``"confidence"`` (mean
            max probability); recorded as ``target_<name>``.
        oracle: allow metrics computed with target labels to select the model. Off by
            default; an oracle run is an upper bound, not a deployable result.
        on_nonfinite: ``"stop"`` raises :class:`NonFiniteLossError`; ``"skip"`` drops the
            batch (counted in history ``skipped_batches``); 10 skips in a row stop anyway.
        steps_per_epoch: optimisation steps per epoch; ``None`` = one pass over the source.
        eval_batch_size: batch size of validation and prediction passes.
        progress: tqdm progress bars.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    grad_clip: float | None = 5.0
    amp: bool | None = None
    channels_last: bool | None = None
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    checkpoint_dir: str | None = None
    resume: bool = True
    early_stopping: str | None = None
    early_stopping_mode: str | None = None
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True
    target_metrics: tuple[str, ...] = ()
    oracle: bool = False
    on_nonfinite: str = "stop"
    steps_per_epoch: int | None = None
    eval_batch_size: int = 128
    progress: bool = True
    sync_batchnorm: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every invalid setting."""
        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be a positive int, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            problems.append(f"on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.early_stopping_mode not in (None, "min", "max"):
            problems.append(f"early_stopping_mode must be 'min', 'max' or None, got {self.early_stopping_mode!r}")
        for m in self.target_metrics:
            if m not in _BUILTIN_TARGET_METRICS:
                problems.append(f"target_metrics: unknown {m!r}; built-in label-free ones are {_BUILTIN_TARGET_METRICS}")
        if self.early_stopping is not None:
            key = self.early_stopping
            if key.startswith("target_") and key not in LABEL_FREE_TARGET_METRICS and not self.oracle:
                problems.append(
                    f"early_stopping={key!r} would let target labels choose the model; use a val_* "
                    f"metric or a label-free one ({sorted(LABEL_FREE_TARGET_METRICS)}), or pass "
                    "oracle=True for an explicitly labelled oracle run"
                )
            if key.startswith("target_") and key[len("target_") :] in _BUILTIN_TARGET_METRICS:
                if key[len("target_") :] not in self.target_metrics:
                    self.target_metrics = tuple(self.target_metrics) + (key[len("target_") :],)
        if problems:
            raise ConfigError("TrainConfig", problems)

    def monitor_mode(self) -> str:
        if self.early_stopping_mode:
            return self.early_stopping_mode
        key = (self.early_stopping or "").lower()
        return "min" if any(h in key for h in _MINIMISE_HINTS) else "max"


@dataclass
class TrainResult:
    """What :func:`train` returns. ``history`` is one dict per finished epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    warnings: list[str] = field(default_factory=list)
    resumed_from_epoch: int = 0


class TrainTask(Protocol):
    """What a method gives the loop (:class:`shiftkit.adapt.methods.Method` implements it).

    ``modules_``: name -> module; all are moved to the device, trained and checkpointed.
    ``model_``: the predictor (``modules_["model"]``), evaluated each epoch.
    ``task_``: ``"classification"`` or ``"segmentation"``.
    ``requires``: the method's :class:`~shiftkit.adapt.methods.Requires`: which dataset drives
    the epochs (the source, or the target when the source is ``"optional"``/``"none"``) and
    whether every step gets a target batch.
    """

    modules_: dict[str, nn.Module]
    task_: str
    requires: Any

    @property
    def model_(self) -> nn.Module: ...

    def param_groups(self, lr: float) -> list[dict]: ...

    def lr_factor(self, p: float) -> float: ...

    def training_step(
        self, source: dict | None, target: dict | None, p: float
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]: ...

    def epoch_warnings(self, epoch_logs: dict[str, float]) -> list[str]: ...


# --------------------------------------------------------------------------------------
# Data order: global batches, each rank takes its slice
# --------------------------------------------------------------------------------------


class _GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of each global batch of a seeded permutation.

    One process with batch ``B`` and ``W`` processes with ``B / W`` each see exactly the
    same global batches, which is what makes DDP results match single-process ones.
    ``cycle=True`` draws a fresh permutation when the data run out (for the target stream).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, *, drop_last: bool, cycle: bool = False,
                 n_batches: int | None = None):
        if batch_size % world:
            raise ConfigError("TrainConfig", [f"batch_size {batch_size} is not divisible by world size {world}"])
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.local = rank, world, batch_size // world
        self.drop_last = drop_last and n >= batch_size
        self.cycle = cycle
        self.n_batches = n_batches

    def __len__(self) -> int:
        if self.n_batches is not None:
            return self.n_batches
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        produced = 0
        while True:
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.n < self.batch_size:  # tiny data: repeat to fill one global batch
                reps = math.ceil(self.batch_size / self.n)
                perm = (perm * reps)[: self.batch_size]
            stop = len(perm) - (len(perm) % self.batch_size) if self.drop_last else len(perm)
            for start in range(0, stop, self.batch_size):
                batch = perm[start : start + self.batch_size]
                if self.world > 1:
                    if len(batch) < self.batch_size:  # ragged last batch: pad to split evenly
                        batch = (batch * self.batch_size)[: self.batch_size]
                    batch = batch[self.rank * self.local : (self.rank + 1) * self.local]
                yield batch
                produced += 1
                if self.n_batches is not None and produced >= self.n_batches:
                    return
            if not self.cycle and self.n_batches is None:
                return


def _seed_worker(_worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy/random used by transforms
    # (albumentations, MONAI) must follow it, or augmentation differs between runs.
    import random

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63 - 1)


def _loader(ds: Dataset, sampler: Sampler, num_workers: int, seed: int, device: torch.device) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------
# Device handling
# --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> this rank's CUDA device when available, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_utils.local_rank() if dist_utils.is_distributed() else torch.cuda.current_device())
    return torch.device("cpu")


def batch_to(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """Move tensor entries to ``device``; 4-D images get channels_last when asked."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image" and channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def autocast_ctx(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaler needed for bf16); a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    want: tuple[str, ...] = ("proba",),
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` in eval mode over ``loader``.

    Returns arrays for the requested keys: ``proba`` ``(N, K)`` or ``(N, K, H, W)`` float32,
    ``features`` ``(N, D)`` (via ``model.features`` or ``model.encoder``), ``label`` ``(N,)``,
    ``mask`` ``(N, H, W)``.
    """
    from shiftkit.datasets.progress import progress_bar

    was = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {k: [] for k in want}
    try:
        for batch in progress_bar(loader, desc="predict", enabled=progress):
            b = batch_to(batch, device, channels_last)
            x = b["image"]
            with autocast_ctx(device, amp):
                if "features" in want:
                    if hasattr(model, "forward_with_features"):
                        logits, fmap = model.forward_with_features(x)
                        feats = fmap.mean(dim=tuple(range(2, fmap.dim())))
                    else:
                        feats = model.encoder(x)
                        logits = model.head(feats)
                    out["features"].append(feats.float().cpu().numpy())
                else:
                    logits = model(x)
            if "proba" in want:
                out["proba"].append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            if "logits" in want:
                out["logits"].append(logits.float().cpu().numpy())
            for k in ("label", "mask"):
                if k in want:
                    out[k].append(batch[k].numpy())
    finally:
        model.train(was)
    return {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in out.items()}


def _auroc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    try:
        if proba.shape[1] == 2:
            return float(roc_auc_score(y, proba[:, 1]))
        if len(present) < proba.shape[1]:
            return float("nan")
        return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    except ValueError:
        return float("nan")


def miou(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int = -1) -> float:
    """Mean IoU over classes present in ``y_true`` or ``y_pred`` (pixels ``ignore_index`` skipped)."""
    valid = y_true != ignore_index
    t = y_true[valid].astype(np.int64)
    p = y_pred[valid].astype(np.int64)
    conf = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    task: str = "classification",
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    amp: bool = False,
    channels_last: bool = False,
    prefix: str = "val_",
) -> dict[str, float]:
    """Labelled metrics on ``data``: ``loss``, ``acc``, ``auroc`` (classification) or
    ``loss``, ``acc`` (pixel accuracy), ``miou`` (segmentation), keys prefixed by ``prefix``."""
    device = torch.device(device)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    want = ("proba", "mask") if task == "segmentation" else ("proba", "label")
    res = predict_loader(model, loader, device, amp=amp, channels_last=channels_last, want=want)
    proba = np.clip(res["proba"], 1e-12, 1.0)
    if task == "segmentation":
        y = res["mask"]
        valid = y >= 0
        yv = np.where(valid, y, 0)
        lp = np.take_along_axis(np.log(proba), yv[:, None], axis=1)[:, 0]
        pred = proba.argmax(1)
        return {
            f"{prefix}loss": float(-(lp[valid]).mean()),
            f"{prefix}acc": float((pred[valid] == y[valid]).mean()),
            f"{prefix}miou": miou(y, pred, proba.shape[1]),
        }
    y = res["label"].astype(np.int64)
    valid = y >= 0
    if not valid.any():
        raise ConfigError("evaluate", [f"{prefix.rstrip('_')} data has no labels (all label == -1)"])
    y, proba = y[valid], proba[valid]
    return {
        f"{prefix}loss": float(-np.log(proba[np.arange(len(y)), y]).mean()),
        f"{prefix}acc": float((proba.argmax(1) == y).mean()),
        f"{prefix}auroc": _auroc(y, proba),
    }


def label_free_metrics(
    model: nn.Module, data: Dataset, names: tuple[str, ...], *, device: torch.device, batch_size: int, amp: bool,
    channels_last: bool,
) -> dict[str, float]:
    """Target metrics computed from predictions only (labels are never read)."""
    if not names:
        return {}
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    proba = predict_loader(model, loader, device, amp=amp, channels_last=channels_last)["proba"]
    k = proba.shape[1]
    p = np.clip(proba, 1e-12, 1.0)
    out = {}
    if "entropy" in names:
        ent = -(p * np.log(p)).sum(1) / math.log(k)
        out["target_entropy"] = float(ent.mean())
    if "confidence" in names:
        out["target_confidence"] = float(proba.max(1).mean())
    return out


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _state_dicts(modules: dict[str, nn.Module]) -> dict[str, dict]:
    return {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def _fingerprint(cfg: TrainConfig, task: Any) -> dict:
    keep = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "grad_clip", "seed",
            "early_stopping", "patience", "steps_per_epoch")
    d = {k: getattr(cfg, k) for k in keep}
    d["method"] = type(task).__name__
    return d


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`train` without unpickling code (``weights_only``).

    Raises:
        DataError: the file is missing, corrupt, or holds pickled objects other than tensors
            and plain containers (refused before any of its code could run).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, RuntimeError for corrupt zips
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{path}: refused as a training checkpoint ({type(exc).__name__}: {first}); "
                        "checkpoints are loaded with weights_only=True and never run code") from None


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


class _StepModule(nn.Module):
    """Holds every trainable module so one DDP wrapper syncs all their gradients."""

    def __init__(self, task: Any):
        super().__init__()
        self.mods = nn.ModuleDict(task.modules_)
        self._task = task

    def forward(self, source: dict | None, target: dict | None, p: float):  # type: ignore[override]
        return self._task.training_step(source, target, p)


def _streams(task: Any, source: Dataset | None, target: Dataset | None) -> tuple[str, str | None]:
    """Which dataset drives the epochs and which one (if any) is cycled beside it.

    Read from ``task.requires`` alone: a method that needs a labelled source iterates the
    source (plus target batches when ``steps_on_target``); one whose source is optional or
    absent iterates the target (plus source batches when a source is passed).
    """
    req = task.requires
    name = type(task).__name__
    if req.source == "labelled":
        if source is None:
            raise ConfigError("train", [f"{name} needs a labelled source dataset"])
        if req.steps_on_target and target is None:
            raise ConfigError("train", [f"{name} needs an (unlabelled) target dataset"])
        return "source", ("target" if req.steps_on_target else None)
    if target is None:
        raise ConfigError("train", [f"{name} trains on the target: pass a target dataset"])
    return "target", ("source" if source is not None else None)


def _to_float(v: Any) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def train(
    task: TrainTask,
    source: Dataset,
    target: Dataset | None = None,
    val: Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    callback: Callable[[int, nn.Module], dict[str, float] | None] | None = None,
) -> TrainResult:
    """Train ``task`` on ``source`` (+ unlabelled ``target``), validating on ``val``.

    Args:
        task: a method implementing :class:`TrainTask`.
        source: labelled dataset yielding ``{"image", "label" | "mask", ...}``.
        target: target dataset; which of the two drives the epochs and whether steps get
            target batches follows ``task.requires`` (see :func:`_streams`). Also needed by
            ``config.target_metrics``.
        val: labelled source-domain validation set (``val_*`` metrics).
        config: :class:`TrainConfig`.
        callback: ``callback(epoch, model) -> dict | None`` called after each epoch on rank 0
            (model in eval mode); returned numbers are added to that epoch's history. Keys
            computed with target labels must start with ``target_`` and can only drive early
            stopping under ``oracle=True``.

    Returns:
        :class:`TrainResult`; ``history[i]`` has ``epoch``, ``train_loss``, ``train_acc``,
        ``lr``, method logs (e.g. ``domain_loss``, ``disc_acc``), ``val_*``, ``target_*``,
        ``skipped_batches`` and ``warnings`` (list of str).

    Raises:
        NonFiniteLossError: NaN/Inf loss or gradient with ``on_nonfinite="stop"``; the
            checkpoint of the last finished epoch stays on disk.
    """
    from shiftkit.datasets.progress import progress_bar

    cfg = config or TrainConfig()
    cfg.validate()
    driver_name, other_name = _streams(task, source, target)
    data = {"source": source, "target": target}
    driver, other = data[driver_name], (data[other_name] if other_name else None)
    if cfg.target_metrics and target is None:
        raise ConfigError("train", ["target_metrics were requested but no target dataset was given"])
    if cfg.early_stopping and cfg.early_stopping.startswith("val_") and val is None:
        raise ConfigError("train", [f"early_stopping={cfg.early_stopping!r} needs a val dataset"])

    dist_utils.init_from_env()  # no-op unless launched by torchrun with WORLD_SIZE > 1
    device = resolve_device(cfg.device)
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    rank, world = dist_utils.rank(), dist_utils.world_size()
    is_main = rank == 0

    for m in task.modules_.values():
        m.to(device)
        if channels_last:
            m.to(memory_format=torch.channels_last)
    if world > 1 and cfg.sync_batchnorm and device.type == "cuda":
        for m in task.modules_.values():
            nn.SyncBatchNorm.convert_sync_batchnorm(m)  # swaps the BatchNorm children in place

    groups = task.param_groups(cfg.lr)
    for g in groups:
        g.setdefault("base_lr", g.get("lr", cfg.lr))
        g["lr"] = g["base_lr"]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    step_module: nn.Module = _StepModule(task)
    if world > 1:
        step_module = dist_utils.wrap_ddp(step_module, device)

    n_src = len(driver)
    steps = cfg.steps_per_epoch or (
        n_src // cfg.batch_size if n_src >= cfg.batch_size else 1
    )
    total_steps = max(1, steps * cfg.epochs)

    ckpt_path = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir else None
    fingerprint = _fingerprint(cfg, task)
    history: list[dict[str, Any]] = []
    best_value: float | None = None
    best_epoch: int | None = None
    best_state: dict | None = None
    bad_epochs = 0
    start_epoch = 0
    stopped_early = False
    all_warnings: list[str] = []

    if ckpt_path is not None and cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck.get("fingerprint") != fingerprint:
            raise ConfigError(
                str(ckpt_path),
                [
                    "checkpoint was written by a different configuration: "
                    f"{ck.get('fingerprint')} != {fingerprint}; delete it or use another checkpoint_dir"
                ],
            )
        for name, m in task.modules_.items():
            m.load_state_dict(ck["modules"][name])
        opt.load_state_dict(ck["optimizer"])
        history = list(ck["history"])
        best_value, best_epoch, bad_epochs = ck["best_value"], ck["best_epoch"], ck["bad_epochs"]
        best_state = ck.get("best_state")
        stopped_early = bool(ck.get("stopped_early", False))
        start_epoch = int(ck["epoch"])
        for h in history:
            all_warnings.extend(h.get("warnings", []))
        if is_main:
            log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    mode = cfg.monitor_mode()
    sign = -1.0 if mode == "min" else 1.0
    consecutive_skips = 0

    # A bar on a terminal; in a log, one line per epoch and no step bars (datasets/progress.py).
    epoch_bar = progress_bar(
        range(start_epoch, cfg.epochs), desc=f"{type(task).__name__} epoch", enabled=cfg.progress and is_main,
        initial=start_epoch, total=cfg.epochs, leave=True, lines=True,
    )
    for epoch in epoch_bar:
        if stopped_early:
            break
        # Everything random in this epoch follows from (seed, epoch): exact resume.
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, 0))
        np.random.seed(_epoch_seed(cfg.seed, epoch, 1) % 2**32)
        src_sampler = _GlobalBatchSampler(n_src, cfg.batch_size, _epoch_seed(cfg.seed, epoch, 2), rank, world,
                                          drop_last=True, cycle=True, n_batches=steps)
        src_iter = iter(_loader(driver, src_sampler, cfg.num_workers, _epoch_seed(cfg.seed, epoch, 3), device))
        tgt_iter = None
        if other is not None:
            tgt_sampler = _GlobalBatchSampler(len(other), cfg.batch_size, _epoch_seed(cfg.seed, epoch, 4), rank, world,
                                              drop_last=True, cycle=True, n_batches=steps)
            tgt_iter = iter(_loader(other, tgt_sampler, cfg.num_workers, _epoch_seed(cfg.seed, epoch, 5), device))

        for m in task.modules_.values():
            m.train()
        sums: dict[str, float] = {}
        count = 0
        skipped = 0
        epoch_warnings: list[str] = []
        step_bar = progress_bar(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                                enabled=cfg.progress and is_main)
        for step in step_bar:
            global_step = epoch * steps + step
            p = global_step / total_steps
            factor = task.lr_factor(p)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            db = batch_to(next(src_iter), device, channels_last)
            ob = batch_to(next(tgt_iter), device, channels_last) if tgt_iter is not None else None
            sb, tb = (db, ob) if driver_name == "source" else (ob, db)
            opt.zero_grad(set_to_none=True)
            with autocast_ctx(device, amp):
                loss, logs = step_module(sb, tb, p)
            loss_value = _to_float(loss)
            bad = not math.isfinite(loss_value)
            if not bad:
                loss.backward()
                params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
                # clip_grad_norm_ with an infinite bound only measures: the norm doubles as
                # the non-finite-gradient check.
                max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
                gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
                bad = not math.isfinite(float(gnorm))
            if world > 1:
                bad = dist_utils.any_true(bad, device)
            if bad:
                where = f"epoch {epoch + 1}, step {step + 1}"
                kept = f"; last good checkpoint kept at {ckpt_path}" if ckpt_path and ckpt_path.exists() else ""
                consecutive_skips += 1
                if cfg.on_nonfinite == "stop" or consecutive_skips >= 10:
                    opt.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at {where} (check the batch for NaN/Inf pixels or "
                        f"lower the learning rate){kept}"
                    )
                skipped += 1
                opt.zero_grad(set_to_none=True)
                msg = f"skipped batch with non-finite loss/gradient at {where}"
                if is_main:
                    log.warning(msg)
                continue
            consecutive_skips = 0
            opt.step()
            n = int(db["image"].shape[0])
            count += n
            sums["train_loss"] = sums.get("train_loss", 0.0) + loss_value * n
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + _to_float(v) * n
            if step % 10 == 0:
                step_bar.set_postfix(loss=f"{loss_value:.4f}")
        step_bar.close()

        if world > 1:
            sums, count = dist_utils.reduce_sums(sums, count, device)
            dist_utils.broadcast_buffers(task.modules_, device)
        rec: dict[str, Any] = {"epoch": epoch + 1}
        for k, v in sums.items():
            rec[k] = v / max(count, 1)
        rec.setdefault("train_loss", float("nan"))
        rec.setdefault("train_acc", float("nan"))
        rec["lr"] = opt.param_groups[0]["lr"]
        rec["skipped_batches"] = skipped
        if skipped:
            epoch_warnings.append(f"epoch {epoch + 1}: skipped {skipped} batch(es) with non-finite loss")
        if count == 0:
            raise NonFiniteLossError(f"epoch {epoch + 1}: every batch was non-finite; stopping")
        epoch_warnings.extend(task.epoch_warnings({k: v for k, v in rec.items() if isinstance(v, (int, float))}))

        model = task.model_
        if val is not None:
            rec.update(evaluate(model, val, task=task.task_, device=device, batch_size=cfg.eval_batch_size,
                                amp=amp, channels_last=channels_last))
        if cfg.target_metrics:
            rec.update(label_free_metrics(model, target, tuple(cfg.target_metrics), device=device,
                                          batch_size=cfg.eval_batch_size, amp=amp, channels_last=channels_last))
        if callback is not None:
            extra = None
            if is_main:
                was = model.training
                model.eval()
                try:
                    extra = callback(epoch + 1, model)
                finally:
                    model.train(was)
            if world > 1:
                extra = dist_utils.broadcast_object(extra)
            if extra:
                rec.update({k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in extra.items()})
        if cfg.oracle:
            rec["oracle"] = True

        if cfg.early_stopping:
            if cfg.early_stopping not in rec:
                raise ConfigError("train", [f"early_stopping metric {cfg.early_stopping!r} is not in the "
                                            f"history (have {sorted(rec)})"])
            value = float(rec[cfg.early_stopping])
            improved = math.isfinite(value) and (
                best_value is None or sign * (value - best_value) > cfg.min_delta
            )
            if improved:
                best_value, best_epoch, bad_epochs = value, epoch + 1, 0
                best_state = _state_dicts(task.modules_) if cfg.restore_best else None
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    stopped_early = True
        for w in epoch_warnings:
            if is_main:
                log.warning(w)
                warnings.warn(w, RuntimeWarning, stacklevel=2)
        rec["warnings"] = epoch_warnings
        all_warnings.extend(epoch_warnings)
        history.append(rec)
        epoch_bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("train_loss", "val_loss") if k in rec})

        if ckpt_path is not None and is_main:
            _atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "modules": _state_dicts(task.modules_),
                    "optimizer": opt.state_dict(),
                    "history": history,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_state": best_state,
                    "stopped_early": stopped_early,
                    "fingerprint": fingerprint,
                    "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                },
                ckpt_path,
            )
        if world > 1:
            dist_utils.barrier()
    epoch_bar.close()

    if cfg.early_stopping and cfg.restore_best and best_state is not None:
        for name, m in task.modules_.items():
            m.load_state_dict(best_state[name])
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        warnings=all_warnings,
        resumed_from_epoch=start_epoch,
    )
