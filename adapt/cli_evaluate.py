"""`shiftkit audit` and `shiftkit gap`: evaluation for people who do not train.

audit: a bias audit of a predictions table (one row per image: label, score, attributes).
gap:   a domain-gap test between two feature files, or two manifests (image statistics).
Both write metrics.json + report.html into --out and print a terminal summary; no
per-patient value is ever written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from shiftkit.datasets.errors import DataError, ShiftkitError

_MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _split_cols(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def run_audit(
    predictions: Path,
    *,
    sensitive: list[str],
    out: Path,
    control: list[str] | None = None,
    label_col: str = "label",
    score_col: str = "score",
    compare_col: str | None = None,
    threshold: float = 0.5,
    n_boot: int = 200,
    min_group_size: int = 30,
    seed: int = 0,
) -> tuple[dict, Path]:
    """The audit command as a function (used by the CLI and tests). Returns (metrics, html)."""
    from shiftkit.evaluation import bias, loaders, report

    frame = loaders.load_table(predictions)
    kw = dict(label_col=label_col, threshold=threshold, control=control, n_boot=n_boot,
              min_group_size=min_group_size, seed=seed)
    first = bias.audit(frame, sensitive, score_col=score_col, **kw)
    warnings = list(first.warnings)
    if compare_col:
        second = bias.audit(frame, sensitive, score_col=compare_col, **kw)
        section = bias.compare_audits({score_col: first, compare_col: second})
        warnings += [f"[{compare_col}] {w}" for w in second.warnings]
        warnings += [f"disparity widened beyond its CI with {compare_col}: {w}" for w in section["widened_beyond_ci"]]
    else:
        section = first.to_dict()
    metrics = {
        "run": {"command": "audit", "predictions": predictions.name, "rows": int(len(frame)),
                "sensitive": ",".join(sensitive), "control": ",".join(control or []),
                "label_col": label_col, "score_col": score_col, "compare_col": compare_col or "",
                "threshold": threshold, "n_boot": n_boot, "min_group_size": min_group_size},
        "bias": section,
        "warnings": warnings,
    }
    _, html_path = report.write_report(out, metrics, title="shiftkit bias audit")
    return metrics, html_path


def _is_manifest(path: Path) -> bool:
    if path.suffix.lower() not in _MANIFEST_SUFFIXES:
        return False
    from shiftkit.evaluation.loaders import load_table

    return "image" in load_table(path).columns


def _manifest_features(path: Path, domain: str | None, max_images: int, seed: int) -> tuple:
    """Image-statistics features of (a sample of) the images a manifest lists."""
    import numpy as np

    from shiftkit.datasets import load_manifest, read_image
    from shiftkit.datasets.progress import progress_bar
    from shiftkit.evaluation.loaders import image_statistics_features

    frame = load_manifest(path)
    if domain is not None:
        if domain not in set(frame["domain"].astype(str)):
            raise DataError(f"{path}: no rows with domain {domain!r}; domains are "
                            f"{sorted(set(frame['domain'].astype(str)))}")
        frame = frame[frame["domain"].astype(str) == domain]
    if len(frame) > max_images:
        frame = frame.sample(n=max_images, random_state=seed)
    feats = [image_statistics_features(read_image(p))
             for p in progress_bar(frame["image"], desc=f"image statistics {path.name}")]
    return np.stack(feats), len(frame)


def run_gap(
    source: Path,
    target: Path,
    *,
    out: Path,
    source_domain: str | None = None,
    target_domain: str | None = None,
    key: str | None = None,
    n_permutations: int = 1000,
    max_images: int = 2000,
    seed: int = 0,
) -> tuple[dict, Path]:
    """The gap command as a function. Returns (metrics, html path)."""
    from shiftkit.evaluation import gap, loaders, plots, report

    kinds = []
    arrays = []
    for path, domain in ((source, source_domain), (target, target_domain)):
        if _is_manifest(path):
            feats, _ = _manifest_features(path, domain, max_images, seed)
            kinds.append("image statistics (manifest)")
        else:
            if domain is not None:
                raise DataError(f"{path}: --source-domain/--target-domain apply to manifests only")
            feats = loaders.load_features(path, key=key)
            kinds.append("features file")
        arrays.append(feats)
    xs, xt = arrays
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"{source} has {xs.shape[1]} feature columns but {target} has {xt.shape[1]}")
    summary = gap.gap_summary(xs, xt, n_permutations=n_permutations, seed=seed)
    warnings = []
    if "image statistics (manifest)" in kinds:
        warnings.append("features are simple image statistics (intensity, percentiles, sharpness, noise) computed "
                        "from the manifests' images: they see acquisition shift, not what a model sees; export "
                        "model features to .npy/.safetensors for that")
    if summary["mmd_p_value"] <= 0.05 and summary["coral"] < 1e-3 * max(summary["frechet"], 1e-12):
        warnings.append("the domains differ mainly in their means: covariance-only measures (CORAL) miss this")
    metrics = {
        "run": {"command": "gap", "source": source.name, "target": target.name,
                "source_domain": source_domain or "", "target_domain": target_domain or "",
                "features": " / ".join(dict.fromkeys(kinds)), "n_permutations": n_permutations, "seed": seed},
        "gap": {"source_vs_target": summary},
        "warnings": warnings,
    }
    figs = {"Features coloured by domain (PCA)": plots.embedding_figure({"source vs target": (xs, xt)}, seed=seed)}
    _, html_path = report.write_report(out, metrics, figures=figs, title="shiftkit domain gap")
    return metrics, html_path


def register(app: typer.Typer) -> None:
    @app.command()
    def audit(
        predictions: Path = typer.Argument(..., help="CSV/Parquet: one row per image with label, score, attributes"),
        sensitive: str = typer.Option(..., "--sensitive", help="comma-separated attribute columns, e.g. sex,age_band "
                                      "(age_band is derived from an age column)"),
        out: Path = typer.Option(..., "--out", help="folder for metrics.json and report.html"),
        control: str = typer.Option("", "--control", help="comma-separated columns to take disparities within, e.g. site"),
        label_col: str = typer.Option("label", "--label-col", help="0/1 label column (1 = finding)"),
        score_col: str = typer.Option("score", "--score-col", help="P(label = 1) column"),
        compare_col: str = typer.Option("", "--compare-col", help="second model's score column, audited side by side"),
        threshold: float = typer.Option(0.5, "--threshold", help="decision threshold on the score"),
        n_boot: int = typer.Option(200, "--n-boot", help="bootstrap resamples for confidence intervals"),
        min_group_size: int = typer.Option(30, "--min-group-size", help="groups below this are flagged as small"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Bias audit of saved predictions: per-group and intersectional metrics with CIs."""
        from shiftkit.evaluation.report import terminal_summary

        try:
            metrics, html_path = run_audit(
                predictions, sensitive=_split_cols(sensitive), out=out, control=_split_cols(control),
                label_col=label_col, score_col=score_col, compare_col=compare_col or None, threshold=threshold,
                n_boot=n_boot, min_group_size=min_group_size, seed=seed)
        except ShiftkitError as exc:
            _fail(exc)
        typer.echo(terminal_summary(metrics))
        typer.echo(f"\nreport:  {html_path}\nmetrics: {html_path.parent / 'metrics.json'}")

    @app.command()
    def gap(
        source: Path = typer.Option(..., "--source", help="source features (.npy/.npz/.csv/.parquet/.safetensors) "
                                    "or a manifest (image statistics are computed)"),
        target: Path = typer.Option(..., "--target", help="target features or manifest"),
        out: Path = typer.Option(..., "--out", help="folder for metrics.json and report.html"),
        source_domain: str = typer.Option("", "--source-domain", help="manifest rows of this domain only"),
        target_domain: str = typer.Option("", "--target-domain", help="manifest rows of this domain only"),
        key: str = typer.Option("", "--key", help="tensor name inside .npz/.safetensors files"),
        n_permutations: int = typer.Option(1000, "--n-permutations"),
        max_images: int = typer.Option(2000, "--max-images", help="images sampled per manifest"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Domain gap between two feature sets: MMD test, proxy A-distance, Frechet, CORAL."""
        from shiftkit.evaluation.report import terminal_summary

        try:
            metrics, html_path = run_gap(
                source, target, out=out, source_domain=source_domain or None, target_domain=target_domain or None,
                key=key or None, n_permutations=n_permutations, max_images=max_images, seed=seed)
        except ShiftkitError as exc:
            _fail(exc)
        typer.echo(terminal_summary(metrics))
        typer.echo(f"\nreport:  {html_path}\nmetrics: {html_path.parent / 'metrics.json'}")
