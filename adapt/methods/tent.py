"""TENT: test-time entropy minimisation (Wang et al. 2021, ICLR), source-free.

Starts from a trained source model and never sees a source image. BatchNorm layers normalise
with the statistics of the current target batch, and only their affine parameters
``gamma``, ``beta`` are trained, online over the target stream, to minimise the entropy of
the model's own predictions:

.. math::
    \\min_{\\gamma, \\beta} \\; H(\\hat y) = -\\sum_k p(\\hat y_k) \\log p(\\hat y_k),
    \\qquad \\hat y = f(x_t; \\theta_{source}, \\gamma, \\beta)

(Adam, lr 1e-3, one step per batch: the paper's CIFAR setting; literature). After the pass,
each BatchNorm layer's running statistics are re-estimated over the whole target set with
the adapted affine parameters (AdaBN, Li et al. 2016), so ``predict`` is deterministic and
does not depend on how the test images are batched.

Known failure and its guard. Entropy minimisation with batch statistics assumes the target
batches are i.i.d. On a label-correlated stream (a ward that sees one kind of patient at a
time) each batch's statistics carry its label, and TENT can collapse to predicting one class
(error 87.6 % against a source model's 32.7 % on CIFAR-10-C; Gong et al. 2022, NOTE). Three
label-free signals are tracked:

* ``stream_f``: a one-way ANOVA F statistic of the first BatchNorm layer's input (a fixed
  function of the images: TENT trains no parameter before it, so the statistic measures the
  stream, not the adaptation). With ``m_i`` the per-image channel means of batch ``b`` (size
  ``B``), ``mu_b`` their mean and ``s_b^2`` their variance,
  ``F = Var_b(mu_b) / mean_b(s_b^2 / B)`` (median over channels): about 1 when batches are
  i.i.d. draws, much larger when batch composition follows a hidden variable (the label, or
  a drifting domain). It sees correlation only through low-level image statistics; a label
  that changes shapes but not intensities is caught by the prediction signals below.
* ``batch_marginal_entropy_ratio``: mean over batches of ``H(p_bar_batch)`` divided by
  ``H(p_bar)`` over the stream (``p_bar`` the mean predicted probabilities): near 0 when each
  batch's predictions hold one class.
* ``marginal_entropy_ratio``: ``H(p_bar)`` over the last ``window`` batches divided by its
  value over the first ``window`` batches: a fall below ``collapse_ratio`` means the
  predictions are collapsing onto fewer classes.

The first two warn that the stream is label-correlated (the precondition of a collapse), the
third that a collapse is under way; each warning goes to ``warnings_`` and Python's
``warnings``. With ``on_collapse="reset"`` a detected collapse also restores the source
parameters.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftkit.adapt.methods.adabn import recompute_bn_stats
from shiftkit.adapt.methods.alignment_losses import entropy
from shiftkit.adapt.methods.base import Method, Requires, TargetView
from shiftkit.adapt.training.data import as_dataset
from shiftkit.adapt.training.trainer import batch_to, resolve_device
from shiftkit.datasets.errors import ConfigError

__all__ = ["TENT", "bn_affine_parameters", "tent_step"]


def bn_affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``gamma``/``beta`` of every BatchNorm layer (the only parameters TENT trains).

    A network without BatchNorm (a vision transformer, a ConvNeXt) gets the affine parameters of
    its LayerNorm / GroupNorm layers instead, as TENT's authors and later work (SAR, Niu et al.
    2023) adapt transformers; those layers normalise each sample on its own, so only the affine
    part adapts (there are no batch statistics to take from the target).
    """
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out += [q for q in (m.weight, m.bias) if q is not None]
    if not out:
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                out += [q for q in (m.weight, m.bias) if q is not None]
    return out


def tent_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One TENT update on a target batch ``x`` ``(N, C, H, W)``: mean prediction entropy, backward, step.

    Returns the batch's logits ``(N, K)`` (before the update) and the loss.
    """
    logits = model(x).float()
    loss = entropy(logits).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logits, loss


def _marginal_entropy(p_sum: torch.Tensor) -> float:
    """Normalised entropy ``H(p_bar) / log K`` of summed probabilities ``(K,)``."""
    pbar = p_sum / p_sum.sum().clamp_min(1e-12)
    k = p_sum.numel()
    return float(-(pbar * torch.log(pbar.clamp_min(1e-12))).sum() / math.log(k))


class _BatchStatsMonitor:
    """A forward hook on the first BatchNorm layer recording per-batch statistics of its input (``stream_f``)."""

    def __init__(self, model: nn.Module):
        self.stats: dict[int, list[tuple[torch.Tensor, torch.Tensor, int]]] = {}
        self.handles = []
        self.active = True
        # The first layer only: every later layer's input moves with the adapted affine parameters.
        first = next((x for x in model.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)), None)
        if first is not None:
            self.stats[0] = []
            self.handles.append(first.register_forward_pre_hook(self._hook(0)))

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            if not self.active or x.shape[0] < 2:
                return
            m = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x  # (B, C) per-image channel means
            self.stats[i].append((m.mean(0).cpu(), m.var(0).cpu(), x.shape[0]))
        return hook

    def f_statistic(self) -> float:
        """Median-over-channels one-way ANOVA F of the batch means at the first BN layer (nan: < 3 batches)."""
        best = float("nan")
        for rows in self.stats.values():
            if len(rows) < 3:
                continue
            mu = torch.stack([r[0] for r in rows])  # (n_batches, C)
            within = torch.stack([r[1] / r[2] for r in rows]).mean(0)  # expected Var(mu_b) if i.i.d.
            f = mu.var(0) / within.clamp_min(1e-12)
            val = float(f.median())
            best = val if not math.isfinite(best) else max(best, val)
        return best

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class TENT(Method):
    """Source-free test-time adaptation of a BatchNorm network by entropy minimisation.

    ``fit(None, target)`` (or ``fit(target=...)``): the source argument must be ``None``.

    Args:
        model: the trained source model (a split-protocol module with BatchNorm layers).
        steps_per_batch: optimisation steps on each target batch (1 in the paper).
        shuffle: visit the target set in random order (``False`` keeps the stream's order, as
            a deployed model would see it).
        recompute_bn: re-estimate running BatchNorm statistics on the target after adapting.
        window: batches per window of the collapse check (``None``: ``max(2, n_batches // 4)``).
        collapse_ratio: warn when the last window's marginal entropy falls below this share
            of the first window's. 0.5: on the development data seeds' corrupted radiographs
            and two-class toys a healthy run stayed above 0.8 and collapses fell below 0.3.
        correlation_ratio: warn that the stream is label-correlated when the mean per-batch
            marginal entropy falls below this share of the whole stream's (0.5).
        max_stream_f: warn that the stream is not i.i.d. when the batch-statistics F statistic
            exceeds this (see the module docstring; chosen on development data, see
            ``docs/methods.md``).
        on_collapse: ``"warn"`` or ``"reset"`` (restore the source parameters on collapse).
        epochs: passes over the target stream (1: one online pass, the paper's).
        **kwargs: :class:`Method` arguments (``lr``: Adam's, default 1e-3 as in the paper;
            ``batch_size``, ``seed``, ``device``).
    """

    requires = Requires(source="none", target="unlabelled")
    title = "TENT (source-free)"
    recipe = "online"

    def __init__(
        self,
        model: str | nn.Module | tuple = "tiny",
        *,
        steps_per_batch: int = 1,
        shuffle: bool = False,
        recompute_bn: bool = True,
        window: int | None = None,
        collapse_ratio: float = 0.5,
        correlation_ratio: float = 0.5,
        max_stream_f: float = 8.0,
        on_collapse: Literal["warn", "reset"] = "warn",
        epochs: int = 1,
        **kwargs: Any,
    ):
        super().__init__(model, epochs=epochs, **kwargs)
        self.steps_per_batch = steps_per_batch
        self.shuffle = shuffle
        self.recompute_bn = recompute_bn
        self.window = window
        self.collapse_ratio = collapse_ratio
        self.correlation_ratio = correlation_ratio
        self.max_stream_f = max_stream_f
        self.on_collapse = on_collapse

    def check_params(self) -> list[str]:
        problems = []
        if self.on_collapse not in ("warn", "reset"):
            problems.append(f"on_collapse must be 'warn' or 'reset', got {self.on_collapse!r}")
        if not (isinstance(self.steps_per_batch, int) and self.steps_per_batch >= 1):
            problems.append(f"steps_per_batch must be a positive int, got {self.steps_per_batch!r}")
        return problems

    def _check_data(self, source: Any, target: Any, val: Any) -> tuple[Any, Any, Any]:
        if source is not None:
            raise ConfigError("TENT", ["TENT is source-free: call fit(None, target) or fit(target=...)"])
        if target is None:
            raise ConfigError("TENT", ["fit() needs an unlabelled target dataset"])
        return None, TargetView(as_dataset(target, name="target")), None

    def _fit_model(self, source: Any, target: Any, val: Any, callback: Any) -> None:
        """The online pass over the target stream (not the shared loop: order matters here)."""
        self._set_result(None)
        model = self.model_
        params = bn_affine_parameters(model)
        if not params:
            raise ConfigError("TENT", [f"{type(model).__name__} has no BatchNorm/LayerNorm/GroupNorm affine parameters to adapt"])
        if isinstance(self.model, str):
            self.warnings_.append(f"TENT: model={self.model!r} builds an untrained network; TENT adapts a trained "
                                  "source model (pass the module)")
        device = resolve_device(self.device)
        model.to(device)
        source_state = copy.deepcopy(model.state_dict())
        flags = [q.requires_grad for q in model.parameters()]
        for q in model.parameters():
            q.requires_grad_(False)
        for q in params:
            q.requires_grad_(True)
        torch.manual_seed(self.seed)
        opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        batch_p: list[torch.Tensor] = []  # mean probabilities of each batch, (K,) each
        ent_sum, n_seen = 0.0, 0
        collapsed = False
        model.train()  # BatchNorm normalises with the batch's statistics
        monitor = _BatchStatsMonitor(model)
        try:
            for epoch in range(self.epochs):
                g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
                loader = DataLoader(target, batch_size=self.batch_size, shuffle=self.shuffle, generator=g)
                for batch in loader:
                    x = batch_to({"image": batch["image"]}, device, False)["image"]
                    for step in range(self.steps_per_batch):
                        monitor.active = step == 0  # one record per batch
                        logits, loss = tent_step(model, opt, x)
                    with torch.no_grad():
                        prob = F.softmax(logits.detach(), 1)
                        batch_p.append(prob.transpose(0, 1).reshape(prob.shape[1], -1).mean(1).cpu())
                    ent_sum += float(loss.detach()) * len(x)
                    n_seen += len(x)
                k = batch_p[0].numel()
                rec = {"epoch": epoch + 1, "target_entropy": ent_sum / max(n_seen, 1) / math.log(k)}
                rec.update(self._guard(batch_p, monitor.f_statistic()))
                self.history_.append(rec)
                if rec["collapse"] and not collapsed:
                    collapsed = True
                    if self.on_collapse == "reset":
                        model.load_state_dict(source_state)
                        self.warnings_.append("TENT: collapse detected; the source parameters were restored")
                        break
        finally:
            monitor.remove()
            for q, flag in zip(model.parameters(), flags, strict=True):
                q.requires_grad_(flag)
        for w in self.warnings_:
            warnings.warn(w, RuntimeWarning, stacklevel=3)
        self.collapsed_ = collapsed
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if self.recompute_bn and has_bn and not (collapsed and self.on_collapse == "reset"):  # no BN: nothing to re-estimate
            recompute_bn_stats(model, target, batch_size=self.eval_batch_size, device=device)
        model.eval()

    def _guard(self, batch_p: list[torch.Tensor], stream_f: float) -> dict[str, Any]:
        """The label-free collapse signals over the batches seen so far (see the module docstring);
        appends its warnings to ``warnings_``."""
        if not hasattr(self, "warnings_"):
            self.warnings_ = []
        n = len(batch_p)
        stacked = torch.stack(batch_p)  # (n_batches, K)
        whole = _marginal_entropy(stacked.sum(0))
        per_batch = float(np.mean([_marginal_entropy(b) for b in batch_p]))
        correlation = per_batch / whole if whole > 1e-6 else 1.0
        win = self.window or max(2, n // 4)
        first = _marginal_entropy(stacked[:win].sum(0)) if n >= 2 * win else float("nan")
        last = _marginal_entropy(stacked[-win:].sum(0)) if n >= 2 * win else float("nan")
        ratio = last / first if n >= 2 * win and first > 1e-6 else float("nan")
        out = {"marginal_entropy_first": first, "marginal_entropy_last": last, "marginal_entropy_ratio": ratio,
               "batch_marginal_entropy_ratio": correlation, "stream_f": stream_f, "collapse": False}
        if math.isfinite(stream_f) and stream_f > self.max_stream_f:
            msg = (f"TENT: the target batches are not i.i.d. (batch-statistics F = {stream_f:.1f} > {self.max_stream_f:g}: "
                   "batch composition follows a hidden variable such as the label); batch statistics then carry the "
                   "label and entropy minimisation can collapse to one class - shuffle the stream, use larger batches, "
                   "or use AdaBN")
            if msg not in self.warnings_:
                self.warnings_.append(msg)
        if correlation < self.correlation_ratio:
            msg = (f"TENT: the target stream looks label-correlated (mean per-batch prediction-marginal entropy is "
                   f"{correlation:.2f} of the whole stream's); batch statistics then carry the label and entropy "
                   "minimisation can collapse to one class - shuffle the stream, use larger batches, or use AdaBN")
            if msg not in self.warnings_:
                self.warnings_.append(msg)
        if math.isfinite(ratio) and ratio < self.collapse_ratio:
            out["collapse"] = True
            self.warnings_.append(
                f"TENT: predictions are collapsing (prediction-marginal entropy fell from {first:.2f} to {last:.2f} "
                f"of its maximum over the stream); do not trust the adapted model - use on_collapse='reset', a lower "
                "lr, or AdaBN"
            )
        return out
