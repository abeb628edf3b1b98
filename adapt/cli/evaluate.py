"""`shiftkit audit` and `shiftkit gap`: evaluation for people who do not train.

A thin layer over :mod:`shiftkit.evaluation.jobs` (``audit_predictions``, ``gap_between``):
parse options, call the job, print its summary. Files (metrics.json + report.html) are written
only with ``--out``; no per-patient value is ever printed or written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from shiftkit.datasets.errors import ShiftkitError


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _split_cols(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def _show(job) -> None:
    typer.echo(job.summary())
    if job.out_dir is None:
        typer.echo("\nnothing written; add --out DIR for metrics.json and report.html")
    else:
        typer.echo(f"\nreport:  {job.report_path}\nmetrics: {job.metrics_path}")


def register(app: typer.Typer) -> None:
    @app.command()
    def audit(
        predictions: Path = typer.Argument(..., help="CSV/Parquet: one row per image with label, score, attributes"),
        sensitive: str = typer.Option(..., "--sensitive", help="comma-separated attribute columns, e.g. sex,age_band "
                                      "(age_band is derived from an age column)"),
        out: Path | None = typer.Option(None, "--out", help="folder for metrics.json and report.html "
                                        "(default: print the summary, write nothing)"),
        control: str = typer.Option("", "--control", help="comma-separated columns to take disparities within, e.g. site"),
        label_col: str = typer.Option("", "--label-col", help="0/1 label column (1 = finding); default: the one of "
                                      "label, y_true, target present"),
        score_col: str = typer.Option("", "--score-col", help="P(label = 1) column; default: the one of score, "
                                      "y_score, y_prob, proba present"),
        compare_col: str = typer.Option("", "--compare-col", help="second model's score column, audited side by side"),
        threshold: float = typer.Option(0.5, "--threshold", help="decision threshold on the score"),
        n_boot: int = typer.Option(200, "--n-boot", help="bootstrap resamples for confidence intervals"),
        min_group_size: int = typer.Option(30, "--min-group-size", help="groups below this are flagged as small"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Bias audit of saved predictions: per-group and intersectional metrics with CIs."""
        from shiftkit.evaluation.jobs import audit_predictions

        try:
            job = audit_predictions(
                predictions, _split_cols(sensitive), out=out, control=_split_cols(control),
                label_col=label_col or None, score_col=score_col or None, compare_col=compare_col or None,
                threshold=threshold, n_boot=n_boot, min_group_size=min_group_size, seed=seed)
        except ShiftkitError as exc:
            _fail(exc)
        _show(job)

    @app.command()
    def gap(
        source: Path = typer.Option(..., "--source", help="source features (.npy/.npz/.csv/.parquet/.safetensors) "
                                    "or a manifest (image statistics are computed)"),
        target: Path = typer.Option(..., "--target", help="target features or manifest"),
        out: Path | None = typer.Option(None, "--out", help="folder for metrics.json and report.html "
                                        "(default: print the summary, write nothing)"),
        source_domain: str = typer.Option("", "--source-domain", help="manifest rows of this domain only"),
        target_domain: str = typer.Option("", "--target-domain", help="manifest rows of this domain only"),
        key: str = typer.Option("", "--key", help="tensor name inside .npz/.safetensors files"),
        n_permutations: int = typer.Option(1000, "--n-permutations"),
        max_images: int = typer.Option(2000, "--max-images", help="images sampled per manifest"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Domain gap between two feature sets: MMD test, proxy A-distance, Frechet, CORAL."""
        from shiftkit.evaluation.jobs import gap_between

        try:
            job = gap_between(
                source, target, out=out, source_domain=source_domain or None, target_domain=target_domain or None,
                key=key or None, n_permutations=n_permutations, max_images=max_images, seed=seed)
        except ShiftkitError as exc:
            _fail(exc)
        _show(job)
