"""Experiment tracking: runs logged to MLflow and/or TensorBoard with their own clients.

Off unless the run config's ``tracking`` section names a destination::

    tracking:
      mlflow: file:/home/me/mlruns        # or sqlite:///home/me/mlflow.db (needs sqlalchemy)
      experiment: chest-xray-shift
      tensorboard: runs/tb                # one sub-folder per run

What a run logs (``shiftkit run``; ``shiftkit benchmark --mlflow URI --tensorboard DIR`` logs one
run per grid cell the same way):

* parameters: the resolved config, flattened to dotted keys (``train.lr``, ``model.backbone``);
* every epoch's numeric history values as metrics ``<method>/<key>`` with ``step = epoch``
  (the target scores of the trainer's per-epoch callback as the epoch ends, the rest of the
  epoch's record when the method finishes);
* the final metrics of ``metrics.json`` flattened (``<method>/target/auroc``, ...);
* artifacts: ``report.html``, ``metrics.json`` and the saved models (``models/``).

MLflow is imported only when it is used (it is slow to import); without it a clear error says
which extra to install. No server is needed: a ``file:`` store or a SQLite file is local. MLflow 3
keeps the file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; a ``file:`` URI in
the config sets it to ``true`` unless the environment already sets it. A ``sqlite:`` store needs
``sqlalchemy`` and ``alembic`` (the full ``mlflow`` package), which ``mlflow-skinny`` leaves out.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shiftkit.datasets.errors import ConfigError

__all__ = ["Tracker", "flatten", "tracker"]


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _key(name: str) -> str:
    """A metric/parameter name MLflow accepts (alphanumerics, ``_-. :/``); others become ``_``."""
    return _BAD.sub("_", name)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            import numpy as np

            if isinstance(v, np.generic) and np.issubdtype(type(v), np.number):
                v = v.item()
            else:
                return None
        except ImportError:  # pragma: no cover - numpy is a dependency
            return None
    v = float(v)
    return v if math.isfinite(v) else None


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError("tracking.mlflow", ["MLflow is not installed: pip install 'shiftkit[tracking]' "
                                              "(mlflow-skinny), or remove tracking.mlflow"]) from None
    return mlflow


class Tracker:
    """One tracked run in MLflow (``mlflow_uri``) and/or TensorBoard (``tensorboard_dir``).

    Args:
        run_name: the run's name (MLflow run name; TensorBoard sub-folder).
        mlflow_uri: MLflow tracking URI (``file:/path`` or ``sqlite:///path.db``), or ``None``.
        experiment: MLflow experiment name (created when missing).
        tensorboard_dir: parent folder of TensorBoard event files, or ``None``.
    """

    def __init__(self, run_name: str, *, mlflow_uri: str | None = None, experiment: str = "shiftkit",
                 tensorboard_dir: str | Path | None = None):
        self.run_name = run_name
        self.client: Any = None
        self.run_id: str | None = None
        self.writer: Any = None
        self._logged: set[tuple[str, int]] = set()
        if mlflow_uri:
            if str(mlflow_uri).startswith("sqlite:"):
                try:
                    import sqlalchemy  # noqa: F401
                except ImportError:
                    raise ConfigError("tracking.mlflow", [f"{mlflow_uri}: a SQLite store needs sqlalchemy and "
                                                          "alembic (pip install mlflow); a file: store needs "
                                                          "nothing more"]) from None
            elif "://" not in str(mlflow_uri) or str(mlflow_uri).startswith("file:"):
                # MLflow 3 keeps the file store in maintenance mode and refuses it unless this is
                # set; naming a file: URI in the config is the explicit opt-in (a value the user
                # set in the environment wins).
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow = _import_mlflow()
            self.client = mlflow.MlflowClient(tracking_uri=str(mlflow_uri))
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tracking.tensorboard", ["TensorBoard is not installed: pip install "
                                                           "'shiftkit[tracking]' (tensorboard), or remove "
                                                           "tracking.tensorboard"]) from None
            self.writer = SummaryWriter(log_dir=str(Path(tensorboard_dir) / run_name))

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Parameters (nested dicts are flattened to dotted keys; values as strings)."""
        flat = {_key(k): json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten(params).items()}
        if self.client is not None:
            from mlflow.entities import Param
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

            items = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in sorted(flat.items())]
            for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        if self.writer is not None:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(flat.items())), 0)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Finite numeric values of ``metrics`` (nested dicts flattened with ``/``) at ``step``."""
        flat = {_key(k): n for k, v in flatten(metrics, sep="/").items() if (n := _number(v)) is not None}
        flat = {k: v for k, v in flat.items() if (k, step) not in self._logged}
        self._logged.update((k, step) for k in flat)
        if not flat:
            return
        if self.client is not None:
            from mlflow.entities import Metric
            from mlflow.utils.validation import MAX_METRICS_PER_BATCH

            now = int(time.time() * 1000)
            items = [Metric(k, v, now, step) for k, v in sorted(flat.items())]
            for i in range(0, len(items), MAX_METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])
        if self.writer is not None:
            for k, v in flat.items():
                self.writer.add_scalar(k, v, step)

    def log_history(self, prefix: str, history: list[Mapping[str, Any]]) -> None:
        """Each epoch record of a method's ``history_`` as ``<prefix>/<key>`` at ``step = epoch``."""
        for i, rec in enumerate(history or []):
            step = int(rec.get("epoch", i + 1)) if isinstance(rec.get("epoch", 0), int) else i + 1
            self.log_metrics({prefix: {k: v for k, v in rec.items() if k != "epoch"}}, step=step)

    def epoch_callback(self, prefix: str, inner: Callable[[int, Any], dict | None] | None
                       ) -> Callable[[int, Any], dict | None]:
        """Wrap the trainer's per-epoch ``callback(epoch, model)``: what it returns is logged as the epoch ends."""

        def callback(epoch: int, model: Any) -> dict | None:
            extra = inner(epoch, model) if inner is not None else None
            if extra:
                self.log_metrics({prefix: extra}, step=epoch)
            return extra

        return callback

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a folder (recursively) into the MLflow run; TensorBoard keeps no artifacts."""
        p = Path(path)
        if self.client is None or not p.exists():
            return
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path or p.name)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run with ``status`` (``FINISHED`` / ``FAILED``) and flush TensorBoard."""
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            self.run_id = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextmanager
def tracker(section: Any, run_name: str) -> Iterator[Tracker | None]:
    """A :class:`Tracker` for a config's ``tracking`` section, or ``None`` when tracking is off.

    The run ends ``FINISHED`` when the block completes and ``FAILED`` when it raises.
    """
    if section is None or (not getattr(section, "mlflow", None) and getattr(section, "tensorboard", None) is None):
        yield None
        return
    t = Tracker(run_name, mlflow_uri=section.mlflow, experiment=section.experiment,
                tensorboard_dir=section.tensorboard)
    try:
        yield t
    except BaseException:
        t.close("FAILED")
        raise
    t.close("FINISHED")


def log_benchmark(results: list[Mapping[str, Any]], root: Path, *, mlflow_uri: str | None = None,
                  experiment: str = "shiftkit-benchmark", tensorboard_dir: str | Path | None = None,
                  table: bool = False) -> int:
    """Log ``shiftkit benchmark`` cells, one tracked run per cell; returns the number logged.

    Each run (``<benchmark>-<method>-seed<k>``) gets the cell and its settings as parameters, the
    method's per-epoch history, the cell's final metrics (``target``, ``source``,
    ``proxy_a_distance``, ``seconds``) and the cell's result file; with ``table=True`` a
    ``summary`` run holds ``table.md``, ``table.json`` and ``efficacy.png``.
    """
    from shiftkit.adapt.harness.efficacy import Cell

    if not mlflow_uri and tensorboard_dir is None:
        return 0
    n = 0
    for res in results:
        cell = dict(res["cell"])
        t = Tracker(f"{cell['benchmark']}-{cell['method']}-seed{cell['seed']}", mlflow_uri=mlflow_uri,
                    experiment=experiment, tensorboard_dir=tensorboard_dir)
        try:
            t.log_params({"cell": cell, "spec": res.get("spec", {}), "quick": res.get("quick"),
                          "model_seed": res.get("model_seed"), "metric": res.get("metric")})
            t.log_history(cell["method"], list(res.get("history") or []))
            t.log_metrics({k: res.get(k) for k in ("target", "source", "proxy_a_distance", "seconds")})
            t.log_artifact(Cell(**cell).paths(Path(root))[0])
        except BaseException:
            t.close("FAILED")
            raise
        t.close()
        n += 1
    if table:
        t = Tracker("summary", mlflow_uri=mlflow_uri, experiment=experiment, tensorboard_dir=tensorboard_dir)
        for name in ("table.md", "table.json", "efficacy.png"):
            t.log_artifact(Path(root) / name)
        t.close()
    return n
