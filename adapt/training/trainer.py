"""The one training loop every method runs through.

What it does, so methods do not repeat it: optimiser (AdamW or SGD) with a per-step
learning-rate schedule, bf16 autocast and channels_last on CUDA, gradient clipping, a
non-finite guard, per-epoch validation (loss, accuracy, AUROC; pixel accuracy and mIoU for
segmentation), label-free target metrics, an optional per-epoch callback, early stopping,
an atomic checkpoint every epoch and exact resume, deterministic seeding, tqdm progress and
DistributedDataParallel under ``torchrun``.

Its parts: :mod:`.train_config` (``TrainConfig``), :mod:`.sampling` (seeded global batches),
:mod:`.checkpoint` (atomic checkpoints, safe loading), :mod:`.inference` (devices, prediction
passes, validation metrics). A method plugs in through :class:`TrainTask` (see ``methods/base.py``): which modules train,
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

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from shiftkit.adapt.training import distributed as dist_utils
from shiftkit.adapt.training.checkpoint import fingerprint, load_checkpoint, save_checkpoint, state_dicts
from shiftkit.adapt.training.inference import (
    autocast_ctx,
    batch_to,
    evaluate,
    label_free_metrics,
    predict_loader,
    resolve_device,
)
from shiftkit.adapt.training.sampling import GlobalBatchSampler, epoch_seed, seeded_loader
from shiftkit.adapt.training.schedules import lr_schedule_factor
from shiftkit.adapt.training.train_config import LABEL_FREE_TARGET_METRICS, TrainConfig
from shiftkit.datasets.errors import ConfigError, ShiftkitError

# The loop lives here; its parts live in their own modules (train_config, sampling,
# checkpoint, inference) and are re-exported so `from shiftkit.adapt.training.trainer import ...` keeps working.
__all__ = [
    "LABEL_FREE_TARGET_METRICS",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "autocast_ctx",
    "batch_to",
    "evaluate",
    "load_checkpoint",
    "predict_loader",
    "resolve_device",
    "train",
]

log = logging.getLogger("shiftkit.adapt")

class NonFiniteLossError(ShiftkitError, FloatingPointError):
    """Training produced NaN/Inf; the last good checkpoint (if any) is left untouched."""


@dataclass
class TrainResult:
    """What :func:`train` returns. ``history`` is one dict per finished epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    warnings: list[str] = field(default_factory=list)
    resumed_from_epoch: int = 0
    #: Temperature fitted on validation data and folded into the output layer (``calibrate``).
    temperature: float | None = None


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
    stamp = fingerprint(cfg, task)
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
        if ck.get("fingerprint") != stamp:
            raise ConfigError(
                str(ckpt_path),
                [
                    "checkpoint was written by a different configuration: "
                    f"{ck.get('fingerprint')} != {stamp}; delete it or use another checkpoint_dir"
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
        torch.manual_seed(epoch_seed(cfg.seed, epoch, 0))
        np.random.seed(epoch_seed(cfg.seed, epoch, 1) % 2**32)
        src_sampler = GlobalBatchSampler(n_src, cfg.batch_size, epoch_seed(cfg.seed, epoch, 2), rank, world,
                                          drop_last=True, cycle=True, n_batches=steps)
        src_iter = iter(seeded_loader(driver, src_sampler, cfg.num_workers, epoch_seed(cfg.seed, epoch, 3), device))
        tgt_iter = None
        if other is not None:
            tgt_sampler = GlobalBatchSampler(len(other), cfg.batch_size, epoch_seed(cfg.seed, epoch, 4), rank, world,
                                              drop_last=True, cycle=True, n_batches=steps)
            tgt_iter = iter(seeded_loader(other, tgt_sampler, cfg.num_workers, epoch_seed(cfg.seed, epoch, 5), device))

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
            factor = task.lr_factor(p) * lr_schedule_factor(p, cfg.lr_decay, cfg.warmup)
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
                best_state = state_dicts(task.modules_) if cfg.restore_best else None
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
            save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "modules": state_dicts(task.modules_),
                    "optimizer": opt.state_dict(),
                    "history": history,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_state": best_state,
                    "stopped_early": stopped_early,
                    "fingerprint": stamp,
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
    temperature = None
    if cfg.calibrate and val is not None and task.task_ == "classification":
        temperature = _calibrate(task.model_, val, cfg, device, amp, channels_last)
        if world > 1:
            dist_utils.broadcast_buffers(task.modules_, device)
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        warnings=all_warnings,
        resumed_from_epoch=start_epoch,
        temperature=temperature,
    )


def _calibrate(model: nn.Module, val: Dataset, cfg: TrainConfig, device: torch.device, amp: bool,
               channels_last: bool) -> float | None:
    """Temperature scaling on the labelled validation set, folded into the last linear layer
    (`shiftkit.adapt.training.calibration`); returns the temperature, None when the model has no linear
    output layer (nothing changed)."""
    from torch.utils.data import DataLoader

    from shiftkit.adapt.training.calibration import fit_temperature, fold_temperature, last_linear

    if last_linear(model) is None:
        return None
    loader = DataLoader(val, batch_size=cfg.eval_batch_size, shuffle=False)
    res = predict_loader(model, loader, device, amp=amp, channels_last=channels_last, want=("logits", "label"))
    t = fit_temperature(res["logits"], res["label"])
    return t if fold_temperature(model, t) else None
