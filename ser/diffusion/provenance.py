"""What a fold's generator records about itself, and the checks that keep it fold-safe: its exact
training speakers, training fraction and (in low-data runs) training clips, the front end it
models, and the time frames of its samples."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.environment import describe_environment
from ser.errors import ConfigError, GeneratorFoldLeak
from ser.features.mel import MelParams


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
            "train_clips_digest": training_clips_digest(data, split), "recipe_settings": recipe_settings(cfg.diffusion),
            "environment": describe_environment()}


# Diffusion keys that do not change the generator a training ends with (`guidance`: the recipe's
# sampling default, used after training).
NOT_RECIPE = ("snapshot_every_steps", "guidance")
# Settings added to the recipes later, with the value a generator saved before them was trained
# with; and those that change nothing at full data (dataset.train_fraction=1), where they are not
# compared: a full-data generator made before `full_data_steps` existed trained the same steps.
SAVED_WITHOUT = {"full_data_steps": False, "lr_schedule": "constant"}
_LOW_DATA_ONLY = ("full_data_steps",)


def recipe_settings(diffusion: DictConfig) -> dict:
    """Every setting of the run's diffusion recipe that shapes its generator (the budget included:
    30 epochs and 120 epochs make different generators)."""
    return {k: v for k, v in OmegaConf.to_container(diffusion, resolve=True).items() if k not in NOT_RECIPE}


def recipe_differences(meta: dict, diffusion: DictConfig) -> str:
    """The settings in which the run's recipe differs from a saved generator's, as one line ("" if
    none, or if the generator predates the record)."""
    saved = meta.get("recipe_settings")
    if saved is None:
        return ""
    ours = json.loads(json.dumps(recipe_settings(diffusion)))  # as saved: JSON types
    saved = {**SAVED_WITHOUT, **saved}
    ours = {**SAVED_WITHOUT, **ours}
    if float(meta.get("train_fraction", 1.0)) >= 1.0:
        saved, ours = ({k: v for k, v in d.items() if k not in _LOW_DATA_ONLY} for d in (saved, ours))
    differs = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    return "; ".join(f"diffusion.{k}: {saved.get(k)!r} there, {ours.get(k)!r} here" for k in differs)


def assert_same_recipe(meta: dict, diffusion: DictConfig, where: str, use_as_is: str) -> None:
    """A fold's generator folder is named by its recipe's name, not by every setting, so a run that
    overrides a setting (`diffusion.epochs=120`) would otherwise be handed the generator trained
    without it. `use_as_is`: how to read an existing generator regardless (said in the error).
    Generators made before they recorded their settings are not checked."""
    changes = recipe_differences(meta, diffusion)
    if changes:
        raise ConfigError(f"{where} was trained with other diffusion settings than this run's ({changes}). A fold's "
                          "generator folder is named by the recipe's name only, so give these settings a folder of "
                          f"their own (generator.root=<a new folder>) or remove {where} to retrain it; {use_as_is}")


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
