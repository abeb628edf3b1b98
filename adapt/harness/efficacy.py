"""The efficacy harness behind `shiftkit benchmark`, `shiftkit select` and `make efficacy`.

A grid of *cells* (method x benchmark x data seed). Each cell is an independent job that
trains one method on one data seed of one embedded benchmark and writes its own result
(`cells/<benchmark>/<method>/seed<k>.json` + `.npz`, atomically); a finished cell is never
re-run, so the grid resumes after a kill and can be spread over a cluster (one cell per job,
see docs/efficacy.md). `summarise` reads whatever cells exist and writes `table.md`,
`table.json` and `efficacy.png`.

Protocol (docs/efficacy.md):

- Data seeds are not model seeds: `mode="test"` draws from ``TEST_DATA_SEEDS`` (reporting
  only), `mode="dev"` from ``DEV_DATA_SEEDS`` (every design choice) and refuses a test seed.
  The model seed is `model_seed` (0) in every cell.
- Methods never see a target label or mask: the unlabelled target set is built from images only.
- Equal budgets: every method starts from the same source-only model (trained for
  ``epochs`` with early stopping on source-validation AUROC / mIoU, so it reaches a sensible
  source score) and then gets ``adapt_epochs`` more epochs at ``lr * lr_mult``; the
  ``source_only`` row is that model trained for the same ``adapt_epochs`` on source data
  alone. The ``oracle`` trains on as many *labelled* target images as the source has, for
  ``epochs + adapt_epochs`` epochs (early-stopped on labelled target validation data: it is an
  upper bound and says so), fine-tuning a copy of the plain source model (``start=source``,
  the default; ``oracle[start=scratch]`` trains a new network instead).
- Per-seed 95 % intervals are bootstrap intervals over the target test images (sized so they
  are about +/- 0.02 or narrower); means over seeds carry a t interval.
- ``selected``: per seed, what the deployment policy
  (:data:`shiftkit.evaluation.policies.DEPLOY_POLICY`) deploys from the benchmark's pool
  (:func:`candidates_for`): one candidate, or the ensemble of some, scored from their stored
  test probabilities; nothing is re-trained for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftkit.adapt.harness.benchmarks import (
    BENCHMARKS,
    DEFAULT_METHODS,
    QUICK,
    SOURCE_RECIPE,
    BenchmarkSpec,
    _dataset,
    benchmark_data,
)
from shiftkit.adapt.harness.cells import code_hash
from shiftkit.adapt.harness.grid import (
    ORACLE,
    ORACLE_START,
    Cell,
    _method_class,
    candidates_for,
    check_method,
    check_seeds,
    grid,
    labelled_target,
    seeds_for,
    settings_of,
)
from shiftkit.adapt.methods.build import BuildContext
from shiftkit.adapt.methods.registry import BASELINE
from shiftkit.datasets.errors import ConfigError
from shiftkit.datasets.files import atomic_path, atomic_write_json, atomic_write_npz
from shiftkit.evaluation.metrics import segmentation_counts
from shiftkit.evaluation.statistics import bootstrap_ci, metric_from_stats

log = logging.getLogger("shiftkit.efficacy")

__all__ = [
    "BENCHMARKS",
    "candidates_for",
    "DEFAULT_METHODS",
    "ORACLE",
    "BenchmarkSpec",
    "Cell",
    "check_method",
    "grid",
    "labelled_target",
    "run_cell",
    "run_grid",
    "seeds_for",
    "select_cells",
    "settings_of",
    "summarise",
]


# --------------------------------------------------------------------------------------------- training


def _train_kwargs(spec: BenchmarkSpec, model_seed: int, **over: Any) -> dict[str, Any]:
    kw = dict(num_classes=spec.num_classes, task=spec.task, epochs=spec.epochs, batch_size=spec.batch_size,
              lr=spec.lr, seed=model_seed, progress=False, device="cpu" if not torch.cuda.is_available() else None,
              checkpoint_dir=None)
    kw.update(over)
    return kw


def _val_key(spec: BenchmarkSpec) -> str:
    return {"auroc": "val_auroc", "accuracy": "val_acc"}.get(spec.metric, "val_miou")


def _source_adapter(augment: str | None, strength: float) -> Any:
    """The source adapter of augmented source training (None: plain)."""
    if augment in (None, "none"):
        return None
    from shiftkit.adapt.augment.adapter import TargetStyle

    return TargetStyle(restyle=None, preset=augment, preset_strength=strength)


def pretrained_source(spec: BenchmarkSpec, seed: int, model_seed: int, cache: Path | None,
                      augment: str | None = SOURCE_RECIPE["augment"]) -> torch.nn.Module:
    """The source model every method starts from (`SOURCE_RECIPE`): ``spec.epochs`` epochs with a
    cosine learning rate, early-stopped on source-validation loss (best epoch restored),
    temperature-scaled on source validation, trained on source images augmented by the
    ``augment`` preset (None: plain, the ``source_only`` row's start). Cached as safetensors
    under ``cache`` (identical on every machine: training is deterministic on CPU)."""
    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.adapt.models.backbones import build_classifier, build_segmenter

    augment = None if augment == "none" else augment
    path = None
    if cache is not None:
        recipe = hashlib.sha1(json.dumps({**SOURCE_RECIPE, "augment": augment}, sort_keys=True).encode()).hexdigest()[:6]
        # the code that generated the data and trained the model is in the name too: a model
        # cached before a generator or training change is retrained, never reused
        path = Path(cache) / spec.name / f"{spec.key()}-{recipe}-{code_hash()}-seed{seed}-model{model_seed}.safetensors"
        if path.is_file():
            from shiftkit.adapt.training.checkpoint import load_into

            build = build_classifier if spec.task == "classification" else build_segmenter
            data = benchmark_data(spec, seed)
            model = build(spec.backbone, data["source_train"]["images"].shape[1], spec.num_classes)
            load_into(model, path)
            return model
    data = benchmark_data(spec, seed)
    adapter = _source_adapter(augment, SOURCE_RECIPE["augment_strength"])
    m = SourceOnly(spec.backbone, source_adapter=adapter,
                   **_train_kwargs(spec, model_seed, early_stopping=SOURCE_RECIPE["early_stopping"],
                                   lr_decay=SOURCE_RECIPE["lr_decay"], calibrate=SOURCE_RECIPE["calibrate"],
                                   patience=spec.patience, restore_best=True))
    m.fit(_dataset(data["source_train"], spec.task), val=_dataset(data["source_val"], spec.task))
    if path is not None:
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in m.model_.state_dict().items()}, str(tmp))
    return m.model_


class HarnessContext(BuildContext):
    """The harness's build context: every method starts from a copy of the cached source-only
    model (:func:`pretrained_source`) with the harness's training options (equal budgets:
    ``adapt_epochs`` at ``lr * lr_mult``), and takes only the settings its cell names (plus the
    benchmark's ``method_settings`` it has), the rest at its constructor's defaults."""

    def __init__(self, method: str, spec: BenchmarkSpec, start: torch.nn.Module, train: dict[str, Any],
                 settings: dict[str, Any]):
        super().__init__(name=method, config=None, num_classes=spec.num_classes,  # type: ignore[arg-type]
                         in_channels=0, run_dir=Path("."), method=method, overrides=dict(settings))
        self.spec, self.start_model, self.train = spec, start, train

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def starts_trained(self) -> bool:
        return True

    def section(self) -> Any:
        from shiftkit.adapt.methods.build import section_model

        model = section_model(_method_class(self.method))
        given = {k: v for k, v in self.spec.method_settings if k in model.model_fields} | self.overrides
        self.overrides = given
        return model.model_validate(given)

    def start(self, cls: type, section: Any) -> tuple[Any, dict[str, Any]]:
        return self.start_model, dict(self.train)

    def settings(self, cls: type, section: Any) -> dict[str, Any]:
        takes = set(cls._get_param_names())
        return {k: getattr(section, k) for k in self.overrides if k in takes}

    def backbone(self) -> Any:
        return self.start_model

    def fitted(self, name: str) -> Any:
        raise ConfigError("efficacy", [f"{self.method}: the harness starts every method from the source model"])


def build_and_fit(method: str, spec: BenchmarkSpec, seed: int, model_seed: int, cache: Path | None) -> Any:
    """Train the row a cell names; returns the fitted method (has ``predict_proba_and_features``).

    Every method is built by its own ``from_config`` in a :class:`HarnessContext`. Labelled-target
    rows (``requires.target == "labelled"``) train on the first ``frac`` x ``n_train`` labelled
    target training images only, at an equal budget in optimisation steps, not epochs: the batch
    is ``min(batch_size, k)`` and each epoch has as many steps as an unsupervised method's epoch
    (``n_train // batch_size``), the small labelled set being cycled."""
    name, params = check_method(method)
    data = benchmark_data(spec, seed)
    task = spec.task
    src = _dataset(data["source_train"], task)
    val = _dataset(data["source_val"], task)
    tgt = _dataset(data["target_unlabelled"], task, labelled=False)
    if name == ORACLE:
        # As many labelled target images as the source has, the whole budget, early-stopped on
        # labelled target validation data: an upper bound, not a deployable result.
        start = params.get("start", ORACLE_START)  # checked by check_method
        net = (spec.backbone if start == "scratch"
               else copy.deepcopy(pretrained_source(spec, seed, model_seed, cache, augment=None)))
        m = _method_class(BASELINE)(net, **_train_kwargs(
            spec, model_seed, epochs=spec.epochs + spec.adapt_epochs, early_stopping=SOURCE_RECIPE["early_stopping"],
            lr_decay=SOURCE_RECIPE["lr_decay"], patience=spec.patience, restore_best=True))
        return m.fit(_dataset(data["target_train"], task), val=_dataset(data["target_val"], task))
    cls = _method_class(name)
    lr_mult = params.pop("lr_mult", spec.lr_mult)
    kw = _train_kwargs(spec, model_seed, epochs=spec.adapt_epochs, lr=spec.lr * lr_mult)
    labelled = cls.requires.target == "labelled"
    if labelled:
        k = max(1, round(params.pop("frac", cls.labelled_fraction) * spec.n_train))  # checked by check_method
        part = {key: v[:k] for key, v in data["target_train"].items()}  # the generator's draws are i.i.d.
        kw.update(batch_size=min(spec.batch_size, k), steps_per_epoch=max(1, spec.n_train // spec.batch_size))
    # `augment`: the preset of the source model the row starts from. Plain `source_only` is the
    # baseline (plain start, plain fine-tuning); `source_only[augment=photometric]` also fine-tunes
    # with the preset; every other row starts from the augmented source model (SOURCE_RECIPE).
    augment = params.pop("augment", None if name == BASELINE else SOURCE_RECIPE["augment"])
    start = copy.deepcopy(pretrained_source(spec, seed, model_seed, cache, augment=augment))
    m = cls.from_config(HarnessContext(name, spec, start, kw, params))
    if name == BASELINE and augment not in (None, "none"):
        m.source_adapter = _source_adapter(augment, SOURCE_RECIPE["augment_strength"])
    if labelled:
        return m.fit(None, _dataset(part, task), val=val)
    if m.requires.source == "none":
        return m.fit(None, tgt, val=val)  # source-free: the trained source model and the target only
    return m.fit(src, tgt, val=val)


# --------------------------------------------------------------------------------------------- scoring


def _score(method: Any, part: dict[str, np.ndarray], spec: BenchmarkSpec) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    from shiftkit.adapt.training.data import ArrayDataset

    proba, feats = method.predict_proba_and_features(ArrayDataset(part["images"]), batch_size=256)
    if spec.metric == "accuracy":
        return {"label": part["labels"].astype(np.int8), "pred": proba.argmax(1).astype(np.int8)}, proba, feats
    if spec.task == "classification":
        return {"label": part["labels"].astype(np.int8), "score": proba[:, 1].astype(np.float32)}, proba, feats
    return {"counts": segmentation_counts(part["masks"], proba.argmax(1), spec.num_classes)}, proba, feats


def _ensemble_arrays(role: str, part: dict[str, np.ndarray], proba: np.ndarray, spec: BenchmarkSpec) -> dict[str, np.ndarray]:
    """What the table needs to score the candidates' ensemble (averaged probabilities) where the
    per-image statistics do not average (accuracy: hard predictions; segmentation: counts).
    ``ens_<role>_proba``: (n, K) float16, or (n, K, H, W) uint8 (probability x 255, rounded: the
    argmax of an average of 10-20 candidates moves on a tie only); segmentation also keeps the
    masks (n, H, W) uint8. Binary AUROC cells store the positive-class score, which averages."""
    if spec.metric == "accuracy":
        return {f"ens_{role}_proba": proba.astype(np.float16)}
    if spec.task == "segmentation":
        return {f"ens_{role}_proba": np.rint(np.clip(proba, 0, 1) * 255).astype(np.uint8),
                f"ens_{role}_mask": part["masks"].astype(np.uint8)}
    return {}


#: The source-domain health columns of a cell and of the table (classification).
_HEALTH = ("accuracy", "balanced_accuracy", "auroc", "ece")


def _source_scores(spec: BenchmarkSpec, part: dict[str, np.ndarray], proba: np.ndarray) -> dict[str, float]:
    """How healthy the model is on its own domain: source-test accuracy, balanced accuracy, AUROC
    and ECE (15 bins) for classification; nothing for segmentation."""
    if spec.task != "classification":
        return {}
    from shiftkit.evaluation.metrics import classification_metrics

    m = classification_metrics(part["labels"], proba, include_reliability=False)
    return {k: float(m[k]) for k in _HEALTH}


def _selection_outputs(method: Any, spec: BenchmarkSpec, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """What the label-free validators need (shiftkit.evaluation.selection.CandidateOutputs), as arrays."""
    from shiftkit.adapt.harness.auto_select import candidate_outputs

    out = candidate_outputs(method, _dataset(data["source_val"], spec.task),
                            _dataset(data["source_train"], spec.task, labelled=False),
                            _dataset(data["target_unlabelled"], spec.task, labelled=False), spec.task, spec.num_classes)
    return out.to_arrays()


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, indent=1, default=float)


def cell_key_of(cell: Cell, *, quick: bool = False, model_seed: int = 0) -> tuple[str, dict[str, Any]]:
    """``(key, resolved settings)`` of a cell under the current code (adapt/harness/cells.py):
    a finished cell is reused only when it carries this key."""
    from shiftkit.adapt.harness.cells import cell_key, resolved_settings

    spec = (QUICK if quick else BENCHMARKS)[cell.benchmark]
    name, params = check_method(cell.method)
    accepted = settings_of(name)
    settings = resolved_settings(name, params, accepted)
    if "lr_mult" in accepted:
        settings.setdefault("lr_mult", spec.lr_mult)
    if name == ORACLE:
        settings.setdefault("start", ORACLE_START)
    return cell_key(spec.key(), name, settings, quick=quick, model_seed=model_seed), settings


def _cell_done(cell: Cell, root: Path, key: str) -> bool:
    js, npz = cell.paths(root)
    if js.is_file() and not npz.is_file():
        # The per-cell arrays are not committed (.gitignore): a checkout with only the JSON
        # must re-run the cell to get the arrays the table's paired intervals and selection need.
        log.warning("%s: no %s beside it; the cell is re-run", js, npz.name)
    if not (js.is_file() and npz.is_file()):
        return False
    try:
        done = json.loads(js.read_text()).get("cell_key") == key
    except (OSError, ValueError):
        return False
    if not done:
        log.warning("%s: computed by other code or settings (cell key differs); the cell is re-run", js)
    return done


def run_cell(cell: Cell, root: Path, *, quick: bool = False, model_seed: int = 0,
             mode: str = "test") -> dict[str, Any]:
    """Train and score one cell; write ``<root>/cells/...json`` and ``.npz`` (atomically).

    A cell already written by the same code with the same resolved settings (its
    :func:`cell_key_of`) is read back, not re-run; any other is re-run."""
    check_seeds(mode, [cell.seed])
    spec = (QUICK if quick else BENCHMARKS)[cell.benchmark]
    js, npz = cell.paths(root)
    key, settings = cell_key_of(cell, quick=quick, model_seed=model_seed)
    if _cell_done(cell, root, key):
        return json.loads(js.read_text())
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    started, cpu = time.perf_counter(), time.process_time()
    data = benchmark_data(spec, cell.seed)
    method = build_and_fit(cell.method, spec, cell.seed, model_seed, Path(root) / "cache")
    t_stats, t_proba, f_t = _score(method, data["target_test"], spec)
    s_stats, s_proba, f_s = _score(method, data["source_test"], spec)
    from shiftkit.evaluation.gap import proxy_a_distance

    # The scale-free gap measure: comparable across methods although each has its own feature
    # space (MMD^2 is not). 500 images per domain, a linear domain classifier, held-out error.
    pad = proxy_a_distance(f_s[:500], f_t[:500], seed=0)["proxy_a_distance"]
    arrays = {f"target_{k}": v for k, v in t_stats.items()} | {f"source_{k}": v for k, v in s_stats.items()}
    arrays |= {f"sel_{k}": v for k, v in _selection_outputs(method, spec, data).items()}
    arrays |= _ensemble_arrays("target", data["target_test"], t_proba, spec)
    arrays |= _ensemble_arrays("source", data["source_test"], s_proba, spec)
    lo, hi = bootstrap_ci(t_stats)
    result = {
        "cell": asdict(cell), "cell_key": key, "settings": settings, "spec_key": spec.key(), "spec": {k: v for k, v in asdict(spec).items() if k != "provenance"},
        "quick": quick, "model_seed": model_seed, "metric": spec.metric,
        "target": metric_from_stats(t_stats), "target_ci": [lo, hi], "source": metric_from_stats(s_stats), "proxy_a_distance": pad,
        "source_scores": _source_scores(spec, data["source_test"], s_proba),
        "n_target_test": spec.n_test, "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "history": [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in method.history_],
    }
    atomic_write_npz(npz, arrays)
    _atomic_json(js, result)  # written last: its presence marks the cell done
    return result


def run_grid(cells: Sequence[Cell], root: Path, *, quick: bool = False, model_seed: int = 0, mode: str = "test",
             progress: bool = True) -> list[dict[str, Any]]:
    """Run every unfinished cell in order (a tqdm bar counts done/total); return their results."""
    from tqdm.auto import tqdm

    check_seeds(mode, {c.seed for c in cells})
    out = []
    bar = tqdm(cells, desc="efficacy cells", disable=not progress, unit="cell")
    for cell in bar:
        bar.set_postfix_str(f"{cell.benchmark} {cell.method} seed {cell.seed}")
        out.append(run_cell(cell, root, quick=quick, model_seed=model_seed, mode=mode))
    return out


# The table (summarise, select_cells, render_markdown, plot_table) lives in efficacy_table.py:
# it reads finished cells and never changes a cell's result, so it is outside the code hash.
from shiftkit.adapt.harness.table import plot_table, render_markdown, select_cells, summarise  # noqa: E402, F401
