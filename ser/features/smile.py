"""openSMILE front ends: per-clip functionals (the classical baseline's input) and frame-level
low-level descriptors (LLDs), decoded and resampled exactly like the log-mels.

The LLD front end is the "hand-crafted features, learned pooling" middle ground: openSMILE's
pitch, voice quality, energy and spectral descriptors every 10 ms, which the same networks that
read log-mels (a TDNN over time) take as input channels. The functionals are fixed statistics of
those same descriptors; a network over the frames learns its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from ser.errors import BadAudio, MissingDependency
from ser.features.audio import load_audio


def require_opensmile(what: str = "openSMILE features"):
    """The opensmile module (an optional extra), or an error naming what needs it and the install command."""
    try:
        import opensmile
    except ImportError:
        raise MissingDependency(f"{what} needs the opensmile package: pip install -e '.[classical]'") from None
    return opensmile


def _smile(feature_set: str, level: str):
    opensmile = require_opensmile()
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=getattr(opensmile.FeatureLevel, level))


def _fingerprint(described: dict) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SmileFunctionals:
    """One vector of openSMILE functionals per clip (eGeMAPSv02: 88, ComParE_2016: 6373)."""

    feature_set: str = "eGeMAPSv02"
    sr: int = 22050
    min_duration: float = 0.25
    max_duration: float = 30.0
    kind: str = "smile"

    def describe(self) -> dict:
        return {"feature_set": self.feature_set, "sr": self.sr, "min_duration": self.min_duration,
                "max_duration": self.max_duration}

    def fingerprint(self) -> str:
        return _fingerprint(self.describe())

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        return _smile(self.feature_set, "Functionals").process_signal(y, self.sr).to_numpy(dtype=np.float32).reshape(-1)

    def compute(self, path: str) -> np.ndarray:
        return self.from_signal(load_audio(path, sr=self.sr, min_duration=self.min_duration, max_duration=self.max_duration))


def smile_lld(y: np.ndarray, sr: int, feature_set: str = "ComParE_2016", deltas: bool = True) -> np.ndarray:
    """Mono waveform -> openSMILE low-level descriptors, shape (n_descriptors [x2 with deltas], frames).

    ComParE_2016: 65 descriptors (F0, jitter, shimmer, HNR, loudness, RASTA bands, MFCC 1-14,
    spectral shape) every 10 ms; eGeMAPSv02: 25. Deltas are first-order differences over time.
    NaNs (openSMILE leaves a few on degenerate frames) become 0.
    """
    x = _smile(feature_set, "LowLevelDescriptors").process_signal(y, sr).to_numpy(dtype=np.float32).T
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] < 2:
        raise ValueError(f"openSMILE returned {x.shape[1]} frame(s); the clip is too short for {feature_set} LLDs")
    if deltas:
        x = np.concatenate([x, np.gradient(x, axis=1)], axis=0)
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class SmileLLD:
    """Frame-level openSMILE descriptors, cached and served like log-mels: (channels, frames)."""

    feature_set: str = "ComParE_2016"
    deltas: bool = True
    sr: int = 22050
    min_duration: float = 0.25
    max_duration: float = 30.0
    version: int = 1
    kind: str = "smile_lld"

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "kind"}

    def fingerprint(self) -> str:
        return _fingerprint(self.describe())

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        return smile_lld(y, self.sr, self.feature_set, self.deltas)

    def compute(self, path: str) -> np.ndarray:
        y = load_audio(path, sr=self.sr, min_duration=self.min_duration, max_duration=self.max_duration)
        try:
            return self.from_signal(y)
        except ValueError as err:
            raise BadAudio(path, str(err)) from None
