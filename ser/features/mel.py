"""Log-mel spectrograms: pure functions of arrays with explicit parameters (librosa conventions),
and `LogMel`, the front end that applies them to audio files for the feature cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import librosa
import numpy as np

from ser.features.audio import load_audio


@dataclass(frozen=True)
class MelParams:
    """The reference front end: 22050 Hz, n_fft 2048, hop 512, 128 mels, dB relative to the clip's peak.

    With `ref="max"` and `top_db=80` every spectrogram lies in [-80, 0] dB, a fixed range the
    diffusion model maps linearly to [-1, 1].
    """

    sr: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0
    ref: str = "max"  # "max": per-clip peak = 0 dB; "one": absolute power (keeps loudness)

    def as_dict(self) -> dict:
        return asdict(self)


def log_mel(y: np.ndarray, p: MelParams = MelParams()) -> np.ndarray:
    """Mono waveform -> log-mel power spectrogram in dB, shape (n_mels, frames), float32."""
    power = librosa.feature.melspectrogram(
        y=y, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels,
        fmin=p.fmin, fmax=p.fmax, power=2.0,
    )
    ref = np.max if p.ref == "max" else 1.0
    db = librosa.power_to_db(power, ref=ref, top_db=p.top_db)
    if p.ref == "max":
        db = np.maximum(db, -p.top_db)
    return db.astype(np.float32)


def mel_to_audio(db: np.ndarray, p: MelParams = MelParams(), n_iter: int = 32, peak: float = 0.5,
                 seed: int = 0) -> np.ndarray:
    """Invert a log-mel spectrogram (dB) to a waveform with Griffin-Lim, peak-normalised.

    The absolute level is lost when `ref="max"`, so the output is scaled to `peak`. Griffin-Lim
    starts from random phases; they are drawn with `seed`, so one spectrogram always gives one
    waveform (librosa's mel_to_audio draws them from fresh entropy: two voicings of one clip differ,
    and on EmoDB fold 2 two voicings of the same training copies moved the encoder probe's UA by 0.035).
    """
    power = librosa.db_to_power(db)
    stft = librosa.feature.inverse.mel_to_stft(power, sr=p.sr, n_fft=p.n_fft, power=2.0, fmin=p.fmin, fmax=p.fmax)
    y = librosa.griffinlim(stft, n_iter=n_iter, hop_length=p.hop_length, n_fft=p.n_fft, random_state=seed)
    return (y / (np.max(np.abs(y)) + 1e-9) * peak).astype(np.float32)


@dataclass(frozen=True)
class LogMel:
    """The log-mel front end: everything that determines a cached spectrogram apart from the audio
    bytes. Like `SmileLLD` (ser/features/smile.py) it gives (channels, frames) per clip."""

    mel: MelParams = MelParams()
    min_duration: float = 0.25
    max_duration: float = 30.0
    version: int = 1  # bump when the feature code changes meaning
    kind: str = "mel"

    def describe(self) -> dict:
        return {"mel": self.mel.as_dict(), "min_duration": self.min_duration,
                "max_duration": self.max_duration, "version": self.version}

    def fingerprint(self) -> str:
        blob = json.dumps({"mel": self.mel.as_dict(), "min": self.min_duration,
                           "max": self.max_duration, "v": self.version}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def sr(self) -> int:
        return self.mel.sr

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        return log_mel(y, self.mel)

    def compute(self, path: str) -> np.ndarray:
        y = load_audio(path, sr=self.mel.sr, min_duration=self.min_duration, max_duration=self.max_duration)
        return self.from_signal(y)
