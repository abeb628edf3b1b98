"""Importance re-weighting under covariate shift.

Estimators share one style: ``fit(Xs, Xt)`` on source and target features (numpy or torch,
raw covariates or backbone features), then ``weights_`` (n_s,), ``ess_``, and for the
inductive ones ``weight(X_new)``:

- :class:`KMM` kernel mean matching (bound B and epsilon slab exact; Nystrom at large n),
- :class:`KLIEP` (converging L-BFGS optimiser, likelihood-CV kernel width),
- :class:`ClassifierRatio` p(t|x)/p(s|x) * n_s/n_t from a calibrated domain classifier.

Use the weights in training (the source adapter :class:`ImportanceWeighting`, which any
method takes, e.g. ``DANN(..., source_adapter=ImportanceWeighting(ClassifierRatio()))``; the
registered IW-ERM method :class:`ImportanceWeighted`; :class:`DistributedWeightedSampler`) and
in label-free model selection (:func:`iwcv_risk`).
See docs/reweight.md.
"""

from shiftkit.adapt.reweight.base import BaseWeighter, clip_and_normalize, effective_sample_size
from shiftkit.adapt.reweight.classifier_ratio import ClassifierRatio
from shiftkit.adapt.reweight.iwcv import iwcv_risk, iwcv_select
from shiftkit.adapt.reweight.kliep import KLIEP
from shiftkit.adapt.reweight.kmm import KMM, project_box_slab
from shiftkit.adapt.reweight.sampler import DistributedWeightedSampler


def __getattr__(name: str):
    # The training methods pull in the trainer and MONAI backbones: import them only when
    # asked for, so the estimators stay light to import.
    if name in ("ImportanceWeighted", "ImportanceWeighting", "WeightedSource", "dataset_features", "pooled_pixels"):
        from shiftkit.adapt.reweight import importance_weighted

        return getattr(importance_weighted, name)
    raise AttributeError(name)


__all__ = [
    "BaseWeighter",
    "ClassifierRatio",
    "DistributedWeightedSampler",
    "ImportanceWeighted",
    "ImportanceWeighting",
    "WeightedSource",
    "KLIEP",
    "KMM",
    "clip_and_normalize",
    "dataset_features",
    "effective_sample_size",
    "iwcv_risk",
    "iwcv_select",
    "pooled_pixels",
    "project_box_slab",
]
