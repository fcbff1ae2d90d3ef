"""Log-mel spectrograms: pure functions of arrays with explicit parameters (librosa conventions)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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
    import librosa

    power = librosa.feature.melspectrogram(
        y=y, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels,
        fmin=p.fmin, fmax=p.fmax, power=2.0,
    )
    ref = np.max if p.ref == "max" else 1.0
    db = librosa.power_to_db(power, ref=ref, top_db=p.top_db)
    if p.ref == "max":
        db = np.maximum(db, -p.top_db)
    return db.astype(np.float32)


def mel_to_audio(db: np.ndarray, p: MelParams = MelParams(), n_iter: int = 32, peak: float = 0.5) -> np.ndarray:
    """Invert a log-mel spectrogram (dB) to a waveform with Griffin-Lim, peak-normalised.

    The absolute level is lost when `ref="max"`, so the output is scaled to `peak`.
    """
    import librosa

    power = librosa.db_to_power(db)
    y = librosa.feature.inverse.mel_to_audio(
        power, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, fmin=p.fmin, fmax=p.fmax,
        power=2.0, n_iter=n_iter,
    )
    return (y / (np.max(np.abs(y)) + 1e-9) * peak).astype(np.float32)
