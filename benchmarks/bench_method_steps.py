"""Benchmark: one training step of each adaptation method against a plain supervised step, same batch.

Every method's ``training_step`` (plus the same backward / clip / AdamW step) is timed against
a plain step on the same data in the same run, in alternating blocks (medians), so load from
other processes hits both alike. Goal on CPU: method / plain <= 1.3.

* two-batch methods (DANN, CDAN+E, CDAN+E+MCC, MCC, Deep CORAL, self-training): plain =
  ``CE(head(encoder(cat(x_s, x_t)))[:B], y)`` on the B source + B target batch, as in
  ``bench_dann_step``;
* self-training (FixMatch, own teacher) forwards ``[x_s, weak(x_t), strong(x_t)]``: 3B images
  against the plain step's 2B, i.e. 1.5x the forward work by design (stated, not hidden);
  with an EMA teacher it adds a B-image teacher forward without gradients;
* source-free (SHOT, TENT): plain = a supervised step on one batch of B (their only stream).
  SHOT's per-epoch clustering pass and self-training's optional per-epoch pass over the
  target are not per-step costs and are not timed.

    .venv/bin/python benchmarks/bench_method_steps.py          # CPU, resnet10 64x64x1, batch 32+32
    python benchmarks/bench_method_steps.py --device cuda --name densenet121 --size 224 --batch 64
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_row, markdown_table, write_result  # noqa: E402
from bench_dann_step import _time_pair  # noqa: E402

GOAL = 1.3
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

METHODS = ("dann", "cdan", "cdan_mcc", "mcc", "coral", "self_training", "self_training_ema", "shot", "tent")


def _method(key: str, name: str, channels: int, k: int, device):
    from shiftkit.adapt import methods as M

    common = dict(num_classes=k, in_channels=channels, device=str(device), progress=False)
    return {
        "dann": lambda: M.DANN(name, **common),
        "cdan": lambda: M.CDAN(name, **common),
        "cdan_mcc": lambda: M.CDAN(name, mcc_weight=1.0, **common),
        "mcc": lambda: M.MCC(name, **common),
        "coral": lambda: M.DeepCORAL(name, **common),
        "self_training": lambda: M.SelfTraining(name, **common),
        "self_training_ema": lambda: M.SelfTraining(name, ema_decay=0.99, **common),
        "shot": lambda: M.SHOT(name, **common),
        "tent": lambda: M.TENT(name, **common),
    }[key]()


def _case(key: str, name: str, size: int, channels: int, batch: int, k: int, device, steps: int, blocks: int) -> dict:
    import torch
    import torch.nn.functional as F

    from shiftkit.adapt.methods.tent import bn_affine_parameters, tent_step
    from shiftkit.adapt.training.data import ArrayDataset
    from shiftkit.adapt.training.trainer import autocast_ctx

    torch.manual_seed(0)
    amp = device.type == "cuda"
    method = _method(key, name, channels, k, device)
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(batch, channels, size, size, generator=g).to(device)
    xt = torch.rand(batch, channels, size, size, generator=g).to(device)
    src = {"image": xs, "label": torch.randint(0, k, (batch,), generator=g).to(device)}
    tgt = {"image": xt}
    method.setup([{"image": torch.zeros(channels, size, size)}])
    method.fit_target_ = ArrayDataset(xt.cpu())  # SHOT clusters it once, at its first step (warm-up)
    two_batch = key not in ("shot", "tent")
    for m in method.modules_.values():
        m.to(device)
    model = method.model_
    x_plain = torch.cat([xs, xt], 0) if two_batch else xs
    plain_params = list(model.parameters())
    opt_plain = torch.optim.AdamW(plain_params, lr=1e-4)
    if key == "tent":
        params = bn_affine_parameters(model)
        opt = torch.optim.Adam(params, lr=1e-4)
    else:
        params = [p for grp in method.param_groups(1e-4) for p in grp["params"]]
        opt = torch.optim.AdamW(params, lr=1e-4)

    def plain() -> None:
        opt_plain.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            loss = F.cross_entropy(model(x_plain)[:batch].float(), src["label"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_params, 5.0)
        opt_plain.step()

    def step() -> None:
        if key == "tent":
            with autocast_ctx(device, amp):
                tent_step(model, opt, xt)
            return
        opt.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            if two_batch:
                loss, _ = method.training_step(src, tgt, 0.5)
            else:  # source-free: the target batch is the only stream
                loss, _ = method.training_step(None, tgt, 0.5)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    tp, tm = _time_pair(plain, step, steps=steps, blocks=blocks, device=device)
    return {"method": key, "plain_s": tp, "method_s": tm, "ratio": tm / tp,
            "batch": f"{batch}+{batch}" if two_batch else f"{batch} (target only)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="resnet10")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="steps per timing block (default 3 CPU, 20 GPU)")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.steps or (20 if device.type == "cuda" else 3)
    rows, results = [], []
    for key in args.methods:
        r = _case(key, args.name, args.size, args.channels, args.batch, 2, device, steps, args.blocks)
        results.append(r)
        note = f"median of {args.blocks} alternating blocks of {steps} steps; batch {r['batch']}"
        if key == "self_training":
            note += "; forwards 3B images vs the plain step's 2B (weak + strong target views)"
        if key == "self_training_ema":
            note += "; 3B forward with gradients + B teacher forward without"
        rows.append(make_row(f"{key} step / plain step ({device.type}, {args.name}, {args.size}x{args.size}x"
                             f"{args.channels})", shiftkit=r["method_s"], baseline=r["plain_s"],
                             baseline_name="plain step", unit="s/step",
                             max_ratio=GOAL if device.type == "cpu" else None, notes=note))
        print(f"{key}: plain {r['plain_s'] * 1e3:.1f} ms, method {r['method_s'] * 1e3:.1f} ms, ratio {r['ratio']:.3f}",
              flush=True)
    print(markdown_table(rows))
    topic = "method_steps" if device.type == "cpu" else "method_steps_gpu"
    path = write_result(topic, rows, machine=describe_machine(), extra={"cases": results}, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
