"""GPU benchmark: shiftkit's DANN training img/s next to the plain-step ceiling, and the loader.

For each backbone, in one process on one device:

* ``plain``: the ceiling - a bare PyTorch step (forward, cross-entropy, backward, AdamW) of
  the same shiftkit backbone on the same concatenated batch (source + target images, already
  on the device), bf16 autocast and channels_last on CUDA;
* ``dann step``: shiftkit's own ``DANN.training_step`` (``SegDANN`` for segmentation:
  feature-level + ADVENT output-space discriminators) in the same bare loop;
* ``dann trainer``: ``DANN(...).fit(source, target)`` - shiftkit's whole training loop
  (DataLoader from an in-memory dataset, host-to-device copies, the non-finite guard, gradient
  clipping, logging). Fixed costs (model transfer, optimizer, worker start-up) are cancelled
  by timing two fits of different lengths: rate = extra images / extra seconds;
* ``source-only trainer``: ``SourceOnly.fit`` on the same concatenated batch size, to
  separate what the trainer costs from what DANN costs.

The headline ratio is ``dann trainer`` img/s over ``plain`` img/s (goal >= 0.85). Then the
data loader: shiftkit's synthetic radiograph generator (``SynthDataset``, generated on the
fly) and PNGs decoded from disk (``read_image``), each through a DataLoader with workers,
in img/s next to the DANN step rate it must feed (goal: loader >= step rate).

Reference figures (design notes, one H100, eager, bf16 + channels_last, 224 x 224 x 1, batch
64 + 64): DenseNet121 plain 1,928 img/s, DANN 1,745 img/s; ResNet50 1,028 vs 1,027;
FlexibleUNet(resnet34) 256 x 512 segmentation 577 img/s.

Dependencies: only torch, numpy, MONAI and tqdm besides shiftkit itself, so on a machine
with a preinstalled PyTorch stack ``pip install --no-deps -e . monai tqdm`` is enough
(pandas is not needed: the script loads ``shiftkit.datasets`` submodules without its
``__init__``). The loader rows also need opencv (``opencv-python-headless``); without it
they say so. Usage::

    python benchmarks/gpu_bench.py --device cuda                 # a few minutes on one GPU
    python benchmarks/gpu_bench.py --device cpu --tiny           # smoke test, seconds
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, machine_line, make_row, markdown_table, write_result  # noqa: E402

REFERENCE = {  # img/s on one H100 (design notes)
    "densenet121": {"plain": 1928.0, "dann": 1745.0},
    "resnet50": {"plain": 1028.0, "dann": 1027.0},
    "flexibleunet-resnet34": {"plain": 577.0},
}
GOAL_DANN_OVER_PLAIN = 0.85


# --------------------------------------------------------------------------------------
# Imports that work with `pip install --no-deps`
# --------------------------------------------------------------------------------------


def _missing_modules() -> list[str]:
    need = ["torch", "numpy", "monai", "tqdm"]
    return [m for m in need if importlib.util.find_spec(m) is None]


def _light_datasets_package() -> None:
    """Let ``shiftkit.datasets.<sub>`` import without running ``shiftkit.datasets/__init__``.

    The package ``__init__`` imports the manifest tools (pandas); the training code only
    needs ``shiftkit.datasets.errors``. When pandas is missing, register the package module
    without executing it, so its submodules still import from the same folder.
    """
    if importlib.util.find_spec("pandas") is not None or "shiftkit.datasets" in sys.modules:
        return
    spec = importlib.util.find_spec("shiftkit.datasets")
    if spec is None:
        raise SystemExit("shiftkit is not installed: run `pip install --no-deps -e .` in the repository")
    module = importlib.util.module_from_spec(spec)  # not executed: no pandas import
    sys.modules["shiftkit.datasets"] = module


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class MemoryDataset:
    """In-memory items in shiftkit's layout (``image``, ``label``/``mask``, ``domain``, ``index``).

    Module-level (not a closure) so DataLoader workers can receive it under any start method.
    """

    def __init__(self, images, labels, masks, domain: str):
        self.images, self.labels, self.masks, self.domain = images, labels, masks, domain

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"image": self.images[i], "label": self.labels[i], "domain": self.domain, "index": i}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item


class PngDataset:
    """Decodes the PNG files in ``paths`` with shiftkit's ``read_image`` on every access."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from shiftkit.datasets.io import read_image

        return {"image": torch.from_numpy(read_image(self.paths[i])), "label": torch.tensor(0)}


def _memory_dataset(n: int, channels: int, hw: tuple[int, int], num_classes: int, seg: bool, seed: int, domain: str):
    """Random images/labels/masks of the given shape, as a :class:`MemoryDataset` and tensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, channels, *hw, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    masks = torch.randint(0, num_classes, (n, *hw), generator=g) if seg else None
    return MemoryDataset(images, labels, masks, domain), images, labels, masks


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def _sync(device) -> Callable[[], None]:
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _rate(step: Callable[[], Any], images_per_step: int, *, steps: int, repeats: int, warmup: int, sync) -> tuple[float, list[float]]:
    """Median img/s over ``repeats`` chunks of ``steps`` steps each (after ``warmup`` steps)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(images_per_step * steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def _prepare(module, device, channels_last: bool):
    import torch

    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def plain_rate(build: Callable[[], Any], x, y, seg: bool, device, *, amp: bool, channels_last: bool, steps: int,
               repeats: int, warmup: int) -> tuple[float, list[float]]:
    """The ceiling: forward + cross-entropy + backward + AdamW on device-resident data."""
    import torch
    import torch.nn.functional as F

    from shiftkit.adapt.training.trainer import autocast_ctx

    model = _prepare(build(), device, channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    return _rate(step, x.shape[0], steps=steps, repeats=repeats, warmup=warmup, sync=_sync(device))


def dann_step_rate(method, xs, xt, ys, seg: bool, device, *, amp: bool, channels_last: bool, steps: int, repeats: int,
                   warmup: int) -> tuple[float, list[float]]:
    """shiftkit's ``training_step`` in the same bare loop (no trainer around it)."""
    import torch

    from shiftkit.adapt.training.trainer import autocast_ctx

    for m in method.modules_.values():
        _prepare(m, device, channels_last).train()
    opt = torch.optim.AdamW([g for g in method.param_groups(1e-4)])
    source = {"image": xs, ("mask" if seg else "label"): ys}
    target = {"image": xt}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_ctx(device, amp):
            loss, _ = method.training_step(source, target, 0.5)
        loss.backward()
        opt.step()

    return _rate(step, xs.shape[0] + xt.shape[0], steps=steps, repeats=repeats, warmup=warmup, sync=_sync(device))


def trainer_rate(make_method: Callable[[int, Any], Any], source, target, images_per_step: int, *, short: int, long: int,
                 repeats: int, sync) -> tuple[float, list[float], Any]:
    """img/s of ``method.fit`` from the difference of a short and a long fit (fixed costs cancel)."""
    warm = make_method(2, None)
    warm.fit(source, target)  # builds the model, compiles cuDNN plans, starts the allocator
    rates = []
    for _ in range(repeats):
        times = {}
        for n in (short, long):
            m = make_method(n, warm.model_)  # same network: only the number of steps differs
            sync()
            t0 = time.perf_counter()
            m.fit(source, target)
            sync()
            times[n] = time.perf_counter() - t0
        dt = times[long] - times[short]
        rates.append(images_per_step * (long - short) / dt if dt > 0 else float("nan"))
    finite = [r for r in rates if math.isfinite(r)]
    return (statistics.median(finite) if finite else float("nan")), rates, m


# --------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------


def loader_rate(dataset, batch: int, workers: int, device, *, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up is a one-off cost
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        b["image"].to(device, non_blocking=True)
        n += b["image"].shape[0]
    _sync(device)()
    return n / (time.perf_counter() - t0)


def _png_dataset(folder: Path, n: int, size: int, seed: int) -> PngDataset:
    """Write ``n`` synthetic radiographs as 16-bit PNG, return a Dataset that decodes them."""
    from shiftkit.datasets.synth import radiograph
    from shiftkit.datasets.synth._common import encode_png

    paths = []
    for i in range(n):
        s = radiograph.sample("city", i, seed=seed, size=size)
        p = folder / f"img_{i:05d}.png"
        p.write_bytes(encode_png(radiograph._to_uint16(s["image"])))
        paths.append(str(p))
    return PngDataset(paths)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def bench_backbone(name: str, seg: bool, args, device, amp: bool, channels_last: bool, machine: str) -> tuple[list[dict], dict]:
    import torch

    from shiftkit.adapt.methods import DANN, SegDANN, SourceOnly
    from shiftkit.adapt.models.backbones import build_classifier, build_segmenter

    b = args.seg_batch if seg else args.batch
    hw = (args.seg_size, 2 * args.seg_size) if seg else (args.size, args.size)
    channels, k = (3, 9) if seg else (1, 2)
    src, xs_cpu, ys_lab, ys_mask = _memory_dataset(max(2 * b, 8), channels, hw, k, seg, 0, "source")
    tgt, xt_cpu, _, _ = _memory_dataset(max(2 * b, 8), channels, hw, k, seg, 1, "target")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = xs_cpu[:b].to(device).contiguous(memory_format=fmt)
    xt = xt_cpu[:b].to(device).contiguous(memory_format=fmt)
    ys = (ys_mask if seg else ys_lab)[:b].to(device)
    x_cat = torch.cat([xs, xt]).contiguous(memory_format=fmt)
    y_cat = torch.cat([ys, ys])
    timing = {"steps": args.steps, "repeats": args.repeats, "warmup": args.warmup}

    def build():
        torch.manual_seed(0)
        return build_segmenter(name, channels, k) if seg else build_classifier(name, channels, k)

    label = f"{name} {hw[0]}x{hw[1]}x{channels}, batch {b}+{b}"
    out: dict[str, Any] = {"backbone": name, "task": "segmentation" if seg else "classification",
                           "image": [channels, *hw], "batch_per_domain": b}
    plain, plain_all = plain_rate(build, x_cat, y_cat, seg, device, amp=amp, channels_last=channels_last, **timing)
    out["plain_img_s"], out["plain_samples"] = plain, plain_all
    if device.type == "cuda":
        torch.cuda.empty_cache()

    cls = SegDANN if seg else DANN
    common = dict(num_classes=k, in_channels=channels, batch_size=b, epochs=1, device=str(device), amp=amp,
                  channels_last=channels_last, progress=False, num_workers=args.trainer_workers, seed=0)
    both_levels = {"feature_level": True, "lambda_output": 1.0} if seg else {}  # feature + output space
    probe = cls(build(), **common, **both_levels, steps_per_epoch=1)
    probe.setup([{"image": xs_cpu[0]}])  # the model copy and discriminator(s) the trainer would train
    step_rate, step_all = dann_step_rate(probe, xs, xt, ys, seg, device, amp=amp, channels_last=channels_last, **timing)
    out["dann_step_img_s"], out["dann_step_samples"] = step_rate, step_all
    out["method_class"] = f"{type(probe).__module__}.{type(probe).__name__}"
    del probe
    if device.type == "cuda":
        torch.cuda.empty_cache()

    sync = _sync(device)
    short, long = args.trainer_steps
    dann_fit, dann_fit_all, fitted = trainer_rate(
        lambda n, net: cls(build() if net is None else net, **common, steps_per_epoch=n), src, tgt, 2 * b,
        short=short, long=long, repeats=args.trainer_repeats, sync=sync)
    out["dann_trainer_img_s"], out["dann_trainer_samples"] = dann_fit, dann_fit_all
    hist = fitted.history_[-1] if fitted.history_ else {}
    out["dann_history_last"] = {kk: v for kk, v in hist.items() if isinstance(v, (int, float))}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    so_common = dict(common, batch_size=2 * b)
    so_fit, so_fit_all, _ = trainer_rate(
        lambda n, net: SourceOnly(build() if net is None else net, task="segmentation" if seg else "classification",
                             **so_common, steps_per_epoch=n), src, None, 2 * b,
        short=short, long=long, repeats=args.trainer_repeats, sync=sync)
    out["source_only_trainer_img_s"], out["source_only_trainer_samples"] = so_fit, so_fit_all
    if device.type == "cuda":
        out["max_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.empty_cache()

    ref = REFERENCE.get(name, {})
    ref_note = (f"; H100 reference plain {ref['plain']:,.0f}" + (f", DANN {ref['dann']:,.0f}" if "dann" in ref else "")
                + " img/s") if ref else ""
    rows = [
        make_row(f"GPU bench ({device.type}): DANN trainer vs plain step, {label}", shiftkit=dann_fit, baseline=plain,
                 baseline_name="plain step", unit="img/s", min_ratio=GOAL_DANN_OVER_PLAIN,
                 notes=(f"DANN.training_step alone {step_rate:,.0f} img/s; SourceOnly trainer {so_fit:,.0f} img/s"
                        f"{ref_note}"), machine=machine),
    ]
    return rows, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="DANN vs plain-step img/s and loader img/s on one device")
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and images: a CPU smoke test")
    ap.add_argument("--models", nargs="*", default=None,
                    help="classifiers to run (default densenet121 resnet50; --tiny: tiny)")
    ap.add_argument("--segmenters", nargs="*", default=None,
                    help="segmenters to run (default flexibleunet-resnet34; --tiny: tiny-unet)")
    ap.add_argument("--batch", type=int, default=None, help="classification batch per domain (default 64)")
    ap.add_argument("--seg-batch", type=int, default=None, help="segmentation batch per domain (default 16)")
    ap.add_argument("--size", type=int, default=None, help="classification image side (default 224)")
    ap.add_argument("--seg-size", type=int, default=None, help="segmentation height; width is twice (default 256)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat (bare loops)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--trainer-steps", type=int, nargs=2, default=None, metavar=("SHORT", "LONG"))
    ap.add_argument("--trainer-repeats", type=int, default=None)
    ap.add_argument("--trainer-workers", type=int, default=None, help="DataLoader workers inside fit()")
    ap.add_argument("--loader-workers", type=int, default=None, help="workers of the loader check")
    ap.add_argument("--loader-batches", type=int, default=None)
    ap.add_argument("--no-loader", action="store_true")
    ap.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=None, help="where gpu.json goes (default benchmarks/results)")
    args = ap.parse_args(argv)

    missing = _missing_modules()
    if missing:
        print(f"missing modules: {missing}; install with `pip install --no-deps -e . {' '.join(missing)}` "
              "(torch must already be installed)", file=sys.stderr)
        return 3
    _light_datasets_package()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = args.tiny
    args.models = args.models if args.models is not None else (["tiny"] if tiny else ["densenet121", "resnet50"])
    args.segmenters = args.segmenters if args.segmenters is not None else (
        ["tiny-unet"] if tiny else ["flexibleunet-resnet34"])
    args.batch = args.batch or (4 if tiny else 64)
    args.seg_batch = args.seg_batch or (2 if tiny else 16)
    args.size = args.size or (32 if tiny else 224)
    args.seg_size = args.seg_size or (32 if tiny else 256)
    args.steps = args.steps or (1 if tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 5)
    args.repeats = 1 if tiny and args.repeats == 3 else args.repeats
    args.trainer_steps = args.trainer_steps or ([1, 2] if tiny else [10, 40])
    args.trainer_repeats = args.trainer_repeats or (1 if tiny else 2)
    cpus = os.cpu_count() or 1
    args.trainer_workers = args.trainer_workers if args.trainer_workers is not None else (0 if tiny else min(4, cpus))
    args.loader_workers = args.loader_workers if args.loader_workers is not None else (
        1 if tiny else max(1, min(16, cpus - 2)))
    args.loader_batches = args.loader_batches or (1 if tiny else 30)
    amp = not args.no_amp and device.type == "cuda"
    channels_last = not args.no_channels_last and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides get the same tuned kernels
    elif tiny:
        torch.set_num_threads(min(2, torch.get_num_threads()))

    info = describe_machine()
    machine = machine_line(info)
    print(f"device {device} ({machine}); bf16 autocast {amp}, channels_last {channels_last}", flush=True)
    rows: list[dict] = []
    details: dict[str, Any] = {"device": str(device), "amp_bf16": amp, "channels_last": channels_last,
                               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "backbones": []}
    t_start = time.perf_counter()
    dann_rates = []
    for name, seg in [(m, False) for m in args.models] + [(s, True) for s in args.segmenters]:
        t0 = time.perf_counter()
        try:
            r, out = bench_backbone(name, seg, args, device, amp, channels_last, machine)
        except Exception as exc:  # one backbone failing (e.g. out of memory) must not lose the others
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"{name}: FAILED {msg}", file=sys.stderr, flush=True)
            rows.append(make_row(f"GPU bench ({device.type}): {name}", shiftkit=None, unit="img/s",
                                 notes=f"failed: {msg}", machine=machine))
            details["backbones"].append({"backbone": name, "error": msg})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        out["seconds"] = round(time.perf_counter() - t0, 1)
        rows += r
        details["backbones"].append(out)
        if not seg:
            dann_rates.append((name, out["dann_trainer_img_s"], out["dann_step_img_s"]))
        print(f"{name}: plain {out['plain_img_s']:,.0f}, DANN step {out['dann_step_img_s']:,.0f}, "
              f"DANN trainer {out['dann_trainer_img_s']:,.0f}, SourceOnly trainer "
              f"{out['source_only_trainer_img_s']:,.0f} img/s ({out['seconds']} s)", flush=True)

    if not args.no_loader:
        # The loader must deliver source + target images as fast as the fastest DANN step uses them.
        need_name, need, _ = max(dann_rates, key=lambda t: t[1] if math.isfinite(t[1]) else -1) if dann_rates else (
            "?", float("nan"), None)
        loader: dict[str, Any] = {"workers": args.loader_workers, "batch": args.batch, "size": args.size}
        if importlib.util.find_spec("cv2") is None:
            note = "opencv missing (pip install opencv-python-headless): loader not measured"
            rows.append(make_row("GPU bench: data loader img/s vs DANN step", shiftkit=None, unit="img/s",
                                 notes=note, machine=machine))
            loader["error"] = note
        else:
            from shiftkit.datasets.synth.radiograph import SynthDataset

            n_items = args.batch * (args.loader_batches + 2)
            synth = SynthDataset("city", n_items, size=args.size)
            loader["synth_img_s"] = loader_rate(synth, args.batch, args.loader_workers, device,
                                                batches=args.loader_batches)
            with tempfile.TemporaryDirectory(prefix="shiftkit-gpu-bench-") as tmp:
                png = _png_dataset(Path(tmp), min(n_items, 4 * args.batch), args.size, 0)
                loader["png_img_s"] = loader_rate(png, args.batch, args.loader_workers, device,
                                                  batches=args.loader_batches)
            for kind, label in (("synth", "synthetic radiographs generated on the fly"),
                                ("png", "16-bit PNG radiographs decoded from disk")):
                rows.append(make_row(
                    f"GPU bench: loader ({label}, {args.loader_workers} workers, {args.size} px) vs DANN trainer "
                    f"({need_name})", shiftkit=loader[f"{kind}_img_s"], baseline=need, baseline_name="DANN img/s",
                    unit="img/s", min_ratio=1.0, goal="loader img/s >= DANN img/s (ratio >= 1)", machine=machine,
                    notes="ratio < 1: the loader starves the GPU at this worker count"))
            print(f"loader ({args.loader_workers} workers): synth {loader['synth_img_s']:,.0f} img/s, "
                  f"png {loader['png_img_s']:,.0f} img/s; DANN needs {need:,.0f} img/s", flush=True)
        details["loader"] = loader

    details["total_s"] = round(time.perf_counter() - t_start, 1)
    print()
    print(markdown_table(rows, with_machine=False))
    cmd = "python benchmarks/gpu_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result("gpu_tiny" if tiny else "gpu", rows, command=cmd.strip(), machine=info, extra=details,
                        out_dir=args.out_dir)
    print(f"wrote {path} ({details['total_s']} s)")
    failed = [b for b in details["backbones"] if "error" in b]
    return 1 if failed and len(failed) == len(details["backbones"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
