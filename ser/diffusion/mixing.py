"""Synthetic spectrograms as extra training data for one run (aug=ddpm), fold safety enforced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ser.data.datamodule import MelDataset
from ser.diffusion.job import load_synthetic_set
from ser.diffusion.module import assert_fold_safe
from ser.diffusion.scaling import require_log_mel

SYNTHETIC_SPEAKER = "synthetic"


class MissingSyntheticData(FileNotFoundError):
    pass


def wants_synthetic(aug) -> bool:
    """Only aug options that define a synthetic set path mix synthetic data. (A preset may set
    aug.synthetic.recipe for its ddpm arms; that alone must not turn the aug=none arm synthetic.)"""
    synthetic = aug.get("synthetic") if aug is not None else None
    return bool(synthetic) and synthetic.get("path") is not None and synthetic.get("ratio", 0) > 0


def synthetic_training_set(cfg, dm, split, emotions: list[str], n_real: int, seed: int) -> tuple[MelDataset, dict]:
    s = cfg.aug.synthetic
    require_log_mel(cfg.features, f"aug={cfg.aug.get('name', 'ddpm')} (synthetic spectrograms)")
    path = Path(s.path)
    if not path.is_file():
        raise MissingSyntheticData(
            f"no synthetic spectrograms for this run at {path}. Make them with the same dataset and fold:\n"
            f"  python generate.py dataset={cfg.dataset.name} split={split.protocol} split.fold={split.fold} "
            f"diffusion={s.recipe} seed={s.seed} paths.data_root={cfg.paths.data_root} paths.cache_dir={cfg.paths.cache_dir}\n"
            f"(add the same dataset.* overrides you gave train.py)"
        )
    mels, labels, info = load_synthetic_set(path)
    assert_fold_safe(info, split.test_speakers, where=str(path))
    fraction = float(cfg.dataset.get("train_fraction", 1.0))
    if float(info.get("train_fraction", 1.0)) != fraction:
        # A generator that learned from more real clips than the classifier may use would smuggle
        # that data into a low-data run.
        raise ValueError(f"synthetic set {path} comes from a generator trained with dataset.train_fraction="
                         f"{info.get('train_fraction', 1.0)}; this run uses {fraction}. Generate with the same fraction.")
    if info["emotions"] != emotions:
        raise ValueError(f"synthetic set {path} has emotions {info['emotions']}, this run has {emotions}")
    n = int(round(s.ratio * n_real))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(labels), size=n, replace=n > len(labels))
    chosen = [mels[i] for i in picks]
    # The generator is normalised like one more speaker (label-free statistics of its own output).
    dm.normalizer.add_speaker(SYNTHETIC_SPEAKER, chosen)
    dataset = MelDataset(chosen, labels[picks].numpy(), [SYNTHETIC_SPEAKER] * n, dm.train_pipeline, train=True)
    return dataset, {"path": str(path), "n_used": n, "ratio": float(s.ratio), "n_available": int(len(labels)),
                     "generator_train_speakers": info["train_speakers"], "sampler": info["sampler"],
                     "steps": info["steps"], "guidance": info["guidance"],
                     # synthetic-only: does the generator's output alone teach the emotions of real speakers?
                     "only": bool(s.get("only", False))}
