"""`shiftkit monitor MODEL_DIR NEW` and `shiftkit synth-stream SCENARIO --out DIR`.

monitor: watch a deployed model's incoming images batch by batch (a manifest in arrival order,
or a folder of images in name order): drift verdicts and p-values, the online alarm, label-free
accuracy estimates and the estimated prevalence, written to ``report.html`` (with a time-series
plot) and ``metrics.json``. A thin layer over :mod:`shiftkit.adapt.deploy.monitoring`.

synth-stream: write a generated stream with a known change point (``shiftkit.datasets.synth.stream``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from shiftkit.datasets.errors import DataError, ShiftkitError

_MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".gz")
#: attribute columns grouped by default when present
DEFAULT_GROUPS = ("site", "scanner", "sex", "weather", "timeofday", "scene", "domain")


def _read_new(new: Path) -> Any:
    """The incoming data as a DataFrame in arrival order (a folder: image files sorted by name)."""
    import pandas as pd

    from shiftkit.datasets import load_manifest

    if new.is_dir():
        files = sorted(p for p in new.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
                       and not p.stem.endswith("_mask"))
        if not files:
            raise DataError(f"{new}: no image files ({', '.join(_IMAGE_SUFFIXES)}) in the folder")
        return pd.DataFrame({"image": [str(p) for p in files]})
    if new.suffix.lower() not in _MANIFEST_SUFFIXES:
        raise DataError(f"{new}: expected a manifest ({', '.join(_MANIFEST_SUFFIXES)}) or a folder of images")
    return load_manifest(new)


def model_from_factory(spec: str) -> Any:
    """Build a user's network from ``package.module:function`` (imported, then called with no
    arguments; it must return the untrained ``nn.Module`` whose weights were saved). The code is
    the user's importable module; nothing is unpickled."""
    import importlib

    from torch import nn

    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise DataError(f"--model-factory {spec!r}: expected package.module:function")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise DataError(f"--model-factory {spec!r}: cannot import {mod_name!r} ({exc}); is it on PYTHONPATH?") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise DataError(f"--model-factory {spec!r}: {mod_name!r} has no function {fn_name!r}")
    try:
        net = fn()
    except Exception as exc:  # the user's code: report it as a bad argument, not a crash
        raise DataError(f"--model-factory {spec!r}: calling it failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(net, nn.Module):
        raise DataError(f"--model-factory {spec!r}: returned {type(net).__name__}, not a torch nn.Module")
    return net


def _batches(frame: Any, batch_size: int) -> list[Any]:
    if "batch" in frame.columns:
        keys = frame["batch"].to_numpy()
        starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
        return [frame.iloc[s:e] for s, e in zip(starts, starts[1:] + [len(frame)], strict=True)]
    return [frame.iloc[i:i + batch_size] for i in range(0, len(frame), batch_size)]


def _reference(predictor: Any, reference: Path | None, model_dir: Path, arl0: float, alpha: float) -> str:
    from shiftkit.adapt.deploy.monitoring import REFERENCE_FILE, load_reference, set_reference
    from shiftkit.datasets import load_manifest, read_mask

    kw = {"arl0": arl0, "alpha": alpha}
    if reference is None:
        load_reference(predictor, model_dir / REFERENCE_FILE if model_dir.is_dir() else model_dir.parent / REFERENCE_FILE,
                       **kw)
        return "saved with the model"
    if reference.suffix == ".safetensors" or reference.is_dir():
        load_reference(predictor, reference, **kw)
        return str(reference.name)
    ref = load_manifest(reference)
    labels = None
    if predictor.task == "segmentation" and "mask" in ref.columns and ref["mask"].notna().all():
        labels = np.stack([read_mask(p) for p in ref["mask"]])
    elif "label" in ref.columns and (ref["label"] >= 0).all():
        labels = ref["label"].to_numpy()
    set_reference(predictor, list(ref["image"]), labels, **kw)
    return f"{reference.name} ({len(ref)} images{', labelled' if labels is not None else ''})"


def run_monitor(model_dir: Path, new: Path, *, out: Path, reference: Path | None = None, batch_size: int = 64,
                group_by: list[str] | None = None, alpha: float = 0.05, arl0: float = 500.0,
                save_reference: bool = False, model_factory: str | None = None) -> tuple[Path, Path, dict]:
    """Monitor ``new`` batch by batch; write ``out/metrics.json`` and ``out/report.html``.

    Labels, masks and a ``shifted`` column in ``new`` are never shown to the monitor; when
    present they only score it (true accuracy per batch, detection delay). ``model_factory``
    (``package.module:function``) rebuilds a network that is not built into shiftkit.
    Returns ``(json_path, html_path, metrics)``.
    """
    from shiftkit.adapt.deploy.loading import load
    from shiftkit.adapt.deploy.monitoring import MonitorStream
    from shiftkit.adapt.deploy.monitoring import save_reference as _save_ref
    from shiftkit.evaluation.monitor import detection_delay, timeseries_figure
    from shiftkit.evaluation.report import write_report

    if batch_size < 2:
        raise DataError(f"--batch-size must be >= 2; got {batch_size}")
    predictor = load(model_dir, model=model_from_factory(model_factory) if model_factory else None)
    ref_desc = _reference(predictor, reference, Path(model_dir), arl0, alpha)
    state = predictor._monitor_state
    if save_reference:
        _save_ref(state, out)
    frame = _read_new(Path(new))
    groups = [g for g in (group_by if group_by is not None else DEFAULT_GROUPS) if g in frame.columns]
    missing = [g for g in (group_by or []) if g not in frame.columns]
    if missing:
        raise DataError(f"{new}: --group-by column(s) {missing} not in the manifest (columns: {list(frame.columns)})")
    rows: list[dict[str, Any]] = []
    change_point = None
    stream = MonitorStream(predictor)
    for b, part in enumerate(_batches(frame, batch_size)):
        if len(part) < 2:
            continue
        paths = list(part["image"])
        attrs = {g: part[g].astype(str).to_numpy() for g in groups}
        step = stream.update(paths, attributes=attrs or None)
        res = step.drift
        row: dict[str, Any] = {"batch": b, "n": res.n, "p_value": res.p_value, "p_values": res.p_values,
                               "mmd2": res.mmd2, "drift": res.drift, "cusum": res.cusum, "alarm": res.alarm,
                               "most_drifted": res.most_drifted,
                               "groups": {a: g[:3] for a, g in res.groups.items()},
                               "repeated_images": step.repeated_images}
        if step.estimates or step.prior is not None:
            # the same verdict the Python API returns: the estimators assume the shift keeps
            # calibration, and a drifted batch is where that fails
            row["estimate_trusted"] = step.trusted
            row["estimate_why"] = step.why
            for k, v in step.estimates.items():
                row[k] = v.to_dict()
            if step.prior is not None:
                row["prior"] = step.prior.prior
                row["prior_interval"] = step.prior.interval
                row["corrected_threshold"] = step.prior.threshold
        if "label" in part.columns and predictor.task == "classification" and (part["label"] >= 0).all():
            row["true_accuracy"] = float((step.proba.argmax(1) == part["label"].to_numpy()).mean())
        if "shifted" in part.columns and change_point is None and bool(part["shifted"].astype(int).any()):
            change_point = b
        rows.append(row)
    if not rows:
        raise DataError(f"{new}: no batch with at least 2 images")
    alarms = [bool(r["alarm"]) for r in rows]
    summary: dict[str, Any] = {
        "batches": len(rows), "images": int(sum(r["n"] for r in rows)), "reference": ref_desc,
        "alpha": alpha, "arl0_batches": arl0, "cusum_threshold": state.drift.h_,
        "drift_verdicts": int(sum(r["drift"] for r in rows)), "alarms": [r["batch"] for r in rows if r["alarm"]],
        "first_alarm": next((r["batch"] for r in rows if r["alarm"]), None),
    }
    if change_point is not None:
        summary["change_point (evaluation only)"] = change_point
        summary["false_alarms_before_change"] = int(sum(alarms[:change_point]))
        summary["detection_delay_batches"] = detection_delay(alarms, change_point)
    if any("true_accuracy" in r for r in rows) and any("cbpe" in r for r in rows):
        for m in ("atc", "doc", "cbpe"):
            errs = [abs(r[m]["value"] - r["true_accuracy"]) for r in rows if m in r and "true_accuracy" in r]
            summary[f"{m}_mae_vs_true (evaluation only)"] = float(np.mean(errs))
    metrics = {"monitor": summary, "batches": rows}
    fig = timeseries_figure(rows, alpha=alpha, cusum_threshold=state.drift.h_, change_point=change_point)
    json_path, html_path = write_report(out, metrics, figures={"Stream: drift, online alarm, estimates": fig},
                                        title="shiftkit monitor", auto=False)
    return json_path, html_path, metrics


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor_cmd(
        model_dir: Path = typer.Argument(..., help="saved model (folder with model.safetensors + model.json)"),
        new: Path = typer.Argument(..., help="incoming images: a manifest in arrival order, or a folder"),
        out: Path = typer.Option(Path("monitor"), "--out", help="output folder (report.html, metrics.json)"),
        reference: Path = typer.Option(None, "--reference",
                                       help="labelled reference manifest (e.g. source validation) or a saved "
                                            "monitor_reference.safetensors; default: the one saved with the model"),
        batch_size: int = typer.Option(64, "--batch-size", help="images per batch (when NEW has no 'batch' column)"),
        group_by: str = typer.Option(None, "--group-by", help="comma-separated attribute columns to attribute drift to"),
        alpha: float = typer.Option(0.05, "--alpha", help="per-batch level of the drift verdict"),
        arl0: float = typer.Option(500.0, "--arl0", help="online false-alarm budget: batches between false alarms"),
        save_reference: bool = typer.Option(False, "--save-reference",
                                            help="also write the reference to OUT/monitor_reference.safetensors"),
        model_factory: str = typer.Option(None, "--model-factory",
                                          help="package.module:function returning your untrained network, for a "
                                               "model saved from your own module (importable; never unpickled)"),
    ) -> None:
        """Monitor incoming batches for drift, estimate accuracy and prevalence without labels."""
        try:
            groups = [c.strip() for c in group_by.split(",") if c.strip()] if group_by else None
            json_path, html_path, metrics = run_monitor(model_dir, new, out=out, reference=reference,
                                                        batch_size=batch_size, group_by=groups, alpha=alpha,
                                                        arl0=arl0, save_reference=save_reference,
                                                        model_factory=model_factory)
        except ShiftkitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        s = metrics["monitor"]
        typer.echo(f"batches {s['batches']}, drift verdicts {s['drift_verdicts']}, online alarms at {s['alarms']}")
        if "detection_delay_batches" in s:
            typer.echo(f"change point {s['change_point (evaluation only)']}: detection delay "
                       f"{s['detection_delay_batches']} batches")
        typer.echo(f"report:  {html_path}\nmetrics: {json_path}")

    @app.command("synth-stream")
    def synth_stream(
        scenario: str = typer.Argument(..., help="city_to_rural, scanner_change, fog, city_to_night, prevalence"),
        out: Path = typer.Option(..., "--out", help="output folder (gets manifest.csv)"),
        batches: int = typer.Option(20, "--batches"),
        change_point: int = typer.Option(10, "--change-point", help="index of the first shifted batch"),
        batch_size: int = typer.Option(64, "--batch-size"),
        seed: int = typer.Option(0, "--seed"),
        size: int = typer.Option(None, "--size", help="radiograph size N (dashcam: N x 2N); default 32"),
    ) -> None:
        """Write a generated stream with a known change point (PNG + manifest.csv in arrival order)."""
        from shiftkit.datasets.synth.stream import SCENARIOS, export_stream

        try:
            sz = None if size is None else (size if SCENARIOS.get(scenario, SCENARIOS["fog"]).benchmark == "radiograph"
                                            else (size, 2 * size))
            manifest = export_stream(out, scenario, batches, change_point, batch_size=batch_size, seed=seed, size=sz)
        except ShiftkitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        typer.echo(f"manifest: {manifest}")
