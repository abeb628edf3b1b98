"""The settings of the training loop (:class:`TrainConfig`) and which target metrics may select a model."""

from __future__ import annotations

from dataclasses import dataclass

from shiftkit.datasets.errors import ConfigError

__all__ = ["LABEL_FREE_TARGET_METRICS", "TrainConfig"]

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
        lr_decay: ``"constant"`` or ``"cosine"`` (decay to 0 over all steps), multiplied into
            the method's own per-step factor (`shiftkit.adapt.training.schedules.lr_schedule_factor`).
        warmup: fraction of all steps (0..1) of linear learning-rate warm-up.
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
        calibrate: classification with a ``val`` set: after training, fit one temperature on
            the validation logits (temperature scaling, Guo et al. 2017) and fold it into the
            last linear layer, so predicted probabilities are calibrated on the source domain
            (accuracy and AUROC unchanged). `TrainResult.temperature` reports it.
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
    lr_decay: str = "constant"
    warmup: float = 0.0
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
    calibrate: bool = False
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
        if self.lr_decay not in ("constant", "cosine"):
            problems.append(f"lr_decay must be 'constant' or 'cosine', got {self.lr_decay!r}")
        if not (isinstance(self.warmup, (int, float)) and 0.0 <= self.warmup < 1.0):
            problems.append(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
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
