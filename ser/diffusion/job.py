"""The generate.py job: train a generator on one fold's training speakers, then sample from it.

Outputs (in `generator_dir`, shared by every train.py run of the fold):
  <generator_dir>/[<emotion>/]unet, scheduler, metadata.json   the generator(s), safetensors
  <synthetic_dir>/synthetic.safetensors                        N spectrograms per emotion, in dB
  <synthetic_dir>/grid_<emotion>.png, <emotion>_<k>.wav         to look at and listen to
  <synthetic_dir>/quality.json, real_vs_generated.png           mode=quality (ser/diffusion/assess.py)
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset

from ser.diffusion.module import SpectrogramDDPM
from ser.diffusion.scaling import db_to_model, from_image, model_to_db, require_log_mel, to_image

log = logging.getLogger(__name__)


def training_images(data, indices, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([to_image(db_to_model(data.mels[i]), size) for i in indices])
    return images, torch.as_tensor(data.labels[indices])


class LossCurve(pl.Callback):
    """Training and held-out denoising loss after every epoch (validation has already run then)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                          **{k: round(float(m[k]), 5) for k in ("train/loss", "val/loss") if k in m}})


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


def fit_generator(cfg: DictConfig, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int,
                  val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None) -> tuple[SpectrogramDDPM, dict]:
    """Train one generator; returns it and its loss curve and convergence summary."""
    from pytorch_lightning.callbacks import EarlyStopping

    d, hw = cfg.diffusion, cfg.hardware
    model = SpectrogramDDPM(OmegaConf.to_container(d.unet, resolve=True), num_classes=num_classes,
                            num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule, lr=d.lr,
                            p_uncond=d.p_uncond, ema_decay=d.ema_decay)
    zeros = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    y = labels if labels is not None else zeros(len(images))
    loader = DataLoader(TensorDataset(images, y), batch_size=d.batch_size, shuffle=True, drop_last=False)
    has_val = val_images is not None and len(val_images) > 0
    val_loader = None
    if has_val:
        vy = val_labels if val_labels is not None else zeros(len(val_images))
        val_loader = DataLoader(TensorDataset(val_images, vy), batch_size=d.batch_size, shuffle=False)
    curve = LossCurve()
    callbacks = [curve]
    stop = d.get("early_stopping")
    if stop and has_val:
        # Train until held-out denoising stops improving (capped by max_steps / epochs).
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=stop.patience, min_delta=stop.min_delta))
    trainer = pl.Trainer(accelerator=hw.accelerator, devices=hw.devices, strategy=hw.strategy, precision=hw.precision,
                         max_epochs=d.epochs, max_steps=d.max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=hw.progress_bar, enable_model_summary=False, callbacks=callbacks,
                         limit_val_batches=1.0 if has_val else 0, num_sanity_val_steps=0)
    trainer.fit(model, loader, val_loader)
    summary = convergence(curve.rows)
    log.info("generator trained: %d steps (%d images, batch %d); convergence: %s", trainer.global_step, len(images),
             d.batch_size, summary)
    return model, {"curve": curve.rows, "convergence": summary}


def run_generate(cfg: DictConfig) -> dict:
    from ser.training import prepare

    require_log_mel(cfg.features, "generate.py")
    pl.seed_everything(cfg.seed)
    data, split = prepare(cfg)
    gen_dir, syn_dir = Path(cfg.generator_dir), Path(cfg.synthetic_dir)
    size, emotions = cfg.diffusion.image_size, data.emotions
    frames = cfg.sample.frames or int(np.median([data.mels[i].shape[-1] for i in split.train]))
    # Training speakers only: never the fold's test speakers (and not its validation speakers).
    meta = {"emotions": emotions, "train_speakers": split.train_speakers, "dataset": cfg.dataset.name,
            "protocol": split.protocol, "fold": split.fold, "image_size": size, "frames": frames,
            "recipe": cfg.diffusion.name, "front_end": OmegaConf.to_container(cfg.features), "seed": cfg.seed,
            "train_fraction": float(cfg.dataset.get("train_fraction", 1.0)), "n_train_clips": len(split.train)}
    started = time.time()
    if cfg.mode in ("train", "train_sample"):
        images, labels = training_images(data, split.train, size)
        # Validation speakers (excluded from training) measure held-out denoising: the convergence curve.
        val_images, val_labels = training_images(data, split.val, size) if len(split.val) else (None, None)
        if cfg.diffusion.per_emotion:
            for k, emotion in enumerate(emotions):
                val_k = val_images[val_labels == k] if val_images is not None else None
                model, training = fit_generator(cfg, images[labels == k], None, 0, val_k)
                model.save_generator(gen_dir / emotion, {**meta, "emotion": emotion, "training": training})
                _plot_curve(training["curve"], gen_dir / emotion / "convergence.png", f"{emotion} generator")
        else:
            model, training = fit_generator(cfg, images, labels, len(emotions), val_images, val_labels)
            model.save_generator(gen_dir, {**meta, "training": training})
            _plot_curve(training["curve"], gen_dir / "convergence.png", "conditional generator")
    meta["train_time_s"] = round(time.time() - started, 1)
    if cfg.mode in ("sample", "train_sample"):
        sample_set(cfg, gen_dir, syn_dir, emotions, frames, n_mels=data.mels[0].shape[-2])
    if cfg.mode == "enhance":
        enhance_clips(cfg, data, split, gen_dir, syn_dir)
    if cfg.mode == "quality":
        from ser.diffusion.assess import assess_synthetic_set

        meta["quality"] = assess_synthetic_set(cfg, data, split)
    return meta


def enhance_clips(cfg: DictConfig, data, split, gen_dir: Path, out_dir: Path) -> Path:
    """Move real training clips toward `enhance.target` (SDEdit); writes enhanced_<target>.safetensors,
    a before/after grid and WAVs. Strength 0 returns the clips exactly as they were."""
    e = cfg.enhance
    emotions = data.emotions
    if e.target not in emotions:
        raise ValueError(f"enhance.target={e.target!r} is not one of this dataset's emotions {emotions}")
    k = emotions.index(e.target)
    model, label, meta = load_generators(gen_dir, emotions, device=_device(cfg))[k]
    picks = [int(i) for i in split.train[: e.n]]  # training speakers only, like the generator
    originals = [data.mels[i] for i in picks]
    if e.strength == 0:
        enhanced = [m.clone() for m in originals]
    else:
        size = meta["image_size"]
        images = torch.stack([to_image(db_to_model(m), size) for m in originals])
        moved = model.enhance(images, label=label, strength=e.strength, sampler=e.sampler, steps=e.steps,
                              guidance=e.guidance, seed=cfg.seed).cpu()
        enhanced = [model_to_db(from_image(img, m.shape[-2], m.shape[-1])) for img, m in zip(moved, originals)]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"enhanced_{e.target}.safetensors"
    info = {"target": e.target, "strength": e.strength, "sources": [data.clips[i].path for i in picks],
            "source_emotions": [data.clips[i].emotion for i in picks], "train_speakers": meta["train_speakers"]}
    tensors = {f"enhanced_{j}": m.contiguous() for j, m in enumerate(enhanced)}
    tensors.update({f"original_{j}": m.contiguous() for j, m in enumerate(originals)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    os.replace(tmp, path)
    _before_after(originals, enhanced, info, out_dir / f"enhanced_{e.target}.png")
    _listen(cfg, torch.stack([m[:, :, :min(x.shape[-1] for x in enhanced)] for m in enhanced]),
            [k] * len(enhanced), emotions, out_dir, prefix="enhanced_")
    log.info("enhanced %d clips toward %s at strength %.2f -> %s", len(picks), e.target, e.strength, path)
    return path


def _before_after(originals, enhanced, info, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(originals), 6)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.6), squeeze=False)
    for j in range(n):
        for row, mel in enumerate((originals[j], enhanced[j])):
            axes[row][j].imshow(mel[0].numpy(), origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma")
            axes[row][j].axis("off")
        axes[0][j].set_title(info["source_emotions"][j], fontsize=8)
    fig.suptitle(f"top: real clips; bottom: toward {info['target']} (strength {info['strength']})", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_generators(gen_dir: Path, emotions: list[str], device: str = "cpu") -> dict:
    """{emotion index: (model, label or None, metadata)} for a conditional or a per-emotion generator."""
    if (gen_dir / "metadata.json").is_file():
        model, meta = SpectrogramDDPM.load_generator(gen_dir)
        model.to(device)
        return {k: (model, k, meta) for k in range(len(emotions))}
    out = {}
    for k, emotion in enumerate(emotions):
        if not (gen_dir / emotion / "metadata.json").is_file():
            raise FileNotFoundError(f"no generator at {gen_dir} (nor {gen_dir / emotion}); run generate.py mode=train first")
        model, meta = SpectrogramDDPM.load_generator(gen_dir / emotion)
        out[k] = (model.to(device), None, meta)
    return out


def sample_set(cfg: DictConfig, gen_dir: Path, syn_dir: Path, emotions: list[str], frames: int, n_mels: int) -> Path:
    s = cfg.sample
    device = _device(cfg)
    generators = load_generators(gen_dir, emotions, device=device)
    mels, labels = [], []
    started = time.time()
    for k, (model, label, _) in generators.items():
        imgs = model.sample(s.n_per_emotion, label=label, sampler=s.sampler, steps=s.steps, guidance=s.guidance,
                            seed=cfg.seed * 1000 + k)
        mels.append(model_to_db(from_image(imgs.cpu(), n_mels, frames)))
        labels += [k] * s.n_per_emotion
    seconds = time.time() - started
    mels = torch.cat(mels)
    meta = next(iter(generators.values()))[2]
    syn_dir.mkdir(parents=True, exist_ok=True)
    info = {"emotions": emotions, "train_speakers": meta["train_speakers"], "sampler": s.sampler, "steps": s.steps,
            "train_fraction": meta.get("train_fraction", 1.0), "n_train_clips": meta.get("n_train_clips"),
            "guidance": s.guidance, "n_per_emotion": s.n_per_emotion, "seconds_per_sample": seconds / len(labels),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "generator_dir": str(gen_dir)}
    path = syn_dir / "synthetic.safetensors"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"mels": mels.contiguous(), "labels": torch.tensor(labels)}, str(tmp),
              metadata={"info": json.dumps(info)})
    os.replace(tmp, path)
    _grids(mels, labels, emotions, syn_dir)
    _listen(cfg, mels, labels, emotions, syn_dir)
    log.info("%d synthetic spectrograms (%.2f s each) -> %s", len(labels), info["seconds_per_sample"], path)
    return path


def _device(cfg: DictConfig) -> str:
    # Sampling runs outside Lightning's loop, so it has to be put on the configured accelerator by hand.
    from ser.training import inference_device

    return inference_device(cfg.hardware)


def load_synthetic_set(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(mels in dB (N, 1, n_mels, T), labels, info incl. the generator's training speakers)."""
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["info"])
    return tensors["mels"], tensors["labels"], info


def _grids(mels, labels, emotions, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    for k, emotion in enumerate(emotions):
        picks = np.flatnonzero(labels == k)[:8]
        fig, axes = plt.subplots(1, len(picks), figsize=(1.6 * len(picks), 2.0), squeeze=False)
        for ax, i in zip(axes[0], picks):
            ax.imshow(mels[i, 0].numpy(), origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma")
            ax.axis("off")
        fig.suptitle(f"generated: {emotion}", fontsize=9)
        fig.savefig(out / f"grid_{emotion}.png", dpi=100)
        plt.close(fig)


def _listen(cfg, mels, labels, emotions, out: Path, prefix: str = "") -> None:
    from ser.features.mel import MelParams, mel_to_audio

    p = MelParams(**{k: cfg.features[k] for k in ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "ref")})
    labels = np.asarray(labels)
    for k, emotion in enumerate(emotions):
        for j, i in enumerate(np.flatnonzero(labels == k)[: cfg.listen.n_per_emotion]):
            y = mel_to_audio(mels[i, 0].numpy(), p, n_iter=cfg.listen.griffin_lim_iters)
            sf.write(out / f"{prefix}{emotion}_{j}.wav", y, p.sr, subtype="PCM_16")


def _plot_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("train/loss", "training (random noise)"), ("val/loss", "held-out speakers (fixed noise)")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising MSE")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
