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
  upper bound and says so).
- Per-seed 95 % intervals are bootstrap intervals over the target test images (sized so they
  are about +/- 0.02 or narrower); means over seeds carry a t interval.
- ``selected``: per seed, the candidate of the benchmark's pool (:func:`candidates_for`) that
  the label-free validator (:data:`shiftkit.evaluation.selection.DEFAULT_VALIDATOR`) prefers,
  after the safety rule (:func:`shiftkit.evaluation.selection.safe_choice`); nothing is
  re-trained for it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftkit.adapt.build import BuildContext
from shiftkit.adapt.methods.registry import BASELINE, HARNESS_METHODS
from shiftkit.adapt.methods.spec import parse_spec, slug
from shiftkit.datasets.errors import ConfigError
from shiftkit.datasets.files import atomic_path, atomic_write_json, atomic_write_npz
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS
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


@dataclass(frozen=True)
class BenchmarkSpec:
    """Sizes and training budget of one embedded benchmark in the harness.

    ``n_train`` labelled source images, as many unlabelled target images (and as many labelled
    target images for the oracle); ``n_val`` labelled source validation images; ``n_test``
    target test images (large: they set the width of the per-seed interval) and
    ``n_source_test`` source test images. ``provenance`` says how each setting was chosen.
    """

    name: str
    task: str
    source: str
    target: str
    size: int | tuple[int, int]
    backbone: str
    num_classes: int
    metric: str
    n_train: int
    n_val: int
    n_test: int
    n_source_test: int
    epochs: int
    adapt_epochs: int
    batch_size: int
    lr: float
    lr_mult: float = 0.25
    patience: int = 3
    provenance: tuple[tuple[str, str], ...] = ()
    #: Settings the benchmark gives every method whose config section has them, in place of the
    #: constructor's default (``(("out_disc_width", 32),)``); a cell's own settings win.
    method_settings: tuple[tuple[str, Any], ...] = ()

    def key(self) -> str:
        """Short hash of the settings: a cell made under other settings is not reused."""
        d = asdict(self)
        d.pop("provenance")
        d.pop("method_settings")  # the values the harness always used: cells made before stay valid
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


_PROV = (
    ("n_test", "dev data: radiograph 4,000 from the Hanley-McNeil AUROC variance (n ~ 3,300 for +/- 0.02 at "
               "AUROC 0.6, prevalence 0.4), confirmed on dev seeds 100-101 (+/- 0.015-0.018); dashcam 600 gave "
               "+/- 0.003-0.005 for source-only and adapted models (the oracle up to +/- 0.037: rare classes)"),
    ("n_train", "cost: the largest training set that fits the grid in about an hour on 2 cores"),
    ("epochs", "dev data: source-only early-stopped on source validation (patience 3, best epoch restored); "
               "the equal-budget source-only epochs after it move source-val AUROC / mIoU by +0.01 to +0.02 "
               "on dev seeds 100-101 (near its plateau; source test AUROC 0.76-0.81, mIoU 0.73-0.83)"),
    ("adapt_epochs", "literature/cost: DANN-style fine-tuning of a trained source model, a few epochs"),
    ("lr_mult", "dann.lr_mult default of the run config (see adapt/config.py provenance)"),
    ("batch_size, lr", "literature: AdamW defaults for small CNNs (1e-3 classification; 3e-3 tiny UNet)"),
    ("method_settings", "cost: dashcam's output-space discriminator starts at width 32 (half ADVENT's 64) "
                        "for the 32x64 images of the harness"),
)

_PROV_DIGITS = (
    ("source, target", "the real-image benchmark's default pair (scikit-learn's handwritten digits through a "
                       "scanner vs a phone camera; datasets/synth/digits.py)"),
    ("n_train", "data: the 1,797 digits give 539 distinct training digits per domain side; 600 draws each "
                "(new poses beyond that), as many labelled target draws for the oracle"),
    ("n_val", "data: 200 of the 270-digit validation pool"),
    ("n_test", "data: 1,500 draws of the 449-digit test pool (about 3 poses per digit); the per-seed interval "
               "covers pose and model noise, the spread over data seeds (other pools) the choice of digits"),
    ("epochs", "dev data (seeds 100-101, SOURCE_RECIPE): camera accuracy source-only 0.165 / 0.157, ERM + "
               "photometric 0.211 / 0.255, oracle 0.483 / 0.556 (still rising at 14 epochs: the upper bound under "
               "this budget, not the task's ceiling); source-test accuracy of source-only 0.87, ECE 0.06"),
    ("adapt_epochs", "literature/cost: as radiograph, a few epochs of fine-tuning from the source model"),
    ("lr_mult", "dann.lr_mult default of the run config (see adapt/config.py provenance)"),
    ("batch_size, lr", "literature: AdamW defaults for small CNNs (1e-3 classification)"),
)

#: The full profile (`make efficacy`). Sizes from `_PROV`; the quick profile is the test suite's.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    "radiograph": BenchmarkSpec(
        name="radiograph", task="classification", source="city", target="rural", size=64, backbone="tiny",
        num_classes=2, metric="auroc", n_train=480, n_val=160, n_test=4000, n_source_test=1000,
        epochs=8, adapt_epochs=4, batch_size=32, lr=1e-3, provenance=_PROV),
    "dashcam": BenchmarkSpec(
        name="dashcam", task="segmentation", source="urban_day", target="rural_day", size=(32, 64),
        backbone="tiny-unet", num_classes=9, metric="miou", n_train=300, n_val=100, n_test=600,
        n_source_test=300, epochs=6, adapt_epochs=3, batch_size=16, lr=3e-3, provenance=_PROV,
        method_settings=(("out_disc_width", 32),)),
    "digits": BenchmarkSpec(
        name="digits", task="classification", source="scanner", target="camera", size=32, backbone="tiny",
        num_classes=10, metric="accuracy", n_train=600, n_val=200, n_test=1500, n_source_test=500,
        epochs=10, adapt_epochs=4, batch_size=32, lr=1e-3, provenance=_PROV_DIGITS),
}
QUICK: dict[str, BenchmarkSpec] = {
    "radiograph": replace(BENCHMARKS["radiograph"], n_train=96, n_val=48, n_test=400, n_source_test=100,
                          epochs=2, adapt_epochs=1, size=32),
    "dashcam": replace(BENCHMARKS["dashcam"], n_train=48, n_val=24, n_test=48, n_source_test=24,
                       epochs=2, adapt_epochs=1, size=(32, 32)),
    "digits": replace(BENCHMARKS["digits"], n_train=96, n_val=48, n_test=200, n_source_test=100,
                      epochs=2, adapt_epochs=1, size=16),
}

#: The recipe of the source model every method starts from (and of the oracle): cosine decay of
#: the learning rate, early stopping on source-validation cross-entropy (the best-calibrated
#: epoch, best restored), and (source model only) the photometric augmentation preset: ERM +
#: strong augmentation. How each was chosen: `SOURCE_RECIPE_PROVENANCE`.
SOURCE_RECIPE: dict[str, Any] = {"lr_decay": "cosine", "early_stopping": "val_loss", "augment": "photometric",
                                 "augment_strength": 0.5, "calibrate": True}
SOURCE_RECIPE_PROVENANCE: dict[str, str] = {
    "lr_decay": "dev data (demo recipe, radiograph dev seeds 100-101; see train.lr_decay in adapt/config.py)",
    "early_stopping": "dev data (demo recipe, seed 100): best source-val AUROC restored an epoch with source-test "
                      "ECE 0.23; see train.early_stopping_metric in adapt/config.py",
    "augment": "literature: ERM + strong augmentation, the baseline most adaptation methods fail to beat (WILDS "
               "2.0); the plain `source_only` row keeps the gain of augmentation itself visible",
    "augment_strength": "convention: the photometric preset's own default strength",
    "calibrate": "literature: temperature scaling on source validation (Guo et al. 2017); see train.calibrate",
}


#: What `make efficacy` runs (every registered method, each with its own defaults; `selected` is
#: computed from the candidate cells, not trained). Methods that cannot do a benchmark's task
#: (their `check_params` says so, e.g. CDAN on segmentation) are left out of that benchmark's grid.
#: Beside the plain baseline, the baseline trained with the source recipe's augmentation preset
#: (ERM + strong augmentation, the model every other row starts from).
DEFAULT_METHODS: tuple[str, ...] = (HARNESS_METHODS[0], f"{BASELINE}[augment={SOURCE_RECIPE['augment']}]",
                                    *HARNESS_METHODS[1:])

def candidates_for(benchmark: str) -> tuple[str, ...]:
    """The label-free selection's candidates on ``benchmark``: every registered label-free method
    that can do its task, with the settings grid each method declares
    (:func:`shiftkit.adapt.candidates.candidate_pool`; the same pool ``auto`` uses)."""
    from shiftkit.adapt.candidates import candidate_pool

    spec = BENCHMARKS[benchmark]
    return candidate_pool(spec.task, num_classes=spec.num_classes, backbone=spec.backbone)


#: The harness's own row: the baseline method trained on as many *labelled* target images as
#: the source has (an upper bound, not a method).
ORACLE = "oracle"
#: Settings of the harness's recipe, taken by every row: ``lr_mult`` (adaptation learning rate
#: relative to the benchmark's) and, for labelled-target rows, ``frac`` (share of the labelled
#: target images).
RECIPE_SETTINGS = frozenset({"lr_mult", "augment"})
LABELLED_SETTINGS = frozenset({"frac"})


def _method_class(name: str) -> Any:
    from shiftkit.adapt.methods.registry import get_method

    return get_method(name)


def labelled_target(row: str) -> bool:
    """Whether a row trains on labelled target images (the oracle, the few-label references)."""
    name = row.split("[")[0]
    if name == ORACLE:
        return True
    try:
        return _method_class(name).requires.target == "labelled"
    except KeyError:
        return False


def _known() -> set[str]:
    """Row names: every registered method the harness can run (not one that needs the whole
    labelled target set in place of the oracle), the few-label references, the oracle."""
    from shiftkit.adapt.methods.registry import method_names, reference_names

    names = {n for n in method_names() if _method_class(n).requires.target != "labelled"}
    return names | set(reference_names()) | {ORACLE}


def seeds_for(mode: str, n: int | None = None) -> tuple[int, ...]:
    """The data seeds of ``mode`` ("test": reporting only; "dev": design), first ``n``."""
    if mode == "test":
        seeds = TEST_DATA_SEEDS
    elif mode == "dev":
        seeds = DEV_DATA_SEEDS
    else:
        raise ConfigError("efficacy", [f"mode must be 'dev' or 'test', got {mode!r}"])
    return tuple(seeds[: n if n is not None else 5])


def check_seeds(mode: str, seeds: Iterable[int]) -> None:
    """Refuse a test data seed in a dev (design) run, and a non-test seed in a test run."""
    seeds = list(seeds)
    if mode == "dev":
        bad = [s for s in seeds if s in TEST_DATA_SEEDS]
        if bad:
            raise ConfigError("efficacy", [f"dev mode: {bad} are test data seeds (reporting only); "
                                           "use shiftkit.datasets.synth.seeds.DEV_DATA_SEEDS"])
    elif mode == "test":
        bad = [s for s in seeds if s not in TEST_DATA_SEEDS]
        if bad:
            raise ConfigError("efficacy", [f"test mode: {bad} are not test data seeds {TEST_DATA_SEEDS}"])
    else:
        raise ConfigError("efficacy", [f"mode must be 'dev' or 'test', got {mode!r}"])


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[key=value,...]`` -> ``(name, {key: value})`` (the one grammar,
    :func:`shiftkit.adapt.methods.spec.parse_spec`); the name must be a row."""
    name, params = parse_spec(spec, "efficacy")
    if name not in _known():
        raise ConfigError("efficacy", [f"unknown method {spec!r}; known: {sorted(_known())} (settings as name[key=value])"])
    return name, params


@dataclass(frozen=True)
class Cell:
    """One job of the grid: train ``method`` on data seed ``seed`` of ``benchmark``."""

    method: str
    benchmark: str
    seed: int

    def slug(self) -> str:
        return slug(self.method)

    def paths(self, root: Path) -> tuple[Path, Path]:
        base = Path(root) / "cells" / self.benchmark / self.slug() / f"seed{self.seed}"
        return base.with_suffix(".json"), base.with_suffix(".npz")


def grid(methods: Sequence[str], benchmarks: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    """Every cell, in a fixed order (so ``--cell i`` names the same job on every machine).

    ``methods`` may include ``"candidates"`` (the benchmark's selection grid) and
    ``"selected"`` (computed from the candidates; adds them)."""
    out: list[Cell] = []
    for b in benchmarks:
        if b not in BENCHMARKS:
            raise ConfigError("efficacy", [f"unknown benchmark {b!r}; known: {sorted(BENCHMARKS)}"])
        names: list[str] = []
        for m in methods:
            expanded = candidates_for(b) if m in ("candidates", "selected") else (m,)
            for e in expanded:
                check_method(e)
                if e not in names:
                    names.append(e)
        names = [m for m in names if _supports(m, BENCHMARKS[b])]
        out += [Cell(m, b, s) for s in seeds for m in names]
    return out


def settings_of(name: str) -> frozenset[str]:
    """The settings ``name[key=value]`` accepts: the method's own constructor arguments (its
    config section's names; not the shared training arguments, which the harness sets), the
    recipe's ``lr_mult``, and ``frac`` for labelled-target rows. The oracle takes none."""
    from shiftkit.adapt.build import setting_names

    if name == ORACLE:
        return frozenset()
    keys = setting_names(_method_class(name)) | RECIPE_SETTINGS
    return keys | LABELLED_SETTINGS if labelled_target(name) else keys


def check_method(spec: str) -> tuple[str, dict[str, Any]]:
    """:func:`parse_method`, then refuse a setting the method does not take (before any training),
    and a labelled-target row without its fraction when the method declares none
    (``labelled_fraction``)."""
    name, params = parse_method(spec)
    unknown = sorted(set(params) - settings_of(name))
    if unknown:
        raise ConfigError("efficacy", [f"{spec!r}: unknown setting(s) {unknown}; {name} takes "
                                       f"{sorted(settings_of(name)) or 'no settings'}"])
    if name != ORACLE and labelled_target(name):
        default = _method_class(name).labelled_fraction
        if default is None and "frac" not in params:
            raise ConfigError("efficacy", [f"{spec!r}: {name} needs the fraction of labelled target images, "
                                           f"e.g. {name}[frac=0.05]"])
        frac = params.get("frac", default)
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise ConfigError("efficacy", [f"{spec!r}: frac must be a number in (0, 1], got {frac!r}"])
    return name, params


def _supports(method: str, spec: BenchmarkSpec) -> bool:
    """False when the method declares it cannot do the benchmark's task (its `check_params`),
    e.g. CDAN or SHOT on segmentation; such pairs are left out of the grid, not failed."""
    name, _ = parse_method(method)
    if name == ORACLE:
        return True
    cls = _method_class(name)
    return not cls(spec.backbone, task=spec.task, num_classes=spec.num_classes).check_params()


# --------------------------------------------------------------------------------------------- data


def _arrays(benchmark: str, domain: str, n: int, seed: int, split: str, size: Any,
            want_mask: bool) -> dict[str, np.ndarray]:
    import importlib

    gen = importlib.import_module(f"shiftkit.datasets.synth.{benchmark}")
    first = gen.sample(domain, 0, seed=seed, size=size, split=split)
    img0 = np.asarray(first["image"], np.float32)
    images = np.empty((n, *img0.shape), np.float32)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, *np.asarray(first["mask"]).shape), np.uint8) if want_mask else None
    for i in range(n):
        s = first if i == 0 else gen.sample(domain, i, seed=seed, size=size, split=split)
        images[i] = s["image"]
        labels[i] = int(s["label"])
        if masks is not None:
            masks[i] = s["mask"]
    out = {"images": images, "labels": labels}
    if masks is not None:
        out["masks"] = masks
    return out


@functools.lru_cache(maxsize=2)
def benchmark_data(spec: BenchmarkSpec, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Arrays of every split for data seed ``seed`` (cached: a worker running several cells of
    one seed generates them once). The ``target_unlabelled`` split has images only."""
    seg = spec.task == "segmentation"
    a = functools.partial(_arrays, spec.name, size=spec.size)
    data = {
        "source_train": a(spec.source, spec.n_train, seed, "train", want_mask=seg),
        "source_val": a(spec.source, spec.n_val, seed, "val", want_mask=seg),
        "source_test": a(spec.source, spec.n_source_test, seed, "test", want_mask=seg),
        "target_train": a(spec.target, spec.n_train, seed, "train", want_mask=seg),
        "target_val": a(spec.target, spec.n_val, seed, "val", want_mask=seg),
        "target_test": a(spec.target, spec.n_test, seed, "test", want_mask=seg),
    }
    data["target_unlabelled"] = {"images": data["target_train"]["images"]}  # no label, no mask
    return data


def _dataset(part: dict[str, np.ndarray], task: str, labelled: bool = True) -> Any:
    from shiftkit.adapt.data import ArrayDataset

    if not labelled:
        return ArrayDataset(part["images"])
    masks = part["masks"].astype(np.int64) if task == "segmentation" else None
    labels = part["labels"] if task == "classification" else None
    return ArrayDataset(part["images"], labels=labels, masks=masks)


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
    from shiftkit.adapt.backbones import build_classifier, build_segmenter
    from shiftkit.adapt.methods import SourceOnly

    augment = None if augment == "none" else augment
    path = None
    if cache is not None:
        recipe = hashlib.sha1(json.dumps({**SOURCE_RECIPE, "augment": augment}, sort_keys=True).encode()).hexdigest()[:6]
        path = Path(cache) / spec.name / f"{spec.key()}-{recipe}-seed{seed}-model{model_seed}.safetensors"
        if path.is_file():
            from shiftkit.adapt.checkpoint import load_into

            build = build_classifier if spec.task == "classification" else build_segmenter
            data = benchmark_data(spec, seed)
            model = build(spec.backbone, data["source_train"]["images"].shape[1], spec.num_classes)
            load_into(model, path)
            return model
    data = benchmark_data(spec, seed)
    m = SourceOnly(spec.backbone, source_adapter=_source_adapter(augment, SOURCE_RECIPE["augment_strength"]),
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
        from shiftkit.adapt.build import section_model

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
        m = _method_class(BASELINE)(spec.backbone, **_train_kwargs(
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
    from shiftkit.adapt.data import ArrayDataset

    proba, feats = method.predict_proba_and_features(ArrayDataset(part["images"]), batch_size=256)
    if spec.metric == "accuracy":
        return {"label": part["labels"].astype(np.int8), "pred": proba.argmax(1).astype(np.int8)}, proba, feats
    if spec.task == "classification":
        return {"label": part["labels"].astype(np.int8), "score": proba[:, 1].astype(np.float32)}, proba, feats
    return {"counts": segmentation_counts(part["masks"], proba.argmax(1), spec.num_classes)}, proba, feats


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
    from shiftkit.adapt.auto_select import candidate_outputs

    out = candidate_outputs(method, _dataset(data["source_val"], spec.task),
                            _dataset(data["source_train"], spec.task, labelled=False),
                            _dataset(data["target_unlabelled"], spec.task, labelled=False), spec.task, spec.num_classes)
    return out.to_arrays()


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, indent=1, default=float)


def cell_key_of(cell: Cell, *, quick: bool = False, model_seed: int = 0) -> tuple[str, dict[str, Any]]:
    """``(key, resolved settings)`` of a cell under the current code (adapt/efficacy_cells.py):
    a finished cell is reused only when it carries this key."""
    from shiftkit.adapt.efficacy_cells import cell_key, resolved_settings

    spec = (QUICK if quick else BENCHMARKS)[cell.benchmark]
    name, params = check_method(cell.method)
    accepted = settings_of(name)
    settings = resolved_settings(name, params, accepted)
    if "lr_mult" in accepted:
        settings.setdefault("lr_mult", spec.lr_mult)
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
    t_stats, _, f_t = _score(method, data["target_test"], spec)
    s_stats, s_proba, f_s = _score(method, data["source_test"], spec)
    from shiftkit.evaluation.gap import proxy_a_distance

    # The scale-free gap measure: comparable across methods although each has its own feature
    # space (MMD^2 is not). 500 images per domain, a linear domain classifier, held-out error.
    pad = proxy_a_distance(f_s[:500], f_t[:500], seed=0)["proxy_a_distance"]
    arrays = {f"target_{k}": v for k, v in t_stats.items()} | {f"source_{k}": v for k, v in s_stats.items()}
    arrays |= {f"sel_{k}": v for k, v in _selection_outputs(method, spec, data).items()}
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
from shiftkit.adapt.efficacy_table import plot_table, render_markdown, select_cells, summarise  # noqa: E402, F401
