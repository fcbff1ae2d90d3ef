"""Use a fold's trained generator: sample a synthetic set, or move real training clips toward an
emotion (SDEdit). Both write safetensors files, grids to look at and WAVs to listen to."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.generator import load_generators
from ser.diffusion.image_space import db_to_model, from_image, model_to_db, to_image
from ser.diffusion.listen import write_wavs
from ser.diffusion.synthetic_set import FILENAME, save_synthetic_set
from ser.errors import ConfigError
from ser.evaluation.plots import plot_before_after, plot_sample_grids
from ser.features.mel import MelParams
from ser.io import atomic_path

log = logging.getLogger(__name__)


def mel_params(features: DictConfig) -> MelParams:
    return MelParams(**{k: features[k] for k in ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "ref")})


def sample_set(cfg: DictConfig, emotions: list[str], frames: int, n_mels: int, device: str) -> Path:
    """`sample.n_per_emotion` new spectrograms of each emotion from the fold's generator, as a
    synthetic set (ser/diffusion/synthetic_set.py) in `generator.synthetic_dir`, with grids and WAVs."""
    s, syn_dir = cfg.sample, Path(cfg.generator.synthetic_dir)
    generators = load_generators(cfg.generator.dir, emotions, device=device)
    mels, labels = [], []
    started = time.time()
    for k, (generator, label) in generators.items():
        imgs = generator.sample(s.n_per_emotion, label=label, sampler=s.sampler, steps=s.steps, guidance=s.guidance,
                                seed=cfg.seed * 1000 + k)
        mels.append(model_to_db(from_image(imgs.cpu(), n_mels, frames)))
        labels += [k] * s.n_per_emotion
    seconds = time.time() - started
    mels = torch.cat(mels)
    meta = next(iter(generators.values()))[0].metadata
    info = {"emotions": emotions, "train_speakers": meta["train_speakers"], "sampler": s.sampler, "steps": s.steps,
            "train_fraction": meta["train_fraction"], "n_train_clips": meta["n_train_clips"],
            "guidance": s.guidance, "n_per_emotion": s.n_per_emotion, "seconds_per_sample": seconds / len(labels),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "generator_dir": str(cfg.generator.dir), "image_size": meta["image_size"]}
    path = save_synthetic_set(syn_dir / FILENAME, mels, labels, info)
    plot_sample_grids(mels, labels, emotions, syn_dir)
    write_wavs(mels, labels, emotions, syn_dir, mel_params(cfg.features), cfg.listen.n_per_emotion,
               cfg.listen.griffin_lim_iters)
    log.info("%d synthetic spectrograms (%.2f s each) -> %s", len(labels), info["seconds_per_sample"], path)
    return path


def enhance_clips(cfg: DictConfig, data: LabelledClips, split: Split, device: str) -> Path:
    """Move real training clips toward `enhance.target` (SDEdit); writes enhanced_<target>.safetensors,
    a before/after grid and WAVs. Strength 0 returns the clips exactly as they were."""
    e, out_dir, emotions = cfg.enhance, Path(cfg.generator.synthetic_dir), data.emotions
    if e.target not in emotions:
        raise ConfigError(f"enhance.target={e.target!r} is not one of this dataset's emotions {emotions}")
    k = emotions.index(e.target)
    generator, label = load_generators(cfg.generator.dir, emotions, device=device)[k]
    picks = [int(i) for i in split.train[: e.n]]  # training speakers only, like the generator
    originals = [data.features[i] for i in picks]
    if e.strength == 0:
        enhanced = [m.clone() for m in originals]
    else:
        size = generator.metadata["image_size"]
        images = torch.stack([to_image(db_to_model(m), size) for m in originals])
        moved = generator.enhance(images, label=label, strength=e.strength, sampler=e.sampler, steps=e.steps,
                                  guidance=e.guidance, seed=cfg.seed).cpu()
        enhanced = [model_to_db(from_image(img, m.shape[-2], m.shape[-1])) for img, m in zip(moved, originals)]
    info = {"target": e.target, "strength": e.strength, "sources": [data.clips[i].path for i in picks],
            "source_emotions": [data.clips[i].emotion for i in picks],
            "train_speakers": generator.metadata["train_speakers"]}
    tensors = {f"enhanced_{j}": m.contiguous() for j, m in enumerate(enhanced)}
    tensors.update({f"original_{j}": m.contiguous() for j, m in enumerate(originals)})
    path = out_dir / f"enhanced_{e.target}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    plot_before_after(originals, enhanced, info["source_emotions"], e.target, e.strength,
                      out_dir / f"enhanced_{e.target}.png")
    shortest = min(x.shape[-1] for x in enhanced)
    write_wavs(torch.stack([m[:, :, :shortest] for m in enhanced]), [k] * len(enhanced), emotions, out_dir,
               mel_params(cfg.features), cfg.listen.n_per_emotion, cfg.listen.griffin_lim_iters, prefix="enhanced_")
    log.info("enhanced %d clips toward %s at strength %.2f -> %s", len(picks), e.target, e.strength, path)
    return path
