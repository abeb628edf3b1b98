"""Development runs behind the defaults and test set-ups of the CDAN / MCC / CORAL / self-training /
TENT / SHOT methods (development data seeds only: ``shiftkit.datasets.synth.seeds.DEV_DATA_SEEDS``).

    .venv/bin/python scripts/dev_methods.py cdan_toy          # class-conditional toy: DANN vs CDAN
    .venv/bin/python scripts/dev_methods.py tent              # corrupted BatchNorm toy: TENT, guard
    .venv/bin/python scripts/dev_methods.py selftrain         # pseudo-label accuracy over rounds
    .venv/bin/python scripts/dev_methods.py sourcefree        # radiograph: SHOT / TENT / AdaBN vs source-only

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

    from shiftkit.adapt.methods import SelfTraining
    from shiftkit.adapt.training.data import ArrayDataset

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


def source_free_radiograph(seeds, n_train: int = 480, n_test: int = 1000, variants: tuple[str, ...] = ()) -> None:
    """Target AUROC of source-only, AdaBN, TENT and SHOT on the radiograph benchmark (dev seeds).

    Every method starts from the harness's source-only model (:func:`shiftkit.adapt.harness.efficacy.pretrained_source`);
    ``shot_recipe`` first trains SHOT's own source model (:class:`SHOTSource`) on the same source
    data and adapts that one. Settings: ``harness`` = the efficacy harness's keyword arguments
    (``lr = spec.lr * lr_mult``, ``adapt_epochs``), ``defaults`` = the class defaults with the
    harness's epochs and batch size (SHOT: the authors' lr 1e-2). ``variants``: ``shot_recipe`` (SHOTSource + SHOT),
    ``shot_old_optimiser`` (SHOT with AdamW at the harness's rate, whole encoder at 1x, no decay),
    ``shot_recipe_backbone1`` (only SHOTSource with ``backbone_lr_mult=1`` and SHOT on it),
    ``build_only`` (only source-only and AdaBN / TENT / SHOT built as the efficacy harness builds them).
    """
    import copy
    from dataclasses import replace

    from sklearn.metrics import roc_auc_score

    from shiftkit.adapt.harness import efficacy as E
    from shiftkit.adapt.methods import SHOT, TENT, AdaBN, SHOTSource

    bench = os.environ.get("BENCH", "radiograph")  # BENCH=digits: the real-image benchmark (accuracy)
    spec = replace(E.BENCHMARKS[bench], n_train=n_train, n_test=n_test, n_source_test=200)
    for seed in seeds:
        t0 = time.time()
        data = E.benchmark_data(spec, seed)
        src, val = E._dataset(data["source_train"], spec.task), E._dataset(data["source_val"], spec.task)
        tgt = E._dataset(data["target_unlabelled"], spec.task, labelled=False)
        xt, yt = data["target_test"]["images"], data["target_test"]["labels"]
        harness = E._train_kwargs(spec, 0, epochs=spec.adapt_epochs, lr=spec.lr * spec.lr_mult)
        common = {k: harness[k] for k in ("num_classes", "task", "epochs", "batch_size", "seed", "progress", "device")}

        def auroc(model, xt=xt, yt=yt) -> float:
            model.eval()
            with torch.no_grad():
                p = torch.softmax(model(torch.from_numpy(xt)), 1).numpy()
            if p.shape[1] > 2:
                return round(float((p.argmax(1) == yt).mean()), 4)  # accuracy (digits)
            return round(float(roc_auc_score(yt, p[:, 1])), 4)

        if "shot_recipe_backbone1" in variants:  # SHOTSource from scratch with the backbone at 1x (only this)
            ss = SHOTSource(E.BENCHMARKS["radiograph"].backbone, num_classes=2, epochs=spec.epochs,
                            batch_size=spec.batch_size, seed=0, progress=False, early_stopping="val_auroc",
                            patience=spec.patience, restore_best=True, backbone_lr_mult=1.0).fit(src, val=val)
            row = {"shot_source[backbone 1x]": auroc(copy.deepcopy(ss.model_)),
                   "shot[recipe, backbone 1x]": auroc(SHOT(ss.model_, lr=1e-2, **common).fit(None, tgt).model_)}
            print(seed, row, f"{time.time() - t0:.0f}s", flush=True)
            continue
        if "build_only" in variants:  # the harness's own path: each method's from_config (HarnessContext)
            import tempfile
            from pathlib import Path

            with tempfile.TemporaryDirectory() as cache:
                start = E.pretrained_source(spec, seed, 0, Path(cache))
                row = {"source_only": auroc(copy.deepcopy(start))}
                for name in ("adabn", "tent", "shot"):
                    row[f"{name}[build]"] = auroc(E.build_and_fit(name, spec, seed, 0, Path(cache)).model_)
            print(seed, row, f"{time.time() - t0:.0f}s", flush=True)
            continue
        start = E.pretrained_source(spec, seed, 0, None)
        row = {"source_only": auroc(copy.deepcopy(start))}
        row["adabn"] = auroc(AdaBN(copy.deepcopy(start), train_source=False, **harness).fit(src, tgt).model_)
        row["tent[harness]"] = auroc(TENT(copy.deepcopy(start), **harness).fit(None, tgt).model_)
        row["tent[defaults]"] = auroc(TENT(copy.deepcopy(start), **{**common, "epochs": 1}).fit(None, tgt).model_)
        row["shot[harness]"] = auroc(SHOT(copy.deepcopy(start), **harness).fit(None, tgt).model_)
        row["shot[lr=1e-2]"] = auroc(SHOT(copy.deepcopy(start), lr=1e-2, **common).fit(None, tgt).model_)
        if "shot_old_optimiser" in variants:  # the optimiser SHOT had before the authors' recipe
            row["shot[adamw,2.5e-4]"] = auroc(SHOT(copy.deepcopy(start), optimizer="adamw", weight_decay=1e-4,
                                                   grad_clip=5.0, backbone_lr_mult=1.0, lr_schedule=False,
                                                   **harness).fit(None, tgt).model_)
        if "shot_recipe" in variants:
            ss = SHOTSource(E.BENCHMARKS["radiograph"].backbone, num_classes=2, epochs=spec.epochs,
                            batch_size=spec.batch_size, seed=0, progress=False, early_stopping="val_auroc",
                            patience=spec.patience, restore_best=True).fit(src, val=val)
            row["shot_source"] = auroc(copy.deepcopy(ss.model_))
            row["shot[recipe]"] = auroc(SHOT(ss.model_, lr=1e-2, **common).fit(None, tgt).model_)
        print(seed, row, f"{time.time() - t0:.0f}s", flush=True)


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
    elif what == "sourcefree":  # e.g. DEV_SEEDS=100:103 ... sourcefree shot_recipe
        source_free_radiograph(dev, n_train=int(os.environ.get("N_TRAIN", 480)),
                               n_test=int(os.environ.get("N_TEST", 1000)), variants=tuple(sys.argv[2:]))
