"""Validated run configuration (YAML or Python) for `shiftkit run` and `shiftkit.adapt.run`.

Every section forbids unknown keys, so a typo is an error rather than a silently ignored
setting; `load_config` reports every problem at once with its dotted key path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from shiftkit.adapt.config_methods import (
    CDANConfig,
    CORALConfig,
    MCCConfig,
    SelfTrainingConfig,
    SHOTConfig,
    TENTConfig,
)
from shiftkit.adapt.methods.registry import BUILTIN_METHODS, method_names
from shiftkit.datasets.errors import ConfigError

#: The built-in method names (``shiftkit.adapt.methods.registry``); methods registered at run
#: time are accepted too.
METHOD_NAMES = tuple(BUILTIN_METHODS)


#: The pseudo-method of ``methods``: fit every ``selection.candidates`` entry and keep the one a
#: label-free validator chooses (``shiftkit.adapt.auto_select``); not a registry class.
AUTO_METHOD = "auto"

#: The default candidates of ``auto``: empty = the pool derived from the registry for the run's
#: task (:func:`shiftkit.adapt.candidates.candidate_pool`, the same pool as the efficacy harness's
#: ``selected``), resolved when the run starts.
DEFAULT_CANDIDATES: tuple[str, ...] = ()
#: The validators of ``shiftkit.evaluation.selection`` (kept here so validating a config imports no numpy).
VALIDATOR_NAMES = ("source_val", "iwcv", "dev", "entropy", "snd", "ensv", "mixval", "rank_mean")
_CANDIDATE_SPEC = re.compile(r"([a-z_][a-z0-9_]*)(?:\[([^\]]*)\])?")


def _registered(name: str) -> str:
    known = method_names()
    if name not in known and name != AUTO_METHOD:
        raise ValueError(f"unknown method {name!r}; registered methods are {list(known)} (or {AUTO_METHOD!r})")
    return name


def _candidate(spec: str) -> str:
    m = _CANDIDATE_SPEC.fullmatch(spec.strip())
    if not m:
        raise ValueError(f"candidate {spec!r} is not 'method' or 'method[key=value,...]'")
    if m.group(1) not in method_names():
        raise ValueError(f"candidate {spec!r}: unknown method {m.group(1)!r}; registered methods are "
                         f"{list(method_names())}")
    if m.group(1) == "target_oracle":
        raise ValueError(f"candidate {spec!r}: trains on target labels, so it cannot be a label-free candidate")
    for part in filter(None, (m.group(2) or "").split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"candidate {spec!r}: cannot read setting {part!r} (write key=value)")
    return spec.strip()


def _validator(name: str) -> str:
    if name not in VALIDATOR_NAMES:
        raise ValueError(f"unknown validator {name!r}; choose from {list(VALIDATOR_NAMES)}")
    return name


#: A registered method name (checked when the config is validated, so run-time registrations count).
MethodName = Annotated[str, AfterValidator(_registered)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where images come from.

    Either an embedded `benchmark` (generated, exported to PNG + manifest.csv under the run
    folder and read back through the manifest path, so the demo exercises real-data code) or
    a user `manifest` (CSV/Parquet; paths relative to its folder).
    """

    benchmark: Literal["radiograph", "dashcam"] | None = Field(
        None, description="default: radiograph, unless data.manifest is given")
    manifest: Path | None = None
    source_domain: str | None = Field(None, description="defaults to the benchmark's source")
    target_domain: str | None = Field(None, description="defaults to the benchmark's target")
    seed: int = Field(
        0, ge=0,
        description="data seed: which images the benchmark generator draws and how a manifest without a "
        "'split' column is cut. Separate from train.seed (the model seed). Design runs use "
        "shiftkit.datasets.synth.seeds.DEV_DATA_SEEDS, reported efficacy TEST_DATA_SEEDS",
    )
    n_per_domain: int = Field(600, ge=20, description="images generated per domain (benchmark only)")
    image_size: int = Field(64, ge=16, le=1024, description="side in pixels (benchmark only)")
    num_workers: int = Field(0, ge=0)
    skip_bad: bool = False
    check_images: bool = Field(False, description="read every image and mask at manifest load; a file that "
                                                  "does not decode is reported with its row before any training")
    allow_outside_root: bool = False
    _benchmark_defaulted: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        # The embedded benchmark is the default only while no manifest is given.
        if self.manifest is not None and self._benchmark_defaulted:
            object.__setattr__(self, "benchmark", None)
        if self.benchmark is None and self.manifest is None:
            object.__setattr__(self, "benchmark", "radiograph")
            self._benchmark_defaulted = True
        if self.benchmark is not None and self.manifest is not None:
            raise ValueError("give data.benchmark or data.manifest, not both")
        if self.manifest is not None and (self.source_domain is None or self.target_domain is None):
            raise ValueError("with data.manifest, name data.source_domain and data.target_domain")
        return self


# Per-task default backbones (a segmentation run needs a segmenter, a classification run a classifier).
DEFAULT_BACKBONES = {"classification": "resnet10", "segmentation": "unet"}


class ModelConfig(_Section):
    backbone: str | None = Field(None, description="default: resnet10 (classification), unet (segmentation)")
    checkpoint: Path | None = Field(None, description="source weights on disk (.safetensors or state dict)")


class TrainSection(_Section):
    """`train:` options shared by every method (the loop's own settings are `shiftkit.adapt.trainer.TrainConfig`)."""

    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=2)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    device: str = "auto"
    seed: int = Field(0, description="model seed: initialisation, batch order, dropout (not the data; see data.seed)")
    early_stopping_patience: int | None = Field(None, ge=1)


class DANNConfig(_Section):
    epochs: int | None = Field(None, ge=1, description="defaults to train.epochs")
    lambda_max: float = Field(1.0, gt=0)
    discriminator_hidden: int = Field(256, ge=8)
    discriminator_lr_mult: float = Field(1.0, gt=0, description="discriminator lr relative to train.lr")
    adversary: Literal["grl", "confusion"] = Field(
        "confusion", description="grl: gradient reversal (the paper); confusion: encoder drives D's output to 1/2"
    )
    start: Literal["source_only", "scratch"] = Field(
        "source_only",
        description="source_only: adapt a copy of the fitted source-only model (fitted first if not in methods); "
        "scratch: train the adapted model from random weights",
    )
    lr_mult: float = Field(
        0.25, gt=0, description="adaptation learning rate relative to train.lr (when start=source_only)"
    )
    seg_feature_level: bool = Field(
        False, description="segmentation: also align pooled bottleneck features (at lambda_max)"
    )
    seg_output_lambda: float = Field(
        0.01, gt=0, description="segmentation: weight of the output-space (ADVENT) alignment, times lambda_max"
    )


class SelectionConfig(_Section):
    """`selection:` options of the ``auto`` method (label-free model selection)."""

    candidates: list[Annotated[str, AfterValidator(_candidate)]] = Field(
        list(DEFAULT_CANDIDATES),
        description="method specs, each 'method' or 'method[key=value,...]' (the key a field of the method's "
                    "config section, e.g. dann[lambda_max=0.3]); default (empty): every registered label-free "
                    "method that can do the task, with the settings grid each declares")
    validator: Annotated[str, AfterValidator(_validator)] = Field(
        "entropy", description="the label-free validator that chooses (default: "
                               "shiftkit.evaluation.selection.DEFAULT_VALIDATOR); every validator is reported")

    @model_validator(mode="after")
    def _unique(self) -> SelectionConfig:
        dup = sorted({c for c in self.candidates if self.candidates.count(c) > 1})
        if dup:
            raise ValueError(f"selection.candidates: {dup} listed twice")
        if len(self.candidates) == 1:
            raise ValueError("selection.candidates: list at least 2 candidates, or none for the default pool")
        return self


class EvalConfig(_Section):
    n_permutations: int = Field(500, ge=50)
    max_gap_points: int = Field(1000, ge=50, description="subsample per domain for the MMD test")
    overlays: bool | None = Field(
        None, description="segmentation: prediction overlays in the report; default on for the dashcam "
                          "benchmark only (never put patient images in a report)")


class RunConfig(_Section):
    """One end-to-end job: data -> source model -> adaptation -> evaluation -> report."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$")
    out_dir: Path = Path("runs")
    task: Literal["classification", "segmentation"] | None = Field(
        None, description="default: segmentation for the dashcam benchmark, else classification")
    methods: list[MethodName] = Field(
        ["source_only", "dann"], description="registered method names (or 'auto': label-free selection among "
                                              "selection.candidates), fitted and reported in this order")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainSection = TrainSection()
    dann: DANNConfig = DANNConfig()
    cdan: CDANConfig = CDANConfig()
    mcc: MCCConfig = MCCConfig()
    deep_coral: CORALConfig = CORALConfig()
    self_training: SelfTrainingConfig = SelfTrainingConfig()
    tent: TENTConfig = TENTConfig()
    shot: SHOTConfig = SHOTConfig()
    selection: SelectionConfig = SelectionConfig()
    evaluation: EvalConfig = EvalConfig()
    resume: bool = False
    progress: bool = True
    _defaulted_backbone: tuple[str, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _default_task(self) -> RunConfig:
        if self.task is None:
            object.__setattr__(self, "task", "segmentation" if self.data.benchmark == "dashcam" else "classification")
        # A defaulted backbone follows the task when the task is changed later (validate_assignment).
        if self.model.backbone is None or self.model.backbone in self._defaulted_backbone:
            object.__setattr__(self.model, "backbone", DEFAULT_BACKBONES[self.task])
            self._defaulted_backbone = (self.model.backbone,)
        else:
            from shiftkit.adapt.backbones import CLASSIFIER_NAMES, SEGMENTER_NAMES

            names = SEGMENTER_NAMES if self.task == "segmentation" else CLASSIFIER_NAMES
            if self.model.backbone.lower() not in names:
                other = CLASSIFIER_NAMES if self.task == "segmentation" else SEGMENTER_NAMES
                hint = (f" ({self.model.backbone!r} is a {'classifier' if self.task == 'segmentation' else 'segmenter'})"
                        if self.model.backbone.lower() in other else "")
                raise ValueError(f"model.backbone: {self.model.backbone!r} is not a {self.task} backbone{hint}; "
                                 f"choose from {list(names)}")
        return self

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        elif err["type"] == "value_error":  # our own cross-field checks: the message names its keys
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(msg if not err["loc"] else f"{where}: {msg}")
        else:
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return problems


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict; raise `ConfigError` listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"expected a mapping at the top level, got {type(raw).__name__}"])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    return parse_config(raw, source=str(path))


#: How each adaptation default of the run config was chosen ("dev data": on development data
#: seeds; "label-free": by a criterion that reads no target label; "literature": from the cited
#: paper or the library's convention). A test checks every field of the adaptation sections
#: (`train`, `dann`) has an entry. Settings chosen on runs whose data and model seed were one
#: number (before data seeds existed) say so; `shiftkit select` re-chooses them label-free.
DEFAULT_PROVENANCE: dict[str, str] = {
    "train.epochs": "literature: a few passes suffice for the small backbones of the demo (Ganin et al. 2016 "
                    "train to convergence; pair with early_stopping_patience on source validation)",
    "train.batch_size": "literature: 32 per domain, the DANN reference implementation's batch size",
    "train.optimizer": "literature: AdamW (Loshchilov & Hutter 2019), robust default for small CNNs",
    "train.lr": "literature: AdamW default learning rate 1e-3",
    "train.weight_decay": "literature: 1e-4, the common CNN default",
    "train.device": "convention: CUDA when available",
    "train.seed": "convention: model seed 0 (not a tuned value)",
    "train.early_stopping_patience": "convention: off unless asked; the efficacy harness early-stops the source "
                                     "model on source-validation AUROC/mIoU with patience 3",
    "dann.epochs": "convention: defaults to train.epochs (equal budget with the baseline)",
    "dann.lambda_max": "literature: 1.0, Ganin et al. 2016's lambda_p schedule end point",
    "dann.discriminator_hidden": "literature: a 2-layer MLP discriminator as Ganin et al. 2016 (width reduced "
                                 "from 1024 for 64-256-d features)",
    "dann.discriminator_lr_mult": "literature: same learning rate as the encoder (Ganin et al. 2016)",
    "dann.adversary": "dev data (old seeds 10-12, data and model seed one number): confusion (Tzeng et al. 2015) "
                      "did not oscillate where gradient reversal did; re-checked label-free by shiftkit select",
    "dann.start": "literature: adapt the trained source model (ADVENT / SHOT practice, the clinical workflow)",
    "dann.lr_mult": "dev data (old seeds 10-12, data and model seed one number): 0.25; the candidate grid of "
                    "shiftkit select also holds lr_mult=1",
    "dann.seg_feature_level": "dev data (old seed 10, data seed 0): off; feature-level alignment at weight 1 "
                              "cost source mIoU without closing the gap",
    "dann.seg_output_lambda": "literature: ADVENT's small output-space weight (Vu et al. 2019 use 1e-3 to 1e-2)",
}
