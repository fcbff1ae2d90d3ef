"""Train a fold's generator(s) on that fold's training speakers, measuring convergence on its
validation speakers (held-out denoising loss), resuming a killed training, and save them
(ser/diffusion/generator.py format; what they record about themselves: ser/diffusion/provenance.py).
A latent recipe (`diffusion.autoencoder`) first trains the fold's autoencoder, then the denoiser on
its latents."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
from diffusers import AutoencoderKL
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, TensorDataset

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.autoencoder import SpectrogramAutoencoder, encode_images, standardise
from ser.diffusion.callbacks import LossCurve, ResumeCheckpoint, Snapshots
from ser.diffusion.ddpm import SpectrogramDDPM
from ser.diffusion.image_space import db_to_model, to_image
from ser.diffusion.provenance import SAVED_WITHOUT, recipe_settings
from ser.evaluation.plots import plot_convergence
from ser.hardware import build_trainer
from ser.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def training_images(data: LabelledClips, indices, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([to_image(db_to_model(data.features[i]), size) for i in indices])
    return images, torch.as_tensor(data.labels[indices])


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


# What a checkpoint may be resumed under: everything but the budget, so raising `epochs` or
# `max_steps` continues an interrupted training instead of restarting it.
_BUDGET_KEYS = ("epochs", "max_steps", "early_stopping", "full_data_steps")


def step_budget(recipe: DictConfig, n_clips: int, n_full_clips: int) -> tuple[int, int]:
    """The Trainer's (max_epochs, max_steps) for a generator learning from `n_clips` of a fold's
    `n_full_clips` training clips. `epochs` counts passes over the clips it learns from, so at
    dataset.train_fraction=0.25 it would train a quarter of the full-data steps: too few
    (docs/benchmarks.md, "the 25% cpu generator is starved": one RAVDESS fold's KID fell from 1528x
    to 223x of held-out real at the full-data step count). With `full_data_steps` (the recipes'
    default) it trains as many steps as `epochs` over the full training set take, capped by
    `max_steps`, so a low-data study compares less data, not a shorter training."""
    epochs, max_steps = int(recipe.epochs), int(recipe.max_steps)
    if not recipe.get("full_data_steps", False) or n_full_clips <= n_clips:
        return epochs, max_steps
    steps = epochs * math.ceil(n_full_clips / recipe.batch_size)
    return -1, (min(steps, max_steps) if max_steps > 0 else steps)


def _training_problem(recipe: DictConfig, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> dict:
    """The recipe (minus its budget and what does not shape the generator) and a digest of the
    exact training images and labels."""
    h = hashlib.sha256(images.numpy().tobytes())
    if labels is not None:
        h.update(labels.numpy().tobytes())
    # A setting at the value it had before it existed is left out, so adding one to the recipes
    # does not restart the trainings interrupted before it.
    settings = {k: v for k, v in recipe_settings(recipe).items()
                if k not in _BUDGET_KEYS and not (k in SAVED_WITHOUT and SAVED_WITHOUT[k] == v)}
    return {"recipe": settings, "num_classes": num_classes, "images": list(images.shape), "data_digest": h.hexdigest()[:16]}


def resumable_checkpoint(checkpoint_dir: Path, problem: dict) -> Path | None:
    """The last checkpoint in `checkpoint_dir` if it was made for this same problem; otherwise the
    folder is cleared (a stale checkpoint of another recipe or other data must not be continued)."""
    stamp, last = checkpoint_dir / "problem.json", checkpoint_dir / "last.ckpt"
    same = stamp.exists() and last.exists() and json.loads(stamp.read_text()) == problem
    if rank_zero_only.rank != 0:  # DDP: the other ranks read what rank 0 decided, never clear it
        return last if same else None
    if same:
        return last
    if stamp.exists() and last.exists():
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
                  extra_callbacks: tuple[pl.Callback, ...] = (),
                  n_full_clips: int | None = None) -> tuple[SpectrogramDDPM, dict]:
    """Train one generator (`recipe`: a conf/diffusion/*.yaml node); returns the trained module and
    its loss curve with a convergence summary. `n_full_clips`: in a low-data run, how many training
    clips the fold has in all (the step budget: step_budget). With `checkpoint_dir`, the training state (weights,
    EMA, optimizer, loop position, loss curve) is saved there after every epoch, and a training of
    the same problem killed earlier continues from its last epoch."""
    # The grid the UNet sees is the data's: the image, or a latent recipe's latent grid.
    unet = {**OmegaConf.to_container(recipe.unet, resolve=True), "sample_size": int(images.shape[-1])}
    model = SpectrogramDDPM(unet, num_classes=num_classes, num_train_timesteps=recipe.num_train_timesteps,
                            beta_schedule=recipe.beta_schedule, lr=recipe.lr, p_uncond=recipe.p_uncond,
                            ema_decay=recipe.ema_decay, snr_gamma=recipe.get("snr_gamma"),
                            in_channels=int(images.shape[1]), lr_schedule=recipe.get("lr_schedule", "constant"))
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
    n_full_clips = n_full_clips or len(images)
    max_epochs, max_steps = step_budget(recipe, len(images), n_full_clips)
    # The Trainer's settings already read the recipe's budget (conf/trainer/generator.yaml), so only a
    # budget changed by full_data_steps is written over them; otherwise a caller's own Trainer limits hold.
    if (max_epochs, max_steps) != (int(recipe.epochs), int(recipe.max_steps)):
        trainer = OmegaConf.merge(trainer, {"max_epochs": max_epochs, "max_steps": max_steps})
    fit = build_trainer(trainer, hardware, callbacks=callbacks, limit_val_batches=1.0 if has_val else 0)
    # Our own checkpoint of plain tensors and numbers: no need to unpickle anything else.
    fit.fit(model, loader, val_loader, ckpt_path=resume_from, weights_only=True)
    summary = convergence(curve.rows)
    log.info("generator trained: %d steps (%d images, batch %d); convergence: %s", fit.global_step, len(images),
             recipe.batch_size, summary)
    budget = {"max_epochs": max_epochs, "max_steps": max_steps, "steps_trained": int(fit.global_step),
              "clips": len(images), "full_data_clips": int(n_full_clips)}
    return model, {"curve": curve.rows, "convergence": summary, "budget": budget}


def fit_autoencoder(recipe: DictConfig, trainer: DictConfig, hardware: DictConfig, images: torch.Tensor,
                    val_images: torch.Tensor | None, checkpoint_dir: Path) -> tuple[AutoencoderKL, dict]:
    """A latent recipe's first stage: the fold's autoencoder (`recipe.autoencoder`), trained for its
    own step budget on the fold's training images, resumable like the denoiser; returns it and what
    the generator records about it ("latent": the latents' shift and scale, and the training)."""
    ae = recipe.autoencoder
    trained = checkpoint_dir / "trained"
    # Its own problem: the denoiser's settings may change without retraining it.
    problem = {"autoencoder": OmegaConf.to_container(ae, resolve=True), "image_size": int(recipe.image_size),
               "images": list(images.shape), "data_digest": hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]}
    resume_from = resumable_checkpoint(checkpoint_dir, problem)
    if (trained / "metadata.json").is_file():  # the denoiser's training was interrupted, not this one
        log.info("using the autoencoder trained before an interruption, %s", trained)
        vae = AutoencoderKL.from_pretrained(trained, use_safetensors=True, low_cpu_mem_usage=False)
        training = json.loads((trained / "metadata.json").read_text())
    else:
        module = SpectrogramAutoencoder(latent_channels=ae.latent_channels, block_out_channels=list(ae.block_out_channels),
                                        layers_per_block=ae.layers_per_block, norm_num_groups=ae.norm_num_groups,
                                        image_size=recipe.image_size, lr=ae.lr, kl_weight=ae.kl_weight)
        loader = DataLoader(TensorDataset(images), batch_size=ae.batch_size, shuffle=True)
        has_val = val_images is not None and len(val_images) > 0
        val_loader = DataLoader(TensorDataset(val_images), batch_size=ae.batch_size) if has_val else None
        curve = LossCurve()
        fit = build_trainer(OmegaConf.merge(trainer, {"max_epochs": -1, "max_steps": int(ae.max_steps)}), hardware,
                            callbacks=[curve, ResumeCheckpoint(checkpoint_dir / "last.ckpt")],
                            limit_val_batches=1.0 if has_val else 0)
        if resume_from is not None:
            log.info("resuming the autoencoder training interrupted in %s", checkpoint_dir)
        fit.fit(module, loader, val_loader, ckpt_path=resume_from, weights_only=True)
        vae = module.vae.eval()
        training = {"curve": curve.rows, "steps_trained": int(fit.global_step), "clips": len(images)}
        if rank_zero_only.rank == 0:
            with atomic_dir(trained) as tmp:
                vae.save_pretrained(tmp, safe_serialization=True)
                write_json(tmp / "metadata.json", training)
        log.info("autoencoder trained: %d steps (%d images)", fit.global_step, len(images))
    latents = encode_images(vae, images)
    # The denoiser learns standardised latents (unit variance, as its noise schedule assumes).
    latent = {"shift": float(latents.mean()), "scale": float(latents.std()), "channels": int(latents.shape[1]),
              "size": int(latents.shape[-1]), "autoencoder_training": training}
    return vae, latent


def standardised_latents(vae: AutoencoderKL, images: torch.Tensor | None, latent: dict) -> torch.Tensor | None:
    if images is None:
        return None
    return standardise(encode_images(vae, images), latent)


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
    # The fold's whole training set (low-data runs learn from a subset): the step budget's count.
    whole = split.train if split.train_before_subsampling is None else split.train_before_subsampling
    whole_labels = torch.as_tensor(data.labels[whole])
    val_images, val_labels = training_images(data, split.val, recipe.image_size) if len(split.val) else (None, None)
    vae = None
    if recipe.get("autoencoder"):
        vae, latent = fit_autoencoder(recipe, trainer, cfg.hardware, images, val_images, partial / "autoencoder")
        images, val_images = (standardised_latents(vae, x, latent) for x in (images, val_images))
        metadata = {**metadata, "latent": latent}
    trained = []  # (sub-folder, generator, curve title)
    every = recipe.get("snapshot_every_steps")  # optional: the generator every N steps, in <root>/snapshots/

    def snapshots(sub: str, meta: dict) -> tuple[pl.Callback, ...]:
        return (Snapshots(every, Path(cfg.generator.root) / "snapshots", sub, meta, vae),) if every else ()
    if recipe.per_emotion:
        for k, emotion in enumerate(emotions):
            val_k = val_images[val_labels == k] if val_images is not None else None
            module, training = fit_generator(recipe, trainer, cfg.hardware, images[labels == k], None, 0, val_k,
                                             checkpoint_dir=partial / emotion,
                                             extra_callbacks=snapshots(emotion, {**metadata, "emotion": emotion}),
                                             n_full_clips=int((whole_labels == k).sum()))
            trained.append((emotion, module.to_generator({**metadata, "emotion": emotion, "training": training}, vae),
                            f"{emotion} generator"))
    else:
        module, training = fit_generator(recipe, trainer, cfg.hardware, images, labels, len(emotions),
                                         val_images, val_labels, checkpoint_dir=partial / "conditional",
                                         extra_callbacks=snapshots("", metadata), n_full_clips=len(whole))
        trained.append(("", module.to_generator({**metadata, "training": training}, vae), "conditional generator"))
    with atomic_dir(cfg.generator.dir) as tmp:
        for sub, generator, title in trained:
            folder = generator.write_into(tmp / sub)
            plot_convergence(generator.metadata["training"]["curve"], folder / "convergence.png", title)
    if rank_zero_only.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
    return Path(cfg.generator.dir)
