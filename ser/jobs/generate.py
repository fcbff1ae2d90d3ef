"""The generate.py job: train a fold's generator on that fold's training speakers, sample a
synthetic set from it, edit real clips with it (SDEdit), or measure its samples' quality.

Outputs (shared by every train.py run of the fold; conf/generator/default.yaml names the folders):
  <generator.dir>/[<emotion>/]unet, scheduler, metadata.json, convergence.png   the generator(s)
  <generator.synthetic_dir>/synthetic.safetensors                             N spectrograms per emotion, in dB
  <generator.synthetic_dir>/grid_<emotion>.png, <emotion>_<k>.wav              to look at and listen to
  <generator.synthetic_dir>/quality.json, real_vs_generated.png                mode=quality
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from ser.config import check_generate_config
from ser.data.build import prepare
from ser.diffusion.assess import assess_synthetic_set
from ser.diffusion.generator import generator_metadata_at
from ser.diffusion.pool import fold_lock
from ser.diffusion.sampling import enhance_clips, sample_set
from ser.diffusion.provenance import assert_same_training_clips, generator_metadata, recipe_differences, sample_frames
from ser.diffusion.training import train_fold_generators
from ser.hardware import inference_device
from ser.instantiators import instantiate_loggers
from ser.tracking import finish, log_report

log = logging.getLogger(__name__)


def run_generate(cfg: DictConfig) -> dict:
    """Do `cfg.mode` for one fold; returns what was done (the generator's metadata, timings, the quality report)."""
    check_generate_config(cfg)
    pl.seed_everything(cfg.seed)
    data, split = prepare(cfg, functionals=False)
    frames = sample_frames(data, split, cfg.sample.frames)
    device = inference_device(cfg.hardware)
    # Training speakers only: never the fold's test speakers (and not its validation speakers).
    meta = generator_metadata(cfg, data, split, frames)
    started = time.time()
    # The fold's lock, shared with train.py's on-demand generation: nobody reads a half-made fold.
    # mode=quality reads only a finished sample set (written atomically), so it does not wait for
    # the lock: a sweep training the fold's generator for an hour need not hold up a judgement.
    with fold_lock(cfg.generator.root, "generator and samples") if cfg.mode != "quality" else nullcontext():
        if cfg.mode in ("train", "train_sample"):
            train_fold_generators(cfg, data, split, meta, cfg.trainer)
        elif cfg.mode in ("sample", "enhance") and (saved := generator_metadata_at(cfg.generator.dir, data.emotions)):
            assert_same_training_clips(saved, data, split, where=f"the generator {cfg.generator.dir}")
            if changes := recipe_differences(saved, cfg.diffusion):
                # Sampling reads the saved network as it is; say so, since the settings given here are not it.
                log.warning("the generator %s was trained with other diffusion settings than given here (%s); "
                            "sampling it as it was trained", cfg.generator.dir, changes)
        meta["train_time_s"] = round(time.time() - started, 1)
        if cfg.mode in ("sample", "train_sample"):
            sample_set(cfg, data.emotions, frames, n_mels=data.features[0].shape[-2], device=device)
    if cfg.mode == "enhance":
        enhance_clips(cfg, data, split, device)
    if cfg.mode == "quality":
        report = meta["quality"] = assess_synthetic_set(cfg, data, split)
        loggers = instantiate_loggers(cfg.logger, wandb={"job_type": "quality"})
        for logger in loggers:
            logger.log_hyperparams({"synthetic_set": report["synthetic_set"], "classifier": report["classifier"]})
        log_report(loggers, "quality", {k: report[k] for k in ("embedding", "image", "real_classifier_on_synthetic",
                                                              "real_classifier_on_heldout")},
                   images={"real_vs_generated": Path(cfg.generator.synthetic_dir) / "real_vs_generated.png"})
        finish(loggers)
    return meta
