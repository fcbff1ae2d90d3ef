"""Listen to spectrograms: Griffin-Lim WAVs of a few per emotion, beside the grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ser.features.mel import MelParams, mel_to_audio
from ser.io import atomic_path


def write_wavs(spectrograms, labels, emotions: list[str], out_dir: str | Path, mel: MelParams,
               n_per_emotion: int, griffin_lim_iters: int, prefix: str = "") -> list[Path]:
    """`<prefix><emotion>_<k>.wav` for the first `n_per_emotion` spectrograms (dB) of each emotion."""
    labels, written = np.asarray(labels), []
    for k, emotion in enumerate(emotions):
        for j, i in enumerate(np.flatnonzero(labels == k)[:n_per_emotion]):
            y = mel_to_audio(np.asarray(spectrograms[i][0]), mel, n_iter=griffin_lim_iters)
            with atomic_path(Path(out_dir) / f"{prefix}{emotion}_{j}.wav") as tmp:
                sf.write(tmp, y, mel.sr, subtype="PCM_16", format="WAV")
            written.append(Path(out_dir) / f"{prefix}{emotion}_{j}.wav")
    return written
