"""Waveform augmentation (aug=audio), the baseline practitioners already use: audiomentations
transforms (speed, pitch, noise at a random SNR, gain, ...) applied to a clip's audio before any
front end, so the same augmented clip can feed log-mel networks, openSMILE features and frozen
speech encoders alike.

Each clip gets `variants` augmented copies, each with its own fixed random draw (seeded by the
file's name and the variant number), and their features are cached like real clips' features:
`AugmentedFrontEnd` wraps any front end, and the cache folder is keyed by the inner front end,
the transforms and the variant, so a sweep computes them once.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from ser.errors import ConfigError
from ser.features.audio import load_audio


def wants_audio(aug) -> bool:
    """aug=audio: waveform-augmented copies of the training clips."""
    return "audio" in aug and aug.audio.variants > 0


def build_augmenter(transforms: list[dict]):
    """audiomentations.Compose of `_target_` configs (each with its own probability `p`)."""
    if not transforms:
        raise ConfigError("aug.audio.transforms is empty; list audiomentations transforms, e.g. "
                          "{_target_: audiomentations.PitchShift, min_semitones: -2, max_semitones: 2, p: 0.5}")
    from audiomentations import Compose  # 1.3 s to import, and only aug=audio needs it

    steps = []
    for t in transforms:
        if not str(t.get("_target_", "")).startswith("audiomentations."):
            raise ConfigError(f"aug.audio.transforms: {t} is not an audiomentations transform (_target_: audiomentations.<Name>)")
        steps.append(instantiate(t))
    return Compose(steps)


def augment_signal(y: np.ndarray, sr: int, transforms: list[dict], seed: int) -> np.ndarray:
    """One augmented copy of `y`: the same `seed` gives the same copy (audiomentations draws from
    Python's and NumPy's global generators, so both are seeded here)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    out = build_augmenter(transforms)(samples=np.asarray(y, dtype=np.float32), sample_rate=sr)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return (out / peak * 0.99 if peak > 1.0 else out).astype(np.float32)  # gain can clip; keep it in range


def variant_seed(path: str, variant: int) -> int:
    return int(hashlib.sha256(f"{Path(path).name}|{variant}".encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class AugmentedFrontEnd:
    """`inner` (any front end with `sr`, `from_signal`, `fingerprint`, `describe`) applied to
    augmented copy number `variant` of each clip. `transforms`: the transforms' configs as JSON
    (a string keeps the front end hashable and picklable for the cache's worker processes)."""

    inner: object
    transforms: str
    variant: int = 0
    version: int = 1

    @property
    def kind(self) -> str:
        return f"{self.inner.kind}-audio"

    @property
    def sr(self) -> int:
        return self.inner.sr

    def describe(self) -> dict:
        return {"inner": self.inner.describe(), "transforms": json.loads(self.transforms), "variant": self.variant,
                "version": self.version}

    def fingerprint(self) -> str:
        blob = json.dumps({"inner": self.inner.fingerprint(), "transforms": json.loads(self.transforms),
                           "variant": self.variant, "v": self.version}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def compute(self, path: str) -> np.ndarray:
        y = load_audio(path, sr=self.sr, min_duration=self.inner.min_duration, max_duration=self.inner.max_duration)
        return self.inner.from_signal(augment_signal(y, self.sr, json.loads(self.transforms), variant_seed(path, self.variant)))
