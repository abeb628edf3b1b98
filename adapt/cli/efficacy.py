"""`shiftkit benchmark` (the efficacy grid) and `shiftkit select` (label-free model selection)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from shiftkit.datasets.errors import ShiftkitError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _seeds(mode: str, seeds: str | None, n_seeds: int) -> list[int]:
    from shiftkit.adapt.harness.efficacy import check_seeds, seeds_for

    out = [int(s) for s in _csv(seeds)] if seeds else list(seeds_for(mode, n_seeds))
    check_seeds(mode, out)
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def benchmark(
        methods: str = typer.Option(None, "--methods", help="comma list (default: every registered method, "
                                    "finetune[frac=0.01/0.05/0.1], linear_probe, oracle, selected); 'selected' adds "
                                    "the candidate grid and the label-free choice; settings as name[key=value]"),
        benchmarks: str = typer.Option("radiograph,dashcam,digits", "--benchmarks"),
        mode: str = typer.Option("test", "--mode", help="test: TEST_DATA_SEEDS (reporting); dev: DEV_DATA_SEEDS (design)"),
        seeds: str = typer.Option(None, "--seeds", help="comma list of data seeds (default: the first --n-seeds of --mode)"),
        n_seeds: int = typer.Option(5, "--n-seeds", min=1),
        out: Path = typer.Option(None, "--out", help="default benchmarks/efficacy/<mode>[-quick]"),
        quick: bool = typer.Option(False, "--quick", help="tiny sizes (the test suite's smoke run; not a measurement)"),
        cell: int = typer.Option(None, "--cell", help="run only cell number i of the grid (e.g. $SLURM_ARRAY_TASK_ID)"),
        list_cells: bool = typer.Option(False, "--list", help="print the grid (index, benchmark, method, seed) and exit"),
        summarise_only: bool = typer.Option(False, "--summarise", help="only (re)write the table from finished cells"),
        shard: str = typer.Option(None, "--shard", help="k/n: run only the data seeds at positions k, k+n, ... "
                                  "(n shards in parallel use n cores; each seed's data is generated once per shard)"),
        model_seed: int = typer.Option(0, "--model-seed"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        mlflow: str = typer.Option(None, "--mlflow", help="log each cell as an MLflow run to this tracking URI "
                                   "(file:/path/mlruns or sqlite:///path.db)"),
        experiment: str = typer.Option("shiftkit-benchmark", "--experiment", help="MLflow experiment name"),
        tensorboard: Path = typer.Option(None, "--tensorboard", help="write TensorBoard event files per cell here"),
    ) -> None:
        """Efficacy grid: methods x benchmarks x data seeds, resumable, with a table and a plot.

        Each cell writes its own result file; finished cells are never re-run.
        """
        from shiftkit.adapt.harness import efficacy as E
        from shiftkit.adapt.methods.spec import split_specs
        from shiftkit.adapt.training.tracking import log_benchmark

        try:
            seed_list = _seeds(mode, seeds, n_seeds)
            mlist = split_specs(methods) if methods else [*E.DEFAULT_METHODS, "selected"]
            blist = _csv(benchmarks)
            cells = E.grid(mlist, blist, seed_list)
        except ShiftkitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        root = out or Path("benchmarks/efficacy") / (mode + ("-quick" if quick else ""))
        if list_cells:
            for i, c in enumerate(cells):
                typer.echo(f"{i}\t{c.benchmark}\t{c.method}\t{c.seed}")
            return
        if cell is not None:
            if not 0 <= cell < len(cells):
                typer.secho(f"error: --cell {cell}: the grid has cells 0..{len(cells) - 1}", fg=typer.colors.RED, err=True)
                raise typer.Exit(code=2)
            res = E.run_cell(cells[cell], root, quick=quick, model_seed=model_seed, mode=mode)
            typer.echo(f"cell {cell}: {cells[cell]} target {res['metric']} {res['target']:.4f}")
            log_benchmark([res], root, mlflow_uri=mlflow, experiment=experiment, tensorboard_dir=tensorboard)
            return
        if not summarise_only:
            todo = cells
            if shard is not None:
                try:
                    k, n = (int(x) for x in shard.split("/"))
                    assert 0 <= k < n
                except (ValueError, AssertionError):
                    typer.secho(f"error: --shard {shard!r}: expected k/n with 0 <= k < n", fg=typer.colors.RED, err=True)
                    raise typer.Exit(code=2) from None
                mine = set(seed_list[k::n])
                todo = [c for c in cells if c.seed in mine]
            done = E.run_grid(todo, root, quick=quick, model_seed=model_seed, mode=mode, progress=progress)
            log_benchmark(done, root, mlflow_uri=mlflow, experiment=experiment, tensorboard_dir=tensorboard)
            if shard is not None:
                return  # the table is written once every shard is done (--summarise)
        # The command that reproduces this table (rebuilt from the options, not read from argv).
        parts = ["shiftkit benchmark", "--mode", mode, "--seeds", ",".join(map(str, seed_list)), "--benchmarks",
                 ",".join(blist), "--methods", ",".join(mlist), "--out", str(root)]
        parts += (["--quick"] if quick else []) + ([f"--model-seed {model_seed}"] if model_seed else [])
        command = " ".join(shlex.quote(p) if " " not in p else p for p in parts)
        E.summarise(root, methods=mlist, benchmarks=blist, seeds=seed_list, command=command)
        log_benchmark([], root, mlflow_uri=mlflow, experiment=experiment, tensorboard_dir=tensorboard, table=True)
        typer.echo((root / "table.md").read_text())
        typer.echo(f"table: {root / 'table.md'}  {root / 'table.json'}\nplot:  {root / 'efficacy.png'}")

    @app.command("select")
    def select_command(
        out: Path = typer.Option(Path("benchmarks/efficacy/test"), "--out", help="a `shiftkit benchmark` folder"),
        benchmark: str = typer.Option("radiograph", "--benchmark"),
        seed: int = typer.Option(..., "--seed", help="data seed whose candidate cells are finished"),
        validator: str = typer.Option(None, "--validator", help="default: shiftkit.evaluation.selection.DEFAULT_VALIDATOR"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Choose a method and its settings without target labels, from finished candidate cells.

        Prints every candidate with every validator's score, each validator's choice and, since
        the embedded benchmarks have target labels, each validator's Spearman correlation with
        the true target metric and its regret.
        """
        from shiftkit.adapt.harness.efficacy import select_cells

        try:
            res = select_cells(out, benchmark, seed, validator=validator)
        except ShiftkitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        if res is None:
            typer.secho(f"error: fewer than 2 finished candidate cells for {benchmark} seed {seed} under {out}; "
                        f"run `shiftkit benchmark --methods candidates --benchmarks {benchmark} --seeds {seed}` first",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2)
        if as_json:
            typer.echo(json.dumps(res, indent=1))
            return
        vals = list(res["scores"])
        typer.echo(f"{benchmark}, data seed {seed}: {res['validator']} proposes {res['proposed']}; "
                   f"deployed: {res['chosen']} ({res['safety']['reason']})\n")
        typer.echo("candidate".ljust(32) + "".join(v[:10].rjust(11) for v in vals) + "  true target")
        for c in res["candidates"]:
            typer.echo(c.ljust(32) + "".join(f"{res['scores'][v][c]:11.4f}" for v in vals) + f"  {res['true_target'][c]:.4f}")
        typer.echo("\nvalidator   choice                            Spearman  regret")
        for v, e in res["evaluation"].items():
            typer.echo(f"{v:<11} {e['choice']:<33} {e['spearman']:8.2f}  {e['regret']:.4f}")
        typer.echo("\npolicy                  choice                            regret  gain vs source-only")
        for p, e in res["policies"].items():
            typer.echo(f"{p:<23} {e['choice']:<33} {e['regret']:.4f}  {e['gain_vs_source_only']:+.4f}")
