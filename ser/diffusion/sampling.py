"""Use a fold's trained generator: sample a synthetic set, or move real training clips toward an
emotion (SDEdit). Both write safetensors files, grids to look at and WAVs to listen to."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
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

# Samples drawn with one noise seed; a pool grown in steps of this size draws the same samples as
# one grown all at once (the seed of each batch is its emotion and its first sample's index).
SAMPLE_BATCH = 64


def mel_params(features: DictConfig) -> MelParams:
    return MelParams(**{k: features[k] for k in ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "ref")})


def noise_seed(seed: int, label: int, start: int) -> int:
    """The noise seed of samples start.. of one emotion from one generator seed: each chunk of a
    growing pool gets fresh noise, and the same pool is drawn again by the same calls."""
    return int(np.random.SeedSequence([seed, label, start]).generate_state(1)[0])


def sample_spectrograms(generators: dict, counts: dict[int, int], frames: int, n_mels: int, sampler: str,
                        steps: int, guidance: float, seed: int, start: dict[int, int] | None = None,
                        batch: int = SAMPLE_BATCH) -> tuple[torch.Tensor, list[int]]:
    """`counts[k]` new spectrograms of emotion k (dB, (n, 1, n_mels, frames)) and their labels.
    `start[k]`: how many emotion-k samples this generator and seed already gave (a pool being
    grown), so the new ones are new."""
    start = start or {}
    mels, labels = [], []
    for k, n in counts.items():
        generator, label = generators[k]
        for first in range(0, n, batch):
            b = min(batch, n - first)
            imgs = generator.sample(b, label=label, sampler=sampler, steps=steps, guidance=guidance,
                                    seed=noise_seed(seed, k, start.get(k, 0) + first))
            mels.append(model_to_db(from_image(imgs.cpu(), n_mels, frames)))
            labels += [k] * b
    return (torch.cat(mels) if mels else torch.empty(0, 1, n_mels, frames)), labels


def sample_set(cfg: DictConfig, emotions: list[str], frames: int, n_mels: int, device: str) -> Path:
    """`sample.n_per_emotion` new spectrograms of each emotion from the fold's generator, as a
    synthetic set (ser/diffusion/synthetic_set.py) in `generator.synthetic_dir`, with grids and WAVs."""
    s, syn_dir = cfg.sample, Path(cfg.generator.synthetic_dir)
    generators = load_generators(cfg.generator.dir, emotions, device=device)
    started = time.time()
    mels, labels = sample_spectrograms(generators, {k: s.n_per_emotion for k in generators}, frames, n_mels,
                                       s.sampler, s.steps, s.guidance, cfg.seed)
    seconds = time.time() - started
    info = pool_info(next(iter(generators.values()))[0], emotions, s.sampler, s.steps, s.guidance, cfg.seed, frames,
                     cfg.generator.dir)
    info.update(n_per_emotion=s.n_per_emotion, seconds_per_sample=seconds / len(labels))
    path = save_synthetic_set(syn_dir / FILENAME, mels, labels, info)
    plot_sample_grids(mels, labels, emotions, syn_dir)
    write_wavs(mels, labels, emotions, syn_dir, mel_params(cfg.features), cfg.listen.n_per_emotion,
               cfg.listen.griffin_lim_iters)
    log.info("%d synthetic spectrograms (%.2f s each) -> %s", len(labels), info["seconds_per_sample"], path)
    return path


def pool_info(generator, emotions: list[str], sampler: str, steps: int, guidance: float, seed: int,
              frames: int, generator_dir) -> dict:
    """What a synthetic set's file records about its samples: fold safety (the generator's exact
    training speakers, training fraction and training clips) and how they were drawn."""
    meta = generator.metadata
    return {"emotions": emotions, "train_speakers": meta["train_speakers"], "sampler": sampler,
            "steps": int(steps), "guidance": float(guidance), "seed": int(seed), "frames": int(frames),
            "train_fraction": meta["train_fraction"], "n_train_clips": meta["n_train_clips"],
            "train_clips_digest": meta.get("train_clips_digest"),
            "device": torch.cuda.get_device_name(generator.device) if generator.device.type == "cuda" else "cpu",
            "precision": generator.inference_precision,
            "generator_dir": str(generator_dir), "image_size": meta["image_size"]}


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
