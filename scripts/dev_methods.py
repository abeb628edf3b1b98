"""Development runs behind the defaults and test set-ups of the CDAN / MCC / CORAL / self-training /
TENT / SHOT methods (development data seeds only: ``shiftkit.datasets.synth.seeds.DEV_DATA_SEEDS``).

    .venv/bin/python scripts/dev_methods.py cdan_toy          # class-conditional toy: DANN vs CDAN
    .venv/bin/python scripts/dev_methods.py tent              # corrupted BatchNorm toy: TENT, guard
    .venv/bin/python scripts/dev_methods.py selftrain         # pseudo-label accuracy over rounds

Each prints one line per (setting, data seed); the chosen settings and their numbers are
recorded next to the defaults (docs/methods.md, the test modules).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shiftkit.datasets.synth.seeds import DEV_DATA_SEEDS  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "adapt"))


def cdan_toy(seeds, variants, fit_kw=None) -> None:
    from methods_toys import class_conditional_toy, fit_toy_methods

    for v in variants:
        rows = []
        for s in seeds:
            t0 = time.time()
            data = class_conditional_toy(s, **v)
            acc = fit_toy_methods(data, model_seed=0, **(fit_kw or {}))
            rows.append(acc)
            print(v, s, {k: round(a, 3) for k, a in acc.items()}, f"{time.time() - t0:.1f}s", flush=True)
        mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}
        print("MEAN", v, mean, flush=True)


def selftrain(seeds, shifts, thresholds=(0.8, 0.9, 0.95), weights=(1.0,), variants=({},)) -> None:
    import copy

    from methods_toys import stripes, train_source_cnn

    from shiftkit.adapt.data import ArrayDataset
    from shiftkit.adapt.methods import SelfTraining

    for shift in shifts:
        for s in seeds:
            xs, ys = stripes(s, 400)
            xt, yt = stripes(s + 5000, 400, **shift)
            net = train_source_cnn(xs, ys)
            with torch.no_grad():
                src_acc = float((net(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
            for th in thresholds:
                for wu in weights:  # unlabelled_weight 0: the control (same loop, no pseudo-label loss)
                    for v in variants:
                        m = SelfTraining(copy.deepcopy(net), threshold=th, unlabelled_weight=wu, record_rounds=True,
                                         epochs=int(os.environ.get("EPOCHS", 4)), batch_size=32, lr=1e-3, seed=0,
                                         progress=False, **v).fit(ArrayDataset(xs, ys), ArrayDataset(xt))
                        accs = [round(float((r["pseudo_label"] == yt).mean()), 3) for r in m.rounds_]
                        print(shift, s, "source", round(src_acc, 3), "tau", th, "w_u", wu, v, "rounds", accs,
                              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    what = sys.argv[1]
    dev = DEV_DATA_SEEDS[:5]
    if os.environ.get("DEV_SEEDS"):  # e.g. DEV_SEEDS=105:115
        a, b = (int(v) for v in os.environ["DEV_SEEDS"].split(":"))
        dev = tuple(s for s in DEV_DATA_SEEDS if a <= s < b)
    if what == "cdan_toy":
        # e.g. "dict(rotation=0)" ["dict(adversary='grl')"]
        variants = [eval(sys.argv[2])] if len(sys.argv) > 2 else [dict()]
        cdan_toy(dev, variants, eval(sys.argv[3]) if len(sys.argv) > 3 else None)
    elif what == "selftrain_variants":  # e.g. "dict(ema_decay=0.99)" "dict(strong_strength=0.25)"
        selftrain(dev, [dict(contrast=0.5, offset=0.2, noise=0.25)], thresholds=(0.9,),
                  variants=[dict()] + [eval(a) for a in sys.argv[2:]])
    elif what == "selftrain":
        selftrain(dev[:3], [eval(a) for a in sys.argv[2:]] or [dict(contrast=0.5, offset=0.2, noise=0.25)],
                  thresholds=(0.9,), weights=(1.0, 0.0))
