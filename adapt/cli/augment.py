"""`shiftkit augment preview`: a PNG grid of augmentations to check them by eye."""

from __future__ import annotations

from pathlib import Path

import typer

from shiftkit.datasets.errors import ShiftkitError

_PRESET_FOR = {"radiograph": "radiograph_acquisition", "dashcam": "driving_conditions"}


def run_preview(*, out: Path, benchmark: str | None = None, manifest: Path | None = None,
                source_domain: str | None = None, target_domain: str | None = None,
                preset: str | None = None, strengths: tuple[float, ...] = (0.25, 0.5, 1.0),
                restyle: str = "mixed", n: int = 4, size: int = 96, seed: int = 0) -> Path:
    """The preview command as a function (CLI and tests). Returns the PNG path."""
    import numpy as np

    from shiftkit.adapt.augment import get_preset, load_target_pool, target_restyle
    from shiftkit.adapt.augment.preview import benchmark_images, preview_grid, render_preview
    from shiftkit.datasets.errors import DataError

    if (benchmark is None) == (manifest is None):
        raise DataError("give exactly one of --benchmark or --manifest")
    if benchmark is not None:
        if benchmark not in _PRESET_FOR:
            raise DataError(f"--benchmark must be one of {sorted(_PRESET_FOR)}, got {benchmark!r}")
        data = benchmark_images(benchmark, n, size=size, seed=seed)
        images, masks, targets = data["images"], data["masks"], data["targets"]
        pair = f"{data['source']} -> {data['target']}"
        preset = preset or _PRESET_FOR[benchmark]
    else:
        from shiftkit.datasets import load_manifest, read_image, read_mask

        frame = load_manifest(manifest)
        domains = list(dict.fromkeys(frame["domain"].astype(str)))
        source_domain = source_domain or domains[0]
        if target_domain is None and len(domains) > 1:
            target_domain = [d for d in domains if d != source_domain][0]
        src = frame[frame["domain"] == source_domain].head(n)
        if len(src) == 0:
            raise DataError(f"{manifest}: no rows for source domain {source_domain!r} (domains: {domains})")
        images = [np.ascontiguousarray(read_image(p).transpose(1, 2, 0)) for p in src["image"]]
        masks = ([read_mask(p) if isinstance(p, str) and p else None for p in src["mask"]]
                 if "mask" in src.columns else [None] * len(images))
        targets = (load_target_pool(manifest, domain=target_domain, max_images=64, seed=seed)
                   if target_domain else [])
        pair = f"{source_domain} -> {target_domain or '(no target domain)'}"
        if preset is None:
            preset = "radiograph_acquisition" if images[0].shape[-1] == 1 else "driving_conditions"
    side = int(np.mean([max(im.shape[:2]) for im in images]))
    columns: list = [("original", None)]
    columns += [(f"{preset} s={s:g}", get_preset(preset, s, image_size=side, seed=seed)) for s in strengths]
    if len(targets):
        columns.append((f"restyled ({restyle})", target_restyle(targets, method=restyle, seed=seed)))
    titles, rows = preview_grid(images, masks, columns, targets=targets, seed=seed)
    return render_preview(out, titles, rows, suptitle=f"{pair}: {preset}; mask outlines follow spatial transforms")


def register(app: typer.Typer) -> None:
    """Add `shiftkit augment preview`."""
    group = typer.Typer(help="Augmentation presets and target-style restyling.", no_args_is_help=True)

    @group.command("preview")
    def preview(
        out: Path = typer.Option(Path("augment-preview.png"), "--out", help="PNG file to write."),
        benchmark: str | None = typer.Option(None, "--benchmark", help="radiograph or dashcam (embedded)."),
        manifest: Path | None = typer.Option(None, "--manifest", help="A manifest CSV/Parquet instead."),
        source_domain: str | None = typer.Option(None, "--source", help="Manifest source domain."),
        target_domain: str | None = typer.Option(None, "--target", help="Manifest target domain (restyle pool)."),
        preset: str | None = typer.Option(None, "--preset", help="radiograph_acquisition or driving_conditions."),
        strengths: str = typer.Option("0.25,0.5,1", "--strengths", help="Comma-separated strengths in [0, 1]."),
        restyle: str = typer.Option("mixed", "--restyle", help="fda, histogram, pda or mixed."),
        n: int = typer.Option(4, "--n", min=1, max=32, help="Source images (rows)."),
        size: int = typer.Option(96, "--size", min=16, max=1024, help="Benchmark image side in pixels."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Write a PNG grid: originals, preset samples at several strengths, target-restyled
        versions and a target example, with mask outlines."""
        try:
            values = tuple(float(v) for v in strengths.split(",") if v.strip())
            path = run_preview(out=out, benchmark=benchmark, manifest=manifest, source_domain=source_domain,
                               target_domain=target_domain, preset=preset, strengths=values, restyle=restyle,
                               n=n, size=size, seed=seed)
        except (ShiftkitError, ValueError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        typer.echo(f"wrote {path}")

    app.add_typer(group, name="augment")
