"""`shiftkit synth NAME --out DIR --n N`: write a procedural benchmark to disk as PNG + manifest.

A thin layer over `shiftkit.datasets.synth.<name>.export` and `...synth.preview.preview_grid`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from shiftkit.datasets.errors import ShiftkitError


def _parse_size(text: str | None) -> int | tuple[int, int] | None:
    """'64' -> 64; '128x256' -> (128, 256); None -> the benchmark's default."""
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected N or HxW, e.g. 64 or 128x256") from None
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return nums[0], nums[1]
    raise typer.BadParameter(f"{text!r}: expected N or HxW")


def register(app: typer.Typer) -> None:
    @app.command()
    def synth(
        name: str = typer.Argument(..., help="benchmark: radiograph, dashcam or digits"),
        out: Path = typer.Option(..., "--out", help="output folder (gets manifest.csv)"),
        n: int = typer.Option(100, "--n", help="images per domain"),
        domains: str = typer.Option(None, "--domains", help="comma-separated domains (default: source,target)"),
        size: str = typer.Option(None, "--size", help="N or HxW (default: 64 radiograph, 128x256 dashcam, 32 digits)"),
        seed: int = typer.Option(0, "--seed"),
        preview: bool = typer.Option(False, "--preview", help="also write preview_<domain>.png grids"),
    ) -> None:
        """Generate a synthetic benchmark (images, masks, manifest.csv) for the real-data path."""
        from shiftkit.datasets import synth as synth_pkg
        from shiftkit.datasets.synth.preview import preview_grid

        try:
            module = synth_pkg.get(name)
            doms = domains or f"{module.DEFAULT_SOURCE},{module.DEFAULT_TARGET}"
            sz = _parse_size(size)
            manifest = module.export(out, doms, n, seed=seed, size=module.DEFAULT_SIZE if sz is None else sz)
            typer.echo(f"manifest: {manifest}")
            if preview:
                for d in [x.strip() for x in doms.split(",") if x.strip()]:
                    typer.echo(f"preview:  {preview_grid(module, d, out / f'preview_{d}.png', seed=seed, size=sz)}")
        except ShiftkitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
