"""One experiment: a resolved Hydra config -> a trained model and `results.json` in the run dir.

train.py is a thin entry point around `run_experiment`; everything a run does is here, in order:
data, split, model, Lightning fit, test on held-out speakers, results and trackers.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ser.data.build import front_end_from, functionals_front_end, labelled_mels, load_corpus
from ser.data.splits import make_split, subsample_training
from ser.evaluation.metrics import bootstrap_ci, classification_metrics
from ser.evaluation.plots import plot_confusion

log = logging.getLogger(__name__)



def inference_device(hw) -> str:
    """Where work outside Lightning's loops (test-set scoring, sampling) runs: the GPU the config asked for, if any."""
    return "cuda" if torch.cuda.is_available() and hw.accelerator in ("gpu", "cuda", "auto") else "cpu"

def prepare(cfg: DictConfig):
    """Corpus, cached spectrograms and this run's split (shared by every model kind)."""
    cache_dir = Path(cfg.paths.cache_dir)
    corpus = load_corpus(OmegaConf.to_container(cfg.dataset, resolve=True), cache_dir)
    data = labelled_mels(corpus, front_end_from(cfg.features), cache_dir, workers=cfg.features.workers,
                         # Per-clip functionals only for the networks (generate.py composes no model).
                         functionals=functionals_front_end(cfg.features) if OmegaConf.select(cfg, "model.kind") == "neural" else None)
    s = cfg.split
    split = make_split(data.speakers, [c.emotion for c in data.clips], protocol=s.protocol, fold=s.fold, k=s.k,
                       n_val_speakers=s.n_val_speakers, val_fraction=s.val_fraction, seed=s.seed)
    fraction = cfg.dataset.get("train_fraction", 1.0)
    if fraction < 1.0:
        # Seeded by the split, not the run: every training seed and the fold's generator see the
        # same subset, so "identical folds" holds in low-data studies too.
        split.train = subsample_training(split.train, data.labels, fraction, seed=s.seed)
    return data, split


def run_experiment(cfg: DictConfig, run_dir: str | Path, arm: dict | None = None) -> dict | None:
    """Train and test one configuration; returns the results (None on non-zero DDP ranks)."""
    run_dir = Path(run_dir)
    started = time.time()
    data, split = prepare(cfg)
    log.info("%s fold %d/%d: test speakers %s, %d train / %d val / %d test clips, %d skipped",
             split.protocol, split.fold, split.n_folds, split.test_speakers, len(split.train), len(split.val),
             len(split.test), len(data.skipped))
    if cfg.model.kind == "classical":
        from ser.models.classical import fit_predict_classical

        y_prob, extra = fit_predict_classical(cfg, data, split)
        loggers = []
    else:
        y_prob, extra, loggers = _fit_predict_neural(cfg, data, split, run_dir, arm)
        if y_prob is None:
            return None
    results = _results(cfg, data, split, y_prob, extra, arm, time.time() - started)
    confusion_png = plot_confusion(results["metrics"]["confusion"], data.emotions, run_dir / "confusion_matrix.png",
                                   title=f"{cfg.dataset.name} {split.protocol} fold {split.fold}: UA {results['metrics']['ua']:.3f}")
    _write_json(run_dir / "results.json", results)
    from ser.tracking import finish, log_test_results

    log_test_results(loggers, results, confusion_png)
    finish(loggers)
    log.info("UA %.3f (95%% CI %.3f-%.3f), WA %.3f, macro-F1 %.3f -> %s", results["metrics"]["ua"],
             *results["metrics"]["ua_ci95"], results["metrics"]["wa"], results["metrics"]["macro_f1"], run_dir / "results.json")
    return results


def _fit_predict_neural(cfg, data, split, run_dir: Path, arm):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from ser.data.datamodule import SERDataModule
    from ser.models.classifier import EmotionClassifier
    from ser.models.export import export_classifier, predict_proba
    from ser.tracking import build_loggers

    pl.seed_everything(cfg.seed, workers=True)
    m, aug = cfg.model, cfg.aug
    if m.input.normalization == "none" and cfg.features.get("kind", "mel") != "mel":
        # "none" is a fixed map of the [-80, 0] dB range; descriptors in Hz, dB and ratios need statistics.
        raise ValueError(f"model.input.normalization=none only suits log-mel dB; with features.kind="
                         f"{cfg.features.kind!r} use global or speaker")
    backbone = OmegaConf.to_container(m.backbone, resolve=True)
    if backbone["arch"] == "hybrid_tdnn":
        if data.functionals is None:
            raise ValueError("model=hybrid_tdnn reads per-clip openSMILE functionals beside the frames: set "
                             "features.functionals (e.g. features=compare_lld_functionals, or features.functionals=ComParE_2016)")
        backbone["side_dim"] = int(data.functionals[0].numel())  # saved in model.json, so the export rebuilds
    elif data.functionals is not None:
        raise ValueError(f"features.functionals={cfg.features.functionals} is read only by model=hybrid_tdnn, "
                         f"not by {backbone['arch']}; drop it or switch model")
    dm = SERDataModule(
        data, split, normalization=m.input.normalization, size=m.input.get("size"), frames=m.input.get("frames"),
        resize_method=m.input.get("resize_method", "bilinear"), pad=m.input.get("pad", "zero"),
        specaug=OmegaConf.to_container(aug.specaug) if aug.get("specaug") else None,
        batch_size=m.batch_size, num_workers=cfg.hardware.num_workers,
    )
    synthetic_info = None
    from ser.diffusion.mixing import synthetic_training_set, wants_synthetic

    if wants_synthetic(aug):
        if data.functionals is not None:
            raise ValueError("synthetic spectrograms have no openSMILE functionals; aug=ddpm cannot feed model=hybrid_tdnn")
        dm.extra_train, synthetic_info = synthetic_training_set(cfg, dm, split, data.emotions, len(split.train), cfg.seed)
        dm.extra_only = synthetic_info["only"]
    counts = dm.class_counts()
    class_weights = None
    if m.class_weights == "balanced":
        # Inverse-frequency weights so every emotion counts equally in the loss, as it does in UA.
        class_weights = (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()
    model = EmotionClassifier(backbone=backbone, num_classes=dm.num_classes, emotions=data.emotions, lr=m.lr,
                              weight_decay=m.weight_decay, optimizer=m.optimizer, scheduler=m.scheduler,
                              class_weights=class_weights, label_smoothing=m.label_smoothing,
                              mixup_alpha=aug.get("mixup_alpha", 0.0))
    run_name = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.aug.name}-f{split.fold}-s{cfg.seed}"
    loggers = build_loggers(cfg, run_dir, run_name, group=_arm_label(arm))
    has_val = len(split.val) > 0
    checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best",
                                 monitor="val/ua" if has_val else None, mode="max", save_top_k=1)
    # A second callback keeps the latest epoch: Lightning's save_last only refreshes last.ckpt
    # when a top-k checkpoint is written, which is not "the last epoch".
    latest = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", monitor=None,
                             save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    hw = cfg.hardware
    trainer = pl.Trainer(
        accelerator=hw.accelerator, devices=hw.devices, strategy=hw.strategy, num_nodes=hw.num_nodes,
        precision=hw.precision,
        # SyncBatchNorm exists for GPUs only; DDP on CPU (tests, gloo) keeps per-process statistics.
        sync_batchnorm=bool(hw.get("sync_batchnorm")) and str(hw.strategy).startswith("ddp") and hw.accelerator in ("gpu", "cuda"),
        max_epochs=m.epochs, logger=loggers or False, callbacks=[checkpoint, latest], default_root_dir=str(run_dir),
        enable_progress_bar=hw.progress_bar, log_every_n_steps=5, deterministic=cfg.get("deterministic", False),
        limit_val_batches=1.0 if has_val else 0, num_sanity_val_steps=0,
    )
    resume = run_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume", True) and resume.exists():
        log.info("resuming from %s", resume)
        trainer.fit(model, datamodule=dm, ckpt_path=str(resume), weights_only=True)
    else:
        trainer.fit(model, datamodule=dm)
    if trainer.global_rank != 0:
        return None, None, None
    use = checkpoint.best_model_path if (m.select == "best" and checkpoint.best_model_path) else latest.best_model_path
    state = torch.load(use, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    spec = {"backbone": backbone, "emotions": data.emotions, "front_end": OmegaConf.to_container(cfg.features),
            "input": OmegaConf.to_container(m.input, resolve=True), "trained_on": split.train_speakers}
    export_classifier(run_dir / "model", model.net, dm.normalizer, spec, functionals_normalizer=dm.functionals_normalizer)
    test_set = dm.dataset("test")  # the evaluation pipeline, and the functionals where the model reads them
    test_inputs = [test_set[j][0] for j in range(len(test_set))]
    y_prob = predict_proba(model.net, test_inputs, batch_size=m.batch_size, device=inference_device(hw)).numpy()
    extra = {
        "selected_checkpoint": Path(use).name, "best_val_ua": _float(checkpoint.best_model_score),
        "epochs_trained": trainer.current_epoch, "class_weights": class_weights,
        "weights": backbone.get("weights") or ("timm hub (ImageNet)" if backbone.get("pretrained") else "none: trained from scratch"),
        "normalization": m.input.normalization,
        "transductive": m.input.normalization == "speaker",
        "synthetic": synthetic_info,
    }
    return y_prob, extra, loggers


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
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "host_cpus": os.cpu_count(),
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        **extra,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _arm_label(arm: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((arm or {}).items())) or "default"


def _float(x):
    return None if x is None else float(x)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
