"""How each default hyper-parameter of the adaptation methods was chosen.

One entry per ``Class.argument`` with a default value: "dev data" (on development data
seeds), "label-free" (by a criterion that reads no target label), "literature" (the cited
paper or the library's convention), "convention" (not a tuned value: an off switch, a data
argument, a size that does not change the result) or "cost". Settings chosen before data
seeds existed (on runs whose data and model seed were one number) say so.
``tests/adapt/test_efficacy_protocol.py`` checks that every method class's defaults are here.
A method's config section is generated from its constructor and shows these records as its
fields' descriptions (:func:`shiftkit.adapt.methods.build.section_model`), so each is written once; the
run's recipes record theirs next to their fields (:data:`shiftkit.adapt.methods.build.RECIPES`) and the
run config's own defaults are in :data:`shiftkit.adapt.job.config.DEFAULT_PROVENANCE`.
"""

from __future__ import annotations

__all__ = ["METHOD_DEFAULTS"]

_CONV_DATA = "convention: names the data or the network, not a tuned value"

METHOD_DEFAULTS: dict[str, str] = {
    # every method
    "*.model": _CONV_DATA,
    "*.num_classes": _CONV_DATA,
    "*.in_channels": "convention: read from the first source image",
    "*.task": "convention: inferred from the network",
    "*.source_adapter": "convention: none unless asked (the method's own default adapter, if any)",
    # training options every method takes (mirrors the run config's `train` section)
    "*.epochs": "literature: a few passes for the small backbones here; early-stop on source validation",
    "*.batch_size": "literature: 32 per domain, the DANN reference implementation's batch size",
    "*.optimizer": "literature: AdamW (Loshchilov & Hutter 2019)",
    "*.lr": "literature: AdamW default 1e-3",
    "*.lr_decay": "convention: constant (the method's own schedule, e.g. DANN's annealing, unchanged); the "
                     "run config's train.lr_decay (see adapt/job/config.py provenance) sets cosine for source training",
    "*.warmup": "convention: no warm-up unless asked (see train.warmup in adapt/job/config.py provenance)",
    "*.weight_decay": "literature: 1e-4, the common CNN default",
    "*.momentum": "literature: 0.9 SGD momentum",
    "*.grad_clip": "convention: a norm-5 clip only guards against blow-ups (rarely active)",
    "*.amp": "convention: bf16 autocast on CUDA only",
    "*.channels_last": "convention: on CUDA only (a speed setting)",
    "*.seed": "convention: model seed 0 (not a tuned value)",
    "*.device": "convention: CUDA when available",
    "*.num_workers": "cost: data-loading workers, no effect on results",
    "*.checkpoint_dir": "convention: no checkpoints unless asked",
    "*.resume": "convention: resume when a checkpoint exists",
    "*.early_stopping": "convention: off unless asked; the efficacy harness and the demo early-stop the "
                        "source model on source-validation AUROC / mIoU",
    "*.early_stopping_mode": "convention: inferred from the monitored key's name",
    "*.patience": "literature: 5 epochs, the common early-stopping patience",
    "*.min_delta": "convention: any improvement counts",
    "*.restore_best": "convention: keep the best monitored epoch",
    "*.calibrate": "convention: off unless asked; the run config's train.calibrate and the efficacy harness's "
                   "source recipe turn it on for the source model",
    "*.target_metrics": "convention: none unless asked",
    "*.oracle": "convention: target labels never select a model unless the user asks for an oracle run",
    "*.on_nonfinite": "convention: stop on NaN/Inf",
    "*.steps_per_epoch": "convention: one pass over the source per epoch",
    "*.eval_batch_size": "cost: inference batch size, no effect on results",
    "*.progress": "convention: progress bars on",
    "*.sync_batchnorm": "convention: off (CUDA DDP only)",
    # DANN (Ganin et al. 2016)
    "DANN.disc_hidden": "literature: a 2-layer MLP discriminator (Ganin et al. 2016; width 1024 there, "
                        "256 for the 64-512-d features of the backbones here)",
    "DANN.disc_dropout": "literature: none in the DANN paper's discriminator",
    "DANN.lambda_max": "literature: lambda_p ramps to 1 (Ganin et al. 2016)",
    "DANN.gamma": "literature: gamma = 10 (Ganin et al. 2016)",
    "DANN.lr_schedule": "literature: lr_p = lr0 / (1 + 10 p)^0.75 (Ganin et al. 2016)",
    "DANN.disc_lr_mult": "literature: the discriminator shares the encoder's learning rate (Ganin et al. 2016)",
    "DANN.adversary": "dev data (old seeds 10-12, data and model seed one number): confusion (Tzeng et al. 2015) "
                      "did not oscillate where gradient reversal (the paper's) did; re-checked label-free by "
                      "shiftkit select",
    # SegDANN (ADVENT, Vu et al. 2019)
    "SegDANN.feature_level": "dev data (old seed 10, data seed 0): off; feature-level alignment at weight 1 "
                             "cost source mIoU without closing the gap",
    "SegDANN.output_level": "literature: ADVENT's output-space discriminator on",
    "SegDANN.lambda_feature": "literature: 1, as DANN",
    "SegDANN.lambda_output": "literature: ADVENT's small output-space weight (Vu et al. 2019 use 1e-3 to 1e-2)",
    "SegDANN.out_disc_width": "literature: 64, ADVENT's / DCGAN's first discriminator width",
    "SegDANN.disc_hidden": "literature: one hidden layer for pooled bottleneck features",
    # AdaBN (Li et al. 2017)
    "AdaBN.train_source": "convention: train the source model first unless one is given",
    "AdaBN.bn_batch_size": "cost: statistics are accumulated over all target images, so the batch size "
                           "only sets memory",
    # FineTune / LinearProbe
    "FineTune.freeze": "convention: nothing frozen unless asked",
    "FineTune.encoder_lr_mult": "literature: discriminative fine-tuning, encoder at 1/10 of the head's rate "
                                "(Howard & Ruder 2018)",
    "FineTune.source_weight": "convention: target-only fine-tuning unless asked",
    "LinearProbe.freeze": "literature: a linear probe trains the head on a frozen encoder (by definition)",
    "LinearProbe.reset_head": "convention: keep the trained head as the starting point",
    # ImportanceWeighting, the source adapter of ImportanceWeighted (Shimodaira 2000; Sugiyama et al. 2007)
    "ImportanceWeighting.weights": "convention: estimated unless given",
    "ImportanceWeighting.estimator": "convention: the user names one; the pipeline uses ClassifierRatio",
    "ImportanceWeighting.featurize": "literature: pooled pixels, a model-free input for the density ratio",
    "ImportanceWeighting.clip": "convention: no clip unless asked (weights are normalised to mean 1)",
    "ImportanceWeighting.mode": "literature: weighted loss (Shimodaira 2000)",
    # Target-style augmentation (FDA, Yang & Soatto 2020; histogram matching; PDA)
    "TargetStyleSourceOnly.restyle_strength": "literature: full strength, FDA's beta as published; "
                                              "the selection grid also holds 0.5",
    "TargetStyleSourceOnly.match_acquisition": "dev data: off by default (dashcam dev seeds 102-104: 0.346 -> "
                                               "0.321 at lr_mult=2); the selection grid holds it on (digits "
                                               "dev seeds 100-104: 0.683 -> 0.718) (benchmarks/efficacy/dev-frame)",
    "TargetStyleSourceOnly.match_frame": "dev data: radiograph dev seeds 100 and 102, augment 0.616 / 0.634 -> "
                                         "0.672 / 0.675 target AUROC (benchmarks/efficacy/dev-frame); the "
                                         "identity on dashcam and digits (no flat borders)",
    # Methods added with the method contract; entries restate what each class's docstring records.
    "MCC.mcc_weight": "literature: mu = 1, Jin et al. 2020's value for every benchmark",
    "MCC.temperature": "literature: T = 2.5 (Jin et al. 2020)",
    "CDAN.entropy_conditioning": "literature: CDAN+E, Long et al. 2018's best variant",
    "CDAN.randomized": "literature: the randomised multilinear map above max_multilinear_dim (Long et al. 2018)",
    "CDAN.randomized_dim": "literature: d = 1024 (Long et al. 2018)",
    "CDAN.max_multilinear_dim": "literature: 4096 (Long et al. 2018)",
    "CDAN.mcc_weight": "convention: MCC off unless asked (1 in Jin et al. 2020)",
    "CDAN.mcc_temperature": "literature: 2.5 (Jin et al. 2020)",
    "CDAN.adversary": "dev data: gradient reversal beat DANN on 15 of 15 development seeds of the label-shifted "
                      "toy; the confusion loss did not reliably (cdan.py docstring)",
    "CDAN.disc_hidden": "literature: (1024, 1024) as in Long et al. 2018",
    "TENT.steps_per_batch": "literature: one step per target batch (Wang et al. 2021)",
    "TENT.shuffle": "convention: keep the stream's order, as a deployed model sees it",
    "TENT.recompute_bn": "convention: re-estimate BatchNorm statistics on the target after adapting",
    "TENT.window": "convention: a quarter of the stream per window of the collapse check",
    "TENT.collapse_ratio": "dev data: healthy runs stayed above 0.8 and collapses fell below 0.3 on the "
                           "development data seeds (tent.py docstring)",
    "TENT.correlation_ratio": "convention: the same 0.5 share as collapse_ratio (its docstring records no tuning)",
    "TENT.max_stream_f": "dev data: chosen on development data (tent.py docstring)",
    "TENT.on_collapse": "convention: warn, never change the model silently",
    "DeepCORAL.coral_weight": "literature: 1.0, Sun & Saenko 2016's value for Office-31",
    "SHOT.beta": "literature: 0.3 (Liang et al. 2020)",
    "SHOT.diversity_weight": "literature: 1 (Liang et al. 2020)",
    "SHOT.epsilon": "literature: 1e-5 inside the logarithms (tim-learn/SHOT object/loss.py, image_target.py)",
    "SHOT.threshold": "literature: 0, the authors' --threshold (tim-learn/SHOT object/image_target.py)",
    "SHOT.distance": "literature: cosine, the authors' --distance (tim-learn/SHOT object/image_target.py)",
    "SHOT.backbone_lr_mult": "literature: 0.1, the authors' lr_decay1 (tim-learn/SHOT object/image_target.py)",
    "SHOT.lr_schedule": "literature: (1 + 10 p)^-0.75, the authors' lr_scheduler",
    "SHOT.nesterov": "literature: Nesterov momentum, the authors' lr_scheduler",
    "SHOT.optimizer": "dev data: SGD as the authors (tim-learn/SHOT); AdamW put SHOT below source-only on "
                      "radiograph development seeds 100-101 (docs/methods.md)",
    "SHOT.weight_decay": "literature: 1e-3, the authors' lr_scheduler",
    "SHOT.grad_clip": "literature: no clipping (tim-learn/SHOT)",
    "SelfTraining.threshold": "dev data: chosen on the development data seeds (docs/methods.md; FixMatch "
                              "0.95 and DACS 0.968 in the literature)",
    "SelfTraining.unlabelled_weight": "literature: lambda_u = 1 (FixMatch, DACS)",
    "SelfTraining.strong_strength": "convention: a moderate strength of the strong perturbation (its docstring records no tuning)",
    "SelfTraining.class_balanced": "convention: off unless asked (CBST's per-class thresholds)",
    "SelfTraining.cb_fraction": "literature: 0.5, where CBST's schedule ends",
    "SelfTraining.ema_decay": "literature: no mean teacher for classification (FixMatch); 0.99 for "
                              "segmentation (DACS)",
    "SelfTraining.record_rounds": "convention: off (an extra pass per epoch)",
}
