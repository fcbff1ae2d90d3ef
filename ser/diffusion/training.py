"""Train a fold's generator(s) on that fold's training speakers, measuring convergence on its
validation speakers (held-out denoising loss), and save them (ser/diffusion/generator.py format)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.ddpm import SpectrogramDDPM
from ser.diffusion.image_space import db_to_model, to_image
from ser.errors import GeneratorFoldLeak
from ser.evaluation.plots import plot_convergence
from ser.features.mel import MelParams
from ser.hardware import build_trainer
from ser.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def training_images(data: LabelledClips, indices, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([to_image(db_to_model(data.features[i]), size) for i in indices])
    return images, torch.as_tensor(data.labels[indices])


class LossCurve(pl.Callback):
    """Training and held-out denoising loss after every epoch (validation has already run then)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                          **{k: round(float(m[k]), 5) for k in ("train/loss", "val/loss") if k in m}})

    # Kept in the checkpoint, so a resumed training's curve starts at epoch 0, not at the resume.
    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])


def convergence(rows: list[dict], tolerance: float = 0.05) -> dict:
    """When did the held-out denoising loss get within `tolerance` of its best, and was it still
    falling at the end (last fifth of training still gained more than 2%)?"""
    curve = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
    if not curve:
        return {"measured": False, "reason": "no held-out clips (validation speakers) to measure on"}
    best = min(v for _, v in curve)
    reached = next(step for step, v in curve if v <= best * (1 + tolerance))
    late = curve[int(0.8 * (len(curve) - 1))][1]
    return {"measured": True, "best_val_loss": best, "final_val_loss": curve[-1][1],
            f"steps_to_within_{int(tolerance * 100)}pct_of_best": reached, "steps_trained": curve[-1][0],
            "still_improving": curve[-1][1] < 0.98 * late}


class ResumeCheckpoint(pl.Callback):
    """The whole training state after every epoch, in one file replaced atomically (a kill while
    writing leaves the previous epoch's). Lightning's ModelCheckpoint writes `last.ckpt` only
    beside a top-k checkpoint, which a run without a monitored metric never makes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module):
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, optimizer included; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class Snapshots(pl.Callback):
    """Every `every` optimizer steps, the generator as it would be saved then (EMA weights) in
    <root>/step_<N>/<sub>/: sample quality against training steps, measured afterwards with
    generate.py mode=sample and mode=quality on each (`generator.dir=<snapshot>`). A snapshot's
    metadata is the finished generator's, so the same fold-safety checks apply to it."""

    def __init__(self, every: int, root: Path, sub: str, metadata: dict):
        self.every, self.root, self.sub, self.metadata = int(every), Path(root), sub, metadata

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        target = self.root / f"step_{step}" / self.sub
        if (target / "metadata.json").is_file():
            return  # made before an interruption
        generator = pl_module.to_generator({**self.metadata, "training": {"snapshot_at_step": step}})
        with atomic_dir(target) as tmp:
            generator.write_into(tmp)


# What a checkpoint may be resumed under: everything but the budget, so raising `epochs` or
# `max_steps` continues an interrupted training instead of restarting it.
_BUDGET_KEYS = ("epochs", "max_steps", "early_stopping")


def _training_problem(recipe: DictConfig, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> dict:
    """The recipe (minus its budget) and a digest of the exact training images and labels."""
    h = hashlib.sha256(images.numpy().tobytes())
    if labels is not None:
        h.update(labels.numpy().tobytes())
    settings = {k: v for k, v in OmegaConf.to_container(recipe, resolve=True).items() if k not in _BUDGET_KEYS}
    return {"recipe": settings, "num_classes": num_classes, "images": list(images.shape), "data_digest": h.hexdigest()[:16]}


def resumable_checkpoint(checkpoint_dir: Path, problem: dict) -> Path | None:
    """The last checkpoint in `checkpoint_dir` if it was made for this same problem; otherwise the
    folder is cleared (a stale checkpoint of another recipe or other data must not be continued)."""
    stamp, last = checkpoint_dir / "problem.json", checkpoint_dir / "last.ckpt"
    if stamp.exists() and last.exists():
        if json.loads(stamp.read_text()) == problem:
            return last
        log.warning("discarding the interrupted generator training in %s: it was for another recipe or other "
                    "training clips", checkpoint_dir)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    write_json(stamp, problem)
    return None


def fit_generator(recipe: DictConfig, trainer: DictConfig, hardware: DictConfig, images: torch.Tensor,
                  labels: torch.Tensor | None, num_classes: int, val_images: torch.Tensor | None = None,
                  val_labels: torch.Tensor | None = None, checkpoint_dir: Path | None = None,
                  extra_callbacks: tuple[pl.Callback, ...] = ()) -> tuple[SpectrogramDDPM, dict]:
    """Train one generator (`recipe`: a conf/diffusion/*.yaml node); returns the trained module and
    its loss curve with a convergence summary. With `checkpoint_dir`, the training state (weights,
    EMA, optimizer, loop position, loss curve) is saved there after every epoch, and a training of
    the same problem killed earlier continues from its last epoch."""
    model = SpectrogramDDPM(OmegaConf.to_container(recipe.unet, resolve=True), num_classes=num_classes,
                            num_train_timesteps=recipe.num_train_timesteps, beta_schedule=recipe.beta_schedule,
                            lr=recipe.lr, p_uncond=recipe.p_uncond, ema_decay=recipe.ema_decay,
                            snr_gamma=recipe.get("snr_gamma"))
    zeros = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    y = labels if labels is not None else zeros(len(images))
    loader = DataLoader(TensorDataset(images, y), batch_size=recipe.batch_size, shuffle=True, drop_last=False)
    has_val = val_images is not None and len(val_images) > 0
    val_loader = None
    if has_val:
        vy = val_labels if val_labels is not None else zeros(len(val_images))
        val_loader = DataLoader(TensorDataset(val_images, vy), batch_size=recipe.batch_size, shuffle=False)
    curve = LossCurve()
    callbacks = [curve, *extra_callbacks]
    if recipe.early_stopping is not None and has_val:
        # Train until held-out denoising stops improving (capped by max_steps / epochs).
        callbacks.append(instantiate(recipe.early_stopping))
    resume_from = None
    if checkpoint_dir is not None:
        resume_from = resumable_checkpoint(checkpoint_dir, _training_problem(recipe, images, labels, num_classes))
        callbacks.append(ResumeCheckpoint(checkpoint_dir / "last.ckpt"))  # last: it saves what the others recorded
        if resume_from is not None:
            log.info("resuming the generator training interrupted in %s", checkpoint_dir)
    fit = build_trainer(trainer, hardware, callbacks=callbacks, limit_val_batches=1.0 if has_val else 0)
    # Our own checkpoint of plain tensors and numbers: no need to unpickle anything else.
    fit.fit(model, loader, val_loader, ckpt_path=resume_from, weights_only=True)
    summary = convergence(curve.rows)
    log.info("generator trained: %d steps (%d images, batch %d); convergence: %s", fit.global_step, len(images),
             recipe.batch_size, summary)
    return model, {"curve": curve.rows, "convergence": summary}


def sample_frames(data: LabelledClips, split: Split, frames: int | None = None) -> int:
    """The time frames of a fold's synthetic spectrograms: `frames`, or the median of its training clips."""
    return int(frames or np.median([data.features[i].shape[-1] for i in split.train]))


def _log_mel_front_end(cfg: DictConfig) -> dict:
    """The front end a generator learns from: the run's log-mel (features=default, maybe retuned);
    for a run whose classifier reads a speech encoder, the reference log-mel (MelParams()), or
    Whisper's input (diffusion.space=encoder_input)."""
    if cfg.diffusion.space == "encoder_input":
        return {"kind": "whisper_input_db", "name": str(cfg.features.encoder.name)}
    if cfg.features.kind == "mel":
        return OmegaConf.to_container(cfg.features, resolve=True)
    return {"kind": "mel", **MelParams().as_dict(), "why": f"the run reads features.kind={cfg.features.kind}"}


def generator_metadata(cfg: DictConfig, data: LabelledClips, split: Split, frames: int) -> dict:
    """What a fold's generator records about itself: fold safety is checked against its exact
    training speakers, training fraction and (in low-data runs) training clips."""
    return {"emotions": data.emotions, "train_speakers": split.train_speakers, "dataset": cfg.dataset.name,
            "protocol": split.protocol, "fold": split.fold, "image_size": cfg.diffusion.image_size, "frames": frames,
            "recipe": cfg.diffusion.name, "front_end": _log_mel_front_end(cfg), "seed": cfg.generator.seed,
            "train_fraction": float(cfg.dataset.train_fraction), "n_train_clips": len(split.train),
            "train_clips_digest": training_clips_digest(data, split)}


def training_clips_digest(data: LabelledClips, split: Split) -> str:
    """Which real clips a generator learned from, as a digest that survives moving the corpus
    (each clip's speaker, emotion and file name): in a low-data run the fold and fraction do not
    say which subset it was (split.seed draws it)."""
    ids = sorted(f"{c.speaker}|{c.emotion}|{Path(c.path).name}" for c in (data.clips[int(i)] for i in split.train))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def assert_same_training_clips(meta: dict, data: LabelledClips, split: Split, where: str) -> None:
    """A low-data run may use only a generator (or its samples) made from its own training subset:
    one made from another subset of the same size has seen real clips this run may not use. (At
    full data the fold's training speakers fix the clips; the speaker check covers that.)"""
    if float(meta.get("train_fraction", 1.0)) >= 1.0:
        return
    ours, theirs = training_clips_digest(data, split), meta.get("train_clips_digest")
    # Generators made before the digest existed record only how many clips they learned from.
    differs = theirs != ours if theirs is not None else int(meta.get("n_train_clips", len(split.train))) != len(split.train)
    if differs:
        raise GeneratorFoldLeak(
            f"{where} was made from another subset of this fold's training clips (dataset.train_fraction="
            f"{meta['train_fraction']} drawn with a different split.seed, or a corpus whose clips changed), so it has "
            "seen real clips this run may not use. Give this run its own generator.root=<dir>, or delete "
            f"{where} to remake it from this run's subset.")


def train_fold_generators(cfg: DictConfig, data: LabelledClips, split: Split, metadata: dict,
                          trainer: DictConfig) -> Path:
    """Train the recipe's generator(s) on the split's training speakers only (never its test or
    validation speakers; the validation speakers measure convergence) and save them to
    `cfg.generator.dir`: one conditional generator, or one per emotion (`diffusion.per_emotion`)
    in <dir>/<emotion>/. `trainer`: the generators' Trainer config (conf/trainer/generator.yaml).
    The folder appears complete or not at all; until then the training checkpoints live in
    <dir>.partial/, so a killed run's successor resumes it (long CPU recipes take hours)."""
    pl.seed_everything(cfg.generator.seed)
    partial = Path(f"{cfg.generator.dir}.partial")
    recipe, emotions = cfg.diffusion, data.emotions
    images, labels = training_images(data, split.train, recipe.image_size)
    val_images, val_labels = training_images(data, split.val, recipe.image_size) if len(split.val) else (None, None)
    trained = []  # (sub-folder, generator, curve title)
    every = recipe.get("snapshot_every_steps")  # optional: the generator every N steps, in <root>/snapshots/

    def snapshots(sub: str, meta: dict) -> tuple[pl.Callback, ...]:
        return (Snapshots(every, Path(cfg.generator.root) / "snapshots", sub, meta),) if every else ()
    if recipe.per_emotion:
        for k, emotion in enumerate(emotions):
            val_k = val_images[val_labels == k] if val_images is not None else None
            module, training = fit_generator(recipe, trainer, cfg.hardware, images[labels == k], None, 0, val_k,
                                             checkpoint_dir=partial / emotion,
                                             extra_callbacks=snapshots(emotion, {**metadata, "emotion": emotion}))
            trained.append((emotion, module.to_generator({**metadata, "emotion": emotion, "training": training}),
                            f"{emotion} generator"))
    else:
        module, training = fit_generator(recipe, trainer, cfg.hardware, images, labels, len(emotions),
                                         val_images, val_labels, checkpoint_dir=partial / "conditional",
                                         extra_callbacks=snapshots("", metadata))
        trained.append(("", module.to_generator({**metadata, "training": training}), "conditional generator"))
    with atomic_dir(cfg.generator.dir) as tmp:
        for sub, generator, title in trained:
            folder = generator.write_into(tmp / sub)
            plot_convergence(generator.metadata["training"]["curve"], folder / "convergence.png", title)
    shutil.rmtree(partial, ignore_errors=True)
    return Path(cfg.generator.dir)
