"""Which part of the radiograph site shift carries the gap? (development data only)

    python scripts/dev_radiograph_factors.py SEED DOMAIN [DOMAIN ...]

Each DOMAIN is a hybrid site: the city population drawn through some of the rural detector's
acquisition settings (``cityacq``: all of them; ``tone``: exposure, contrast, gamma; ``sharp``:
noise, blur, resolution; ``layout``: collimation, marker corner, text lines; ``ruralpop``: the
rural population through the city detector), or ``rural`` itself. The oracle recipe of the
efficacy harness trains on that site's labelled images, starting from the source model, and the
rural target test split scores it (AUROC). A hybrid that scores near the oracle names a factor
that target-style augmentation could reproduce from unlabelled images.
"""

from __future__ import annotations

import dataclasses
import sys

from sklearn.metrics import roc_auc_score

from shiftkit.adapt.harness import efficacy
from shiftkit.adapt.harness.benchmarks import BENCHMARKS, benchmark_data
from shiftkit.adapt.training.data import ArrayDataset
from shiftkit.datasets.synth import radiograph
from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS

FACTORS = {
    "cityacq": ("exposure", "contrast", "gamma", "noise", "blur", "resolution", "collimation", "marker_corner",
                "text_lines"),
    "tone": ("exposure", "contrast", "gamma"),
    "sharp": ("noise", "blur", "resolution"),
    "tonesharp": ("exposure", "contrast", "gamma", "noise", "blur", "resolution"),
    "layout": ("collimation", "marker_corner", "text_lines"),
}


def main(seed: int, domains: list[str]) -> None:
    if seed not in DEV_DATA_SEEDS:
        raise SystemExit(f"seed {seed} is not a development data seed {DEV_DATA_SEEDS}")
    city, rural = radiograph.PROFILES["city"], radiograph.PROFILES["rural"]
    for name, keys in FACTORS.items():
        radiograph.PROFILES[name] = dataclasses.replace(city, name=name, **{k: getattr(rural, k) for k in keys})
    acquisition = FACTORS["cityacq"]
    radiograph.PROFILES["ruralpop"] = dataclasses.replace(rural, name="ruralpop",
                                                          **{k: getattr(city, k) for k in acquisition})
    radiograph.DOMAINS = tuple(radiograph.PROFILES)
    base = BENCHMARKS["radiograph"]
    test = benchmark_data(base, seed)["target_test"]
    for domain in domains:
        if domain not in radiograph.DOMAINS:
            raise SystemExit(f"unknown site {domain!r}; choose from {radiograph.DOMAINS}")
        m = efficacy.build_and_fit("oracle", dataclasses.replace(base, target=domain), seed, 0, None)
        proba, _ = m.predict_proba_and_features(ArrayDataset(test["images"]), batch_size=256)
        print(f"{domain}\tseed {seed}\trural-test AUROC {roc_auc_score(test['labels'], proba[:, 1]):.3f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
