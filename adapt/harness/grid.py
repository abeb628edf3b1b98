"""The grid of the efficacy harness: rows (``name[key=value]``), data seeds, cells, and which
settings a row accepts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftkit.adapt.harness.benchmarks import BENCHMARKS, BenchmarkSpec
from shiftkit.adapt.methods.spec import parse_spec, slug
from shiftkit.datasets.errors import ConfigError
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS, TEST_DATA_SEEDS


def candidates_for(benchmark: str) -> tuple[str, ...]:
    """The label-free selection's candidates on ``benchmark``: every registered label-free method
    that can do its task, with the settings grid each method declares
    (:func:`shiftkit.adapt.harness.candidates.candidate_pool`; the same pool ``auto`` uses)."""
    from shiftkit.adapt.harness.candidates import candidate_pool

    spec = BENCHMARKS[benchmark]
    return candidate_pool(spec.task, num_classes=spec.num_classes, backbone=spec.backbone)


#: The harness's own row: the baseline method trained on as many *labelled* target images as
#: the source has (an upper bound, not a method).
ORACLE = "oracle"
#: Settings the oracle row takes: ``start``, what its training starts from (``"scratch"``: a
#: new network; ``"source"``: a copy of the plain source-only model, then fine-tuned on the
#: labelled target set with the full learning rate).
ORACLE_SETTINGS = frozenset({"start"})
#: The oracle's default ``start``: the upper bound of methods that all start from a source
#: model. Development data seeds: fine-tuning the source model on the labelled target set
#: scored higher and varied less than training from scratch (target score, start=source vs
#: scratch: radiograph 102-103: 0.737 / 0.727 vs 0.661 / 0.534, the latter below source-only;
#: digits 100-104: 0.74-0.79 vs 0.46-0.56; dashcam 102-104 (before urban verges): 0.519 / 0.515 / 0.524 vs
#: 0.529 / 0.466 / 0.524; benchmarks/efficacy/dev-policies). The table keeps
#: ``oracle[start=scratch]`` beside it.
ORACLE_START = "source"
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
    recipe's ``lr_mult``, and ``frac`` for labelled-target rows. The oracle takes ``start``."""
    from shiftkit.adapt.methods.build import setting_names

    if name == ORACLE:
        return ORACLE_SETTINGS
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
    if name == ORACLE and params.get("start", ORACLE_START) not in ("scratch", "source"):
        raise ConfigError("efficacy", [f"{spec!r}: start must be 'scratch' or 'source', got {params['start']!r}"])
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


