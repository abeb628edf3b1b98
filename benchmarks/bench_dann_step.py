"""Benchmark: one DANN training step against a plain supervised step, same batch, same run.

Both steps see the same concatenated batch (B source + B target images, already on the
device) through the same backbone and the same AdamW optimiser:

* plain: ``CE(head(encoder(x))[:B], y)``, backward, clip, step;
* DANN: shiftkit's ``DANN.training_step`` (adds the gradient-reversal layer, the one-logit
  domain MLP on the 2B features and its BCE) then the same backward/clip/step;
* segmentation (GPU): plain FlexibleUNet cross-entropy vs ``SegDANN.training_step``
  (feature-level + ADVENT output-space discriminators).

Timing alternates blocks of plain and DANN steps and reports medians, so load from other
processes on a shared machine hits both alike. Goal on CPU: DANN / plain time <= 1.15.

    .venv/bin/python benchmarks/bench_dann_step.py                       # CPU, ~1 min
    python benchmarks/bench_dann_step.py --device cuda --steps 30         # GPU, < 2 min

On CUDA it runs DenseNet121 224 x 224 x 1 with batch 64 + 64 and FlexibleUNet(resnet34)
256 x 512 x 3 with batch 8 + 8, bf16 autocast and channels_last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, make_row, markdown_table, write_result  # noqa: E402

GOAL = 1.15
# OpenMP's default spin-wait burns the shared cores other processes need and inflates wall
# time many-fold on a loaded machine (see bench_omp); sleep-wait instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(plain: Callable[[], None], dann: Callable[[], None], *, steps: int, blocks: int, device) -> tuple[float, float]:
    """Median seconds per step of each, measured in alternating blocks of ``steps`` steps."""
    for fn in (plain, dann):  # warm-up: allocator, cudnn autotune, lazy init
        for _ in range(3):
            fn()
    _sync(device)
    tp, td = [], []
    for _ in range(blocks):
        for fn, out in ((plain, tp), (dann, td)):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            out.append((time.perf_counter() - t0) / steps)
    return statistics.median(tp), statistics.median(td)


def _case(kind: str, name: str, size: tuple[int, int], channels: int, batch: int, num_classes: int, device,
          steps: int, blocks: int, adversary: str = "grl") -> dict:
    import torch
    import torch.nn.functional as F

    from shiftkit.adapt.methods.dann import DANN
    from shiftkit.adapt.methods.dann_seg import SegDANN
    from shiftkit.adapt.training.trainer import autocast_ctx, batch_to

    torch.manual_seed(0)
    amp = device.type == "cuda"
    cl = device.type == "cuda"
    if kind == "seg":
        method = SegDANN(name, num_classes=num_classes, in_channels=channels, device=str(device),
                         adversary=adversary, feature_level=True, lambda_output=1.0)
    else:
        method = DANN(name, num_classes=num_classes, in_channels=channels, device=str(device), adversary=adversary)
    fake = [{"image": torch.zeros(channels, *size)}]
    method.setup(fake)
    for m in method.modules_.values():
        m.to(device)
        if cl:
            m.to(memory_format=torch.channels_last)
    model = method.model_
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(batch, channels, *size, generator=g)
    xt = torch.rand(batch, channels, *size, generator=g)
    src = {"image": xs}
    if kind == "seg":
        src["mask"] = torch.randint(0, num_classes, (batch, *size), generator=g)
    else:
        src["label"] = torch.randint(0, num_classes, (batch,), generator=g)
    src = batch_to(src, device, cl)
    tgt = batch_to({"image": xt}, device, cl)
    x_cat = torch.cat([src["image"], tgt["image"]], 0)
    params_plain = list(model.parameters())
    params_dann = [p for m in method.modules_.values() for p in m.parameters()]
    opt_plain = torch.optim.AdamW(params_plain, lr=1e-4)
    opt_dann = torch.optim.AdamW(params_dann, lr=1e-4)

    def finish(loss, opt, params) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    def plain() -> None:
        opt_plain.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            logits = model(x_cat)[:batch]
            y = src["mask"] if kind == "seg" else src["label"]
            loss = F.cross_entropy(logits.float(), y)
        finish(loss, opt_plain, params_plain)

    def dann() -> None:
        opt_dann.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            loss, _ = method.training_step(src, tgt, 0.5)
        finish(loss, opt_dann, params_dann)

    tp, td = _time_pair(plain, dann, steps=steps, blocks=blocks, device=device)
    n = 2 * batch
    return {"name": name, "kind": kind, "adversary": adversary, "size": list(size), "channels": channels, "batch": f"{batch}+{batch}",
            "plain_s": tp, "dann_s": td, "ratio": td / tp, "plain_img_s": n / tp, "dann_img_s": n / td}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="steps per timing block (default 5 CPU, 20 GPU)")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        cases = [("cls", "densenet121", (224, 224), 1, 64, 2, "grl"), ("cls", "densenet121", (224, 224), 1, 64, 2, "confusion"),
                 ("seg", "flexibleunet-resnet34", (256, 512), 3, 8, 9, "grl")]
        steps = args.steps or 20
    else:
        # The paper's gradient reversal, and the confusion adversary the pipeline uses by default
        # (one more discriminator forward on detached features).
        cases = [("cls", "resnet10", (64, 64), 1, 32, 2, "grl"), ("cls", "resnet10", (64, 64), 1, 32, 2, "confusion"),
                 ("seg", "tiny-unet", (64, 64), 3, 8, 9, "grl")]
        steps = args.steps or 5
    results, rows = [], []
    for kind, name, size, ch, batch, k, adversary in cases:
        r = _case(kind, name, size, ch, batch, k, device, steps, args.blocks, adversary)
        results.append(r)
        label = (f"DANN step / plain step ({device.type}, {name}, {size[0]}x{size[1]}x{ch}, batch {r['batch']}, "
                 f"{adversary})")
        is_goal = device.type == "cpu" and kind == "cls"
        rows.append(make_row(label, shiftkit=r["dann_s"], baseline=r["plain_s"], baseline_name="plain step",
                             unit="s/step", max_ratio=GOAL if is_goal else None,
                             notes=f"img/s plain {r['plain_img_s']:.1f}, DANN {r['dann_img_s']:.1f}; "
                                   f"median of {args.blocks} alternating blocks of {steps} steps"
                                   + ("; bf16 autocast + channels_last" if device.type == "cuda" else "")))
    print(markdown_table(rows))
    for r in results:
        print(f"{r['name']} ({r['adversary']}): plain {r['plain_img_s']:.1f} img/s, DANN {r['dann_img_s']:.1f} img/s, ratio {r['ratio']:.3f}")
    topic = "dann_step" if device.type == "cpu" else "dann_step_gpu"
    path = write_result(topic, rows, machine=describe_machine(), extra={"cases": results}, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
