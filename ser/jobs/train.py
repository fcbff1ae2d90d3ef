"""The train.py job: one resolved config -> a trained model and `results.json` in the run dir.

In order: check the config, data and split, model, Lightning fit (resuming a killed run), test on
held-out speakers, results, trackers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ser.config import check_train_config
from ser.data.build import DIGESTS, augmented_clips, front_end_from, functionals_front_end, prepare
from ser.data.corpora import label_mapping
from ser.data.datamodule import SERDataModule
from ser.diffusion.assess_encoded import assess_in_classifier_space, log_classifier_space_quality
from ser.diffusion.encoder_mixing import generated_for_encoder
from ser.diffusion.mixing import edited_training_set, synthetic_training_set, wants_edits, wants_synthetic
from ser.environment import describe_environment
from ser.evaluation.aggregate import arm_label
from ser.evaluation.metrics import bootstrap_ci, classification_metrics
from ser.evaluation.plots import plot_confusion, plot_layer_weights
from ser.features.augment import wants_audio
from ser.features.smile import SmileFunctionals
from ser.hardware import build_trainer, inference_device
from ser.instantiators import instantiate_callbacks, instantiate_loggers
from ser.io import write_json
from ser.jobs.resume import completed_results, sole_writer
from ser.models.backbones import learned_layer_weights
from ser.models.classical import fit_predict_classical, input_names
from ser.models.classifier import EmotionClassifier
from ser.models.export import export_classifier, predict_proba
from ser.tracking import finish, log_test_results

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig, arm: dict | None = None) -> dict | None:
    """Train and test one configuration in `cfg.paths.output_dir`; returns the results (None on
    non-zero DDP ranks). `arm`: the run's identity within a sweep (ser.experiment.arm_of)."""
    check_train_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with sole_writer(run_dir):
        return _run(cfg, run_dir, arm)


def _run(cfg: DictConfig, run_dir: Path, arm: dict | None) -> dict | None:
    if cfg.resume:
        done = completed_results(cfg, run_dir)
        if done is not None:
            log.info("%s already holds this run's complete results; skipping it (resume=false reruns it)", run_dir)
            return done
    started = time.time()
    neural = cfg.model.kind == "neural"
    # The classical baseline computes its own functionals; networks read them only if configured.
    data, split = prepare(cfg, functionals=neural and bool(cfg.features.functionals))
    log.info("%s fold %d/%d: test speakers %s, %d train / %d val / %d test clips, %d skipped",
             split.protocol, split.fold, split.n_folds, split.test_speakers, len(split.train), len(split.val),
             len(split.test), len(data.skipped))
    if neural:
        y_prob, extra, loggers = _fit_predict_neural(cfg, data, split, run_dir, arm)
        if y_prob is None:
            return None
    else:
        y_prob, extra = _fit_predict_classical(cfg, data, split, run_dir)
        loggers = []
    if split.protocol == "cross_corpus":
        corpora = lambda side: sorted({s.split(":")[0] for s in side})  # noqa: E731
        extra["cross_corpus"] = {"train": corpora(split.train_speakers), "test": corpora(split.test_speakers),
                                 "shared_emotions": data.emotions,
                                 "mapping": label_mapping(corpora(data.speakers), data.emotions)}
    results = _results(cfg, data, split, y_prob, extra, arm, time.time() - started)
    confusion_png = plot_confusion(results["metrics"]["confusion"], data.emotions, run_dir / "confusion_matrix.png",
                                   title=f"{cfg.dataset.name} {split.protocol} fold {split.fold}: UA {results['metrics']['ua']:.3f}")
    write_json(run_dir / "results.json", results)
    log_test_results(loggers, results, confusion_png)
    finish(loggers)
    log.info("UA %.3f (95%% CI %.3f-%.3f), WA %.3f, macro-F1 %.3f -> %s", results["metrics"]["ua"],
             *results["metrics"]["ua_ci95"], results["metrics"]["wa"], results["metrics"]["macro_f1"], run_dir / "results.json")
    return results


def _front_end_spec(cfg) -> dict:
    """The features config as model.json records it, with the digest of the speech encoder's
    weights (or extractor) that made them: Predictor refuses others."""
    front_end = OmegaConf.to_container(cfg.features, resolve=True)
    if cfg.features.kind in DIGESTS:
        front_end["encoder"][DIGESTS[cfg.features.kind]] = front_end_from(cfg.features).digest
    return front_end


def _fit_predict_classical(cfg, data, split, run_dir: Path):
    """The classical path (an SVM on functionals, a linear probe on encoder layers), with the copies
    an augmentation arm adds: waveform-augmented clips, or generated clips encoded like real ones."""
    copies, generated = None, None
    if wants_audio(cfg.aug):
        reads = "functionals" in input_names(cfg.model.inputs)
        smile = SmileFunctionals(cfg.model.feature_set, cfg.features.sr, cfg.features.min_duration,
                                 cfg.features.max_duration) if reads else None
        copies = augmented_clips(cfg, data, np.concatenate([split.train, split.val]), functionals=smile)
    elif wants_synthetic(cfg.aug) or wants_edits(cfg.aug):
        # The same probe on the real clips alone (what aug=none trains): the yardstick the
        # generated clips are measured by, and the filter's judge with aug.synthetic.judge=classifier.
        real_probs, _, real_only = fit_predict_classical(cfg, data, split)
        copies, generated = generated_for_encoder(cfg, data, split, real_only)
    y_prob, extra, linear = fit_predict_classical(cfg, data, split, extra=copies)
    if generated is not None:
        # How this probe sees the generated clips, judged by the same probe on real clips alone.
        generated["quality_in_classifier_space"] = assess_in_classifier_space(
            cfg, data, split, copies, real_only, real_probs, seed=cfg.seed)
        log_classifier_space_quality(generated["quality_in_classifier_space"])
    extra["audio_augmentation"] = _audio_report(cfg, copies) if generated is None else None
    extra["synthetic"] = generated
    if linear is not None:  # a linear classifier exports as arrays; a kernel SVM does not
        linear.save(run_dir / "model", {"front_end": _front_end_spec(cfg), "trained_on": split.train_speakers,
                                        "model": {k: OmegaConf.to_container(cfg.model, resolve=True)[k]
                                                  for k in ("inputs", "layers", "feature_set", "speaker_norm")}})
    return y_prob, extra


def _fit_predict_neural(cfg, data, split, run_dir: Path, arm):
    pl.seed_everything(cfg.seed, workers=True)
    m, aug = cfg.model, cfg.aug
    backbone = OmegaConf.to_container(m.backbone, resolve=True)
    # Sizes a config leaves to the data (an encoder's layers and width), like side_dim below;
    # saved in model.json, so the export rebuilds the network alone.
    channels, rows = data.features[0].shape[:2]
    for key, size in (("in_chans", channels), ("feat_dim", rows)):
        if key in backbone and backbone[key] is None:
            backbone[key] = int(size)
    if data.functionals is not None:
        backbone["side_dim"] = int(data.functionals[0].numel())  # saved in model.json, so the export rebuilds
    dm = SERDataModule(
        data, split, normalization=m.input.normalization, size=m.input.size, frames=m.input.frames,
        resize_method=m.input.resize_method, pad=m.input.pad,
        specaug=OmegaConf.to_container(aug.specaug) if aug.specaug else None,
        batch_size=m.batch_size, num_workers=cfg.hardware.num_workers,
    )
    synthetic_info = None
    if wants_synthetic(aug):
        dm.extra_train, synthetic_info = synthetic_training_set(cfg, dm, data, split, cfg.seed)
        dm.extra_only = synthetic_info["only"]
    elif wants_edits(aug):
        dm.extra_train, synthetic_info = edited_training_set(cfg, dm, data, split)
    copies = None
    if wants_audio(aug):
        copies = augmented_clips(cfg, data, split.train, functionals=functionals_front_end(cfg.features)
                                 if data.functionals is not None else None)
        dm.extra_train = dm.training_copies(copies)
    class_weights = None
    if m.class_weights == "balanced":
        # Inverse-frequency weights so every emotion counts equally in the loss, as it does in UA.
        counts = dm.class_counts()
        class_weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()
    model = EmotionClassifier(backbone=backbone, num_classes=dm.num_classes, emotions=data.emotions,
                              optimizer=OmegaConf.to_container(m.optimizer, resolve=True),
                              scheduler=OmegaConf.to_container(m.scheduler, resolve=True),
                              class_weights=class_weights, label_smoothing=m.label_smoothing,
                              mixup_alpha=aug.mixup_alpha)
    run_name = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.aug.name}-f{split.fold}-s{cfg.seed}"
    loggers = instantiate_loggers(cfg.logger, wandb={"name": run_name, "group": arm_label(arm or {})})
    for logger in loggers:  # the whole resolved config, so a dashboard can filter runs by any setting
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    has_val = len(split.val) > 0
    callbacks = list(instantiate_callbacks(cfg.callbacks).values())
    if not has_val:
        # No validation speakers: a callback that watches a validation metric would wait for a value
        # that never comes (model.select=best is refused for such splits in ser.config).
        callbacks = [c for c in callbacks if not str(getattr(c, "monitor", None) or "").startswith("val/")]
    trainer = build_trainer(cfg.trainer, cfg.hardware, logger=loggers or False, callbacks=callbacks,
                            default_root_dir=str(run_dir), limit_val_batches=1.0 if has_val else 0)
    resume = _last_checkpoint(trainer) if cfg.resume else None
    if resume is not None:
        log.info("resuming from %s", resume)
        trainer.fit(model, datamodule=dm, ckpt_path=str(resume), weights_only=True)
    else:
        trainer.fit(model, datamodule=dm)
    if trainer.global_rank != 0:
        return None, None, None
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    use = best.best_model_path if m.select == "best" else str(_last_checkpoint(trainer))
    model.load_state_dict(torch.load(use, map_location="cpu", weights_only=True)["state_dict"])
    front_end = _front_end_spec(cfg)
    if hasattr(model.net, "encoder_config"):  # a fine-tuned encoder: its architecture travels with the weights
        backbone = dict(backbone, encoder_config=model.net.encoder_config())
    spec = {"backbone": backbone, "emotions": data.emotions, "front_end": front_end,
            "input": OmegaConf.to_container(m.input, resolve=True), "trained_on": split.train_speakers}
    export_classifier(run_dir / "model", model.net, dm.normalizer, spec, functionals_normalizer=dm.functionals_normalizer)
    test_set = dm.dataset("test")  # the evaluation pipeline, and the functionals where the model reads them
    test_inputs = [test_set[j][0] for j in range(len(test_set))]
    y_prob = predict_proba(model.net, test_inputs, batch_size=m.batch_size, device=inference_device(cfg.hardware)).numpy()
    layer_weights = learned_layer_weights(model.net)
    if layer_weights is not None:
        plot_layer_weights(layer_weights, run_dir / "layer_weights.png", title=f"{cfg.dataset.name} fold {split.fold}")
    extra = {
        "layer_weights": layer_weights,
        "selected_checkpoint": Path(use).name,
        "best_val_ua": None if best is None or best.best_model_score is None else float(best.best_model_score),
        "epochs_trained": trainer.current_epoch, "class_weights": class_weights,
        "weights": backbone["weights"] or ("timm hub (ImageNet)" if backbone["pretrained"] else "none: trained from scratch"),
        "normalization": m.input.normalization,
        "transductive": m.input.normalization == "speaker",
        "synthetic": synthetic_info,
        "audio_augmentation": _audio_report(cfg, copies),
    }
    return y_prob, extra, loggers


def _audio_report(cfg, copies) -> dict | None:
    if copies is None:
        return None
    return {"variants": int(cfg.aug.audio.variants), "n_used": len(copies.clips),
            "transforms": OmegaConf.to_container(cfg.aug.audio.transforms, resolve=True), "skipped": copies.skipped}


def _last_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The run dir's Lightning "last" checkpoint (a ModelCheckpoint named `last`), if it exists."""
    for c in trainer.checkpoint_callbacks:
        if isinstance(c, ModelCheckpoint) and c.filename == ModelCheckpoint.CHECKPOINT_NAME_LAST:
            path = Path(c.dirpath) / f"{c.filename}{ModelCheckpoint.FILE_EXTENSION}"
            return path if path.is_file() else None
    return None


def _results(cfg, data, split, y_prob, extra, arm, wall_time) -> dict:
    y_true = data.labels[split.test]
    y_pred = y_prob.argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, len(data.emotions))
    metrics["ua_ci95"] = list(bootstrap_ci(y_true, y_pred, n_boot=cfg.evaluation.n_bootstrap, seed=cfg.seed))
    return {
        "metrics": metrics,
        "emotions": data.emotions,
        **split.describe(),
        "seed": cfg.seed,
        "arm": arm or {},
        "skipped": data.skipped,
        "test_clips": [data.clips[i].path for i in split.test],
        "test_predictions": y_pred.tolist(),
        "test_labels": y_true.tolist(),
        "wall_time_s": round(wall_time, 2),
        "environment": describe_environment(),
        **extra,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
