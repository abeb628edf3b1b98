"""Checkpoints of the training loop, and the one safe loader of weight files.

Nothing here unpickles code: checkpoints are read with ``torch.load(weights_only=True)`` and
weight files as safetensors or ``weights_only`` state dicts (:func:`read_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftkit.adapt.training.train_config import TrainConfig
from shiftkit.datasets.errors import DataError, ShiftkitError
from shiftkit.datasets.files import atomic_path

__all__ = ["UnsafeModelFileError", "fingerprint", "is_safetensors", "load_checkpoint", "load_into", "read_weights",
           "save_checkpoint", "state_dicts", "unwrap_state"]


class UnsafeModelFileError(ShiftkitError, ValueError):
    """The file is not a safetensors model nor a plain state dict (e.g. a pickle carrying code);
    it was not deserialised."""


def is_safetensors(path: Path) -> bool:
    """Header check: 8-byte little-endian length, then a JSON object (no code can run)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
            return len(head) == 9 and head[8:9] == b"{" and 0 < size < os.path.getsize(path)
    except OSError:
        return False


def _torch_load(path: Path, error: type[ShiftkitError], what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, RuntimeError for corrupt zips
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise error(f"{path}: refused as {what} ({type(exc).__name__}: {first}); files are loaded with "
                    "torch.load(weights_only=True) and never run code") from None


def read_weights(path: str | os.PathLike[str]) -> Any:
    """The one safe loader of a weights file: safetensors (recognised by its header, whatever the
    suffix) or a PyTorch state dict read with ``torch.load(weights_only=True)``.

    Returns the file's content (a dict of tensors, possibly nested: see
    :func:`shiftkit.adapt.deploy.loading.load_weights`). Raises :class:`DataError` for a missing or
    corrupt file and :class:`UnsafeModelFileError` for anything that would need unpickling code.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: weights file not found")
    if is_safetensors(p):
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as exc:  # SafetensorError: truncated or inconsistent header
            raise DataError(f"{p}: not a valid safetensors file ({type(exc).__name__}: {exc})") from None
    return _torch_load(p, UnsafeModelFileError, "a plain state dict")


def unwrap_state(content: Any, model: nn.Module, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """The one rule for finding ``model``'s state dict inside a weights file's ``content``.

    ``key`` given: ``content[key]``. Otherwise a training checkpoint
    (``{"modules": {"model": ...}}``), ``{"state_dict": {...}}`` or ``{"model": {...}}`` is
    unwrapped; a bare state dict is used as it is. A ``"model."`` prefix (a shiftkit model
    file) is stripped where the bare name is the model's, and ``"shift."`` tensors (stored
    shift statistics, not weights) are left out.
    """
    state = content
    if key is not None:
        state = state[key]
    elif isinstance(state, dict) and isinstance(state.get("modules"), dict) and "model" in state["modules"]:
        state = state["modules"]["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise DataError(f"the weights hold a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    return {k[len("model."):] if k.startswith("model.") and k not in own else k: v
            for k, v in state.items() if not k.startswith("shift.")}


def load_into(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True,
              key: str | None = None) -> tuple[list[str], list[str]]:
    """Load the weights file ``path`` into ``model`` in place: :func:`read_weights` (never runs
    code), :func:`unwrap_state`, then ``model.load_state_dict``.

    Returns ``(missing, unexpected)`` tensor names (both empty when ``strict``). Raises
    :class:`DataError` naming the file when the weights do not fit the model.
    """
    state = unwrap_state(read_weights(path), model, key=key)
    try:
        missing, unexpected = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the model: {str(exc)[:500]}") from None
    return list(missing), list(unexpected)


def save_checkpoint(obj: Any, path: Path) -> None:
    """Write a training checkpoint atomically (state dicts and plain containers only)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def state_dicts(modules: dict[str, nn.Module]) -> dict[str, dict]:
    """CPU copies of every module's state dict (a checkpoint never aliases live tensors)."""
    return {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def fingerprint(cfg: TrainConfig, task: Any) -> dict:
    """What a checkpoint must match to be resumed: the settings that change the trajectory."""
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
    return _torch_load(Path(path), DataError, "a training checkpoint")
