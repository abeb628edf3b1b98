"""`shiftkit rank`: which candidate model to adapt from, scored on the target images.

    shiftkit rank --candidates zoo/city-tiny-e6 zoo/icu-tiny-e6 tiny:ckpt.safetensors \\
        timm:resnet50=resnet50.safetensors,tv:densenet121=densenet121.pth \\
        --target target.csv --out rank_out [--verify 3] [--sources sources.csv]

Writes rank_out/ranking.csv, ranking.json and ranking.png and prints the table. A thin layer
over :func:`shiftkit.adapt.harness.rank.rank_candidates`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from shiftkit.datasets.errors import ShiftkitError


def run_rank(
    candidates: list[str],
    target: Path,
    *,
    out: Path,
    verify: int = 0,
    sources: Path | None = None,
    target_domain: str | None = None,
    default_score: str | None = None,
    verify_epochs: int = 15,
    verify_seeds: int = 3,
    num_classes: int = 2,
    seed: int = 0,
):
    """The rank command as a function (CLI and tests). Returns ``(RankResult, paths)``."""
    from shiftkit.adapt.harness.rank import DEFAULT_SCORE, load_candidate, rank_candidates
    from shiftkit.datasets import ManifestDataset, load_manifest
    from shiftkit.datasets.errors import DataError

    frame = load_manifest(target)
    if target_domain is not None:
        frame = frame[frame["domain"].astype(str) == target_domain].reset_index(drop=True)
        if frame.empty:
            raise DataError(f"{target}: no rows with domain {target_domain!r}")
    tds = ManifestDataset(frame)
    c = int(tds[0]["image"].shape[0])
    # "--candidates a,b,c" and "--candidates a b c" both work
    specs = [part.strip() for spec in candidates for part in str(spec).split(",") if part.strip()]
    cands = [load_candidate(spec, num_classes=num_classes, in_channels=c) for spec in specs]
    source_sets = None
    if sources is not None:
        sframe = load_manifest(sources)
        source_sets = {}
        for cand in cands:
            rows = sframe[sframe["domain"].astype(str) == str(cand.source)] if cand.source else sframe.iloc[:0]
            if len(rows):
                source_sets[cand.name] = ManifestDataset(rows.reset_index(drop=True))
        if not source_sets:
            raise DataError(f"{sources}: no domain matches a candidate's source site "
                            f"({sorted({str(x.source) for x in cands})})")
    result = rank_candidates(cands, tds, sources=source_sets, default_score=default_score or DEFAULT_SCORE,
                             verify=verify, verify_epochs=verify_epochs, verify_seeds=tuple(range(verify_seeds)),
                             num_classes=num_classes, seed=seed)
    return result, result.write(out)


def register(app: typer.Typer) -> None:
    @app.command("rank", context_settings={"allow_extra_args": True})
    def rank_cmd(
        ctx: typer.Context,
        candidates: list[str] = typer.Option(..., "--candidates", help="model folders from save_model, "
                                             "BACKBONE:WEIGHTS, or timm:NAME=WEIGHTS / tv:NAME=WEIGHTS; comma- or "
                                             "space-separated after one --candidates"),
        target: Path = typer.Option(..., "--target", help="manifest of target images (labelled rows are scored; "
                                    "split train/val/test decides scoring vs held-out rows)"),
        out: Path = typer.Option(Path("rank_out"), "--out", help="output folder"),
        verify: int = typer.Option(0, "--verify", help="fine-tune the N top-ranked candidates and measure AUROC"),
        sources: Path | None = typer.Option(None, "--sources", help="manifest of source images; rows whose domain "
                                            "is a candidate's source site add gap columns (pad, mmd2)"),
        target_domain: str | None = typer.Option(None, "--target-domain", help="use only these target rows"),
        default_score: str | None = typer.Option(None, "--sort-by", help="column to rank by (default: the "
                                                 "project's default score)"),
        verify_epochs: int = typer.Option(15, "--verify-epochs"),
        verify_seeds: int = typer.Option(3, "--verify-seeds", help="fine-tuning seeds per candidate"),
        num_classes: int = typer.Option(2, "--num-classes", help="for BACKBONE:WEIGHTS candidates"),
    ) -> None:
        """Rank candidate source models by transferability to the target images."""
        extra = list(ctx.args)
        bad = [a for a in extra if a.startswith("-")]
        if bad:
            typer.secho(f"error: unknown option(s) {bad}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2)
        try:
            result, paths = run_rank(list(candidates) + extra, target, out=out, verify=verify, sources=sources,
                                     target_domain=target_domain, default_score=default_score,
                                     verify_epochs=verify_epochs, verify_seeds=verify_seeds, num_classes=num_classes)
        except (ShiftkitError, ValueError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        cols = [c for c in result.table.columns if c != "source"]
        typer.echo(result.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if result.agreement:
            typer.echo("weighted Kendall tau with measured AUROC: "
                       + ", ".join(f"{k} {v:.2f}" for k, v in result.agreement.items()))
        typer.echo(f"wrote {paths['csv']}, {paths['json']}, {paths['png']}")
