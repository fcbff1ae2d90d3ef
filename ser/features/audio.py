"""Robust audio loading: any WAV/FLAC/OGG/MP3 (any rate, bit depth, channel count) -> mono float32.

Unusable input raises `BadAudio` with a reason a person can act on; callers skip the file and
report it, so one bad file never stops a run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from ser.errors import BadAudio


def load_audio(
    path: str | Path,
    sr: int = 22050,
    min_duration: float = 0.25,
    max_duration: float | None = 30.0,
    silence_dbfs: float = -60.0,
) -> np.ndarray:
    """Decode, downmix to mono, resample to `sr`, and check the result is usable speech.

    Clips longer than `max_duration` seconds are truncated (a 10-minute recording is not an
    utterance; score long files with windows in ser.predict instead). Clips shorter than
    `min_duration` or whose peak is below `silence_dbfs` are rejected.
    """
    path = Path(path)
    if not path.is_file():
        raise BadAudio(path, "file does not exist")
    if path.stat().st_size == 0:
        raise BadAudio(path, "file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            frames = f.frames if max_duration is None else min(f.frames, int(max_duration * native_sr))
            y = f.read(frames=frames, dtype="float32", always_2d=True)
    except Exception as sf_error:  # libsndfile cannot read it: try librosa's other decoders (mp3 etc.)
        try:
            with warnings.catch_warnings():  # librosa warns that it falls back to audioread; we know
                warnings.simplefilter("ignore")
                y, native_sr = librosa.load(path, sr=None, mono=False, duration=max_duration)
            y = np.atleast_2d(y).T.astype(np.float32)
        except Exception:
            raise BadAudio(path, f"cannot decode audio ({type(sf_error).__name__}: {sf_error})") from None
    if y.size == 0:
        raise BadAudio(path, "audio has no samples")
    y = y.mean(axis=1)
    if not np.all(np.isfinite(y)):
        raise BadAudio(path, "audio contains NaN or infinite samples")
    duration = len(y) / native_sr
    if duration < min_duration:
        raise BadAudio(path, f"clip is {duration:.3f} s, shorter than the minimum {min_duration} s")
    peak = float(np.max(np.abs(y)))
    if peak <= 10 ** (silence_dbfs / 20):
        raise BadAudio(path, f"clip is silent (peak {20 * np.log10(peak + 1e-12):.1f} dBFS <= {silence_dbfs} dBFS)")
    if native_sr != sr:
        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr)
    return np.ascontiguousarray(y, dtype=np.float32)
