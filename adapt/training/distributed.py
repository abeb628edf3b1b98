"""DistributedDataParallel helpers for runs launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables;
:func:`init_from_env` starts the process group (NCCL on CUDA, gloo on CPU). The trainer then
wraps all trainable modules in one DDP wrapper and gives every rank its slice of each global
batch, so a run on ``W`` processes follows the same optimisation path as one process.

Single node, 4 GPUs::

    torchrun --nproc_per_node 4 my_script.py

Two nodes, 8 GPUs each (run on every node; node 0's address as the endpoint)::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint node0.example.org:29500 --rdzv_id shiftkit-run-1 my_script.py
"""

from __future__ import annotations

import atexit
import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "any_true",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "cleanup",
    "init_from_env",
    "is_distributed",
    "local_rank",
    "rank",
    "reduce_sums",
    "world_size",
    "wrap_ddp",
]


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group when launched by torchrun; returns whether it did.

    ``backend`` defaults to NCCL when CUDA is available, gloo otherwise. Sets this rank's
    CUDA device from ``LOCAL_RANK``.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    if dist.is_initialized():
        return True
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    # A script that never calls cleanup() must still tear the group down while the interpreter
    # is alive (see _destroy); atexit handlers run before finalisation starts.
    atexit.register(_destroy)
    return True


def _destroy() -> None:
    """Destroy the process group, releasing every Python reference to it first.

    Why: gloo's worker threads finish a collective's ``Work`` after ``wait()`` returns, and the
    last reference to a work (and to the tensors it holds) can be dropped on such a thread. If
    that happens while Python is finalising -- a DDP wrapper or reducer kept alive by a
    reference cycle until exit, or no destroy at all -- the thread's attempt to take the GIL
    ends it with a forced unwind through a ``noexcept`` destructor: "terminate called without
    an active exception", SIGABRT, after a run that finished. Collecting cycles now frees those
    objects while the interpreter is alive, and ``destroy_process_group`` joins the threads.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def cleanup() -> None:
    """End of a distributed run: wait for every rank, then tear the process group down.

    The barrier keeps a rank from closing its connections while a peer still sends (rank 0
    writing results after the last collective); :func:`_destroy` says why the teardown itself
    frees Python objects first. Safe to call when no group exists (single process).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    _destroy()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap ``module``; buffers (BN statistics) are broadcast from rank 0 each forward."""
    kwargs: dict[str, Any] = {"broadcast_buffers": True}
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(module, **kwargs)


def reduce_sums(sums: dict[str, float], count: int, device: torch.device) -> tuple[dict[str, float], int]:
    """Sum per-rank metric sums and sample counts over all ranks."""
    keys = sorted(sums)
    dev = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    vals = t.cpu().tolist()
    return dict(zip(keys, vals[:-1], strict=True)), int(vals[-1])


def any_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (so all ranks skip/stop together)."""
    dev = device if device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(modules: dict[str, nn.Module], device: torch.device) -> None:
    """Copy rank 0's buffers (BN running statistics) to all ranks before evaluation."""
    for m in modules.values():
        for b in m.buffers():
            dist.broadcast(b.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's Python object on every rank (in-process only; never used on files)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
