"""Synthetic spectrograms as extra training data for one run (aug=ddpm, aug=ddpm_only), fold safety enforced."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ser.data.datamodule import ClipDataset, SERDataModule
from ser.data.splits import Split, assert_generator_fold_safe
from ser.diffusion.synthetic_set import SYNTHETIC_SPEAKER, load_synthetic_set
from ser.errors import DataError, GeneratorFoldLeak, MissingSyntheticData


def wants_synthetic(aug) -> bool:
    """Only aug options that define a synthetic set mix synthetic data in."""
    return "synthetic" in aug and aug.synthetic.ratio > 0


def synthetic_training_set(cfg, dm: SERDataModule, split: Split, emotions: list[str], seed: int) -> tuple[ClipDataset, dict]:
    """`aug.synthetic.ratio` x the real training clips, drawn from the fold's synthetic set, as a
    labelled dataset normalised like one more speaker."""
    s = cfg.aug.synthetic
    path = Path(s.path)
    if not path.is_file():
        raise MissingSyntheticData(
            f"no synthetic spectrograms for this run at {path}. Make them with the same dataset and fold:\n"
            f"  python generate.py dataset={cfg.dataset.name} split={split.protocol} split.fold={split.fold} "
            f"diffusion={cfg.diffusion.name} generator.seed={cfg.generator.seed} paths.data_root={cfg.paths.data_root} "
            f"paths.cache_dir={cfg.paths.cache_dir}\n(add the same dataset.* overrides you gave train.py)"
        )
    mels, labels, info = load_synthetic_set(path)
    assert_generator_fold_safe(info["train_speakers"], split.test_speakers, where=str(path))
    fraction = float(cfg.dataset.train_fraction)
    if float(info["train_fraction"]) != fraction:
        # A generator that learned from more real clips than the classifier may use would smuggle
        # that data into a low-data run.
        raise GeneratorFoldLeak(f"synthetic set {path} comes from a generator trained with dataset.train_fraction="
                                f"{info['train_fraction']}; this run uses {fraction}. Generate with the same fraction.")
    if info["emotions"] != emotions:
        raise DataError(f"synthetic set {path} has emotions {info['emotions']}, this run has {emotions}")
    n = int(round(s.ratio * len(split.train)))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(labels), size=n, replace=n > len(labels))
    chosen = [mels[i] for i in picks]
    # The generator is normalised like one more speaker (label-free statistics of its own output).
    dm.normalizer.add_speaker(SYNTHETIC_SPEAKER, chosen)
    dataset = ClipDataset(chosen, labels[picks].numpy(), [SYNTHETIC_SPEAKER] * n, dm.train_pipeline, train=True)
    return dataset, {"path": str(path), "n_used": n, "ratio": float(s.ratio), "n_available": int(len(labels)),
                     "generator_train_speakers": info["train_speakers"], "sampler": info["sampler"],
                     "steps": info["steps"], "guidance": info["guidance"],
                     # synthetic-only: does the generator's output alone teach the emotions of real speakers?
                     "only": bool(s.only)}
