"""aug=sdedit: real-anchored augmentation (SDEdit; the DA-Fusion idea for speech). Each real
training clip is noised to `strength` and denoised by the fold's generator under its own emotion,
giving a variant that keeps the clip's content and speaker and moves its detail.

The generator works at a low resolution (the CPU recipe: 32x32 images), so the edit is applied
as a change, not as a replacement: variant = clip + upsampled(edited image - clip's image), in dB.
The clip keeps its full time-frequency detail, strength 0 returns it exactly, and the generator
contributes only what it changed.

File format (one per fold, strength and sampler; safetensors, no pickle): tensors `0..N-1`, each a
(1, n_mels, frames) variant in dB, and metadata `info` (JSON): sources (clip paths), labels,
speakers, variant indices, strength, sampler, the generator's training speakers and fraction.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.generator import load_generators
from ser.diffusion.image_space import db_to_model, from_image, model_to_db, to_image
from ser.diffusion.sampling import noise_seed
from ser.errors import ConfigError, NotFound
from ser.hardware import inference_device
from ser.io import atomic_path

log = logging.getLogger(__name__)


def edit_clip_batch(generator, label, mels: list[torch.Tensor], strength: float, sampler: str, steps: int,
                    guidance: float, seed: int) -> list[torch.Tensor]:
    """SDEdit `mels` (each (1, n_mels, frames), dB) toward `label`, keeping each clip's own resolution."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"aug.sdedit.strength={strength} must be in [0, 1]")
    if strength == 0.0:
        return [m.clone() for m in mels]
    size = generator.metadata["image_size"]
    images = torch.stack([to_image(db_to_model(m), size) for m in mels])
    edited = generator.enhance(images, label=label, strength=strength, sampler=sampler, steps=steps,
                               guidance=guidance, seed=seed).cpu()
    out = []
    for m, before, after in zip(mels, images, edited):
        n_mels, frames = m.shape[-2:]
        change = model_to_db(from_image(after, n_mels, frames)) - model_to_db(from_image(before, n_mels, frames))
        out.append((m + change).clamp(-80.0, 0.0))
    return out


def make_edits(cfg, data: LabelledClips, split: Split, path: Path) -> dict:
    """`aug.sdedit.variants` SDEdit variants of every training clip of the fold, saved to `path`."""
    a, s = cfg.aug.sdedit, cfg.generator.sampling
    generators = load_generators(cfg.generator.dir, data.emotions, device=inference_device(cfg.hardware))
    labels = data.labels
    started = time.time()
    tensors, info_rows = {}, {"sources": [], "labels": [], "speakers": [], "variants": []}
    for v in range(int(a.variants)):
        for k, (generator, label) in generators.items():
            idx = [int(i) for i in split.train if labels[i] == k]
            for first in range(0, len(idx), 32):
                chunk = idx[first:first + 32]
                edited = edit_clip_batch(generator, label, [data.features[i] for i in chunk], float(a.strength),
                                         s.sampler, int(s.steps), float(s.guidance),
                                         seed=noise_seed(cfg.generator.seed, 1000 * (v + 1) + k, first))
                for i, m in zip(chunk, edited):
                    tensors[str(len(info_rows["sources"]))] = m.contiguous()
                    info_rows["sources"].append(data.clips[i].path)
                    info_rows["labels"].append(k)
                    info_rows["speakers"].append(data.speakers[i])
                    info_rows["variants"].append(v)
    meta = next(iter(generators.values()))[0].metadata
    info = {**info_rows, "emotions": data.emotions, "strength": float(a.strength), "sampler": s.sampler,
            "steps": int(s.steps), "guidance": float(s.guidance), "train_speakers": meta["train_speakers"],
            "train_fraction": meta["train_fraction"], "seconds": round(time.time() - started, 1)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    log.info("%d SDEdit variants at strength %.2f in %.0f s -> %s", len(tensors), a.strength, info["seconds"], path)
    return info


def load_edits(path: str | Path) -> tuple[list[torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no SDEdit variants at {path}")
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["info"])
        return [f.get_tensor(str(j)) for j in range(len(info["sources"]))], info


def edits_match(info: dict, cfg, data: LabelledClips, split: Split) -> bool:
    """Do saved variants cover exactly this run's training clips, variant count and sampler?"""
    s = cfg.generator.sampling
    wanted = sorted(data.clips[int(i)].path for i in split.train) * int(cfg.aug.sdedit.variants)
    return (sorted(info["sources"]) == sorted(wanted) and info["sampler"] == s.sampler and info["steps"] == int(s.steps)
            and info["guidance"] == float(s.guidance) and np.isclose(info["strength"], float(cfg.aug.sdedit.strength)))
