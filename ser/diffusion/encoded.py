"""Generated spectrograms for the classifiers on a frozen speech encoder (issue 11 item 8). Two
routes, chosen by what the fold's generator models (`diffusion.space`):

- mel (the log-mel generators): each synthetic or SDEdit log-mel is voiced with Griffin-Lim at the
  generator's rate and passed through the run's encoder exactly as a real clip's audio is;
- encoder_input (Whisper only): the generator models Whisper's own input (80 mels, 16 kHz, 10 ms
  hop, as dB below the peak), and its samples go straight into the frozen encoder, at a peak level
  restored from the training clips (or, for SDEdit, the source clip's own).

Either way the linear probe trains on them as on real clips' pooled layers.

Encoded spectrograms are cached per encoder, keyed by the spectrogram's own bytes, beside the
fold's generator: a pool that grows, or another run drawing other samples, encodes only what is new.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import librosa
import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ser.features.encoder import db_to_whisper_input, encode_input
from ser.features.mel import MelParams, mel_to_audio
from ser.io import atomic_path

log = logging.getLogger(__name__)

GRIFFIN_LIM_ITERS = 32


def _key(mel: torch.Tensor) -> str:
    return hashlib.sha256(mel.float().contiguous().numpy().tobytes()).hexdigest()


def voice(mel: torch.Tensor, params: MelParams = MelParams(), n_iter: int = GRIFFIN_LIM_ITERS) -> np.ndarray:
    """A (1, n_mels, frames) log-mel in dB -> a waveform at `params.sr` (Griffin-Lim, peak 0.5)."""
    return mel_to_audio(np.asarray(mel[0], dtype=np.float32), params, n_iter=n_iter)


def _encoded_cached(items: list, key, compute, folder: Path, what: str) -> list[torch.Tensor]:
    """`compute(item)` (an encoder's hidden layers) for each item, cached in `folder` as
    `<key(item)>.safetensors`: a pool that grows encodes only its new samples."""
    out, todo = [], 0
    for item in items:
        entry = folder / f"{key(item)}.safetensors"
        if entry.is_file():
            out.append(torch.from_numpy(load_file(str(entry))["features"]))
            continue
        todo += 1
        features = np.ascontiguousarray(compute(item))
        with atomic_path(entry) as tmp:
            save_file({"features": features}, str(tmp))
        out.append(torch.from_numpy(features))
    if todo:
        log.info("%s %d (%d cached) -> %s", what, todo, len(items) - todo, folder)
    return out


def encode_spectrograms(mels: list[torch.Tensor], encoder, cache_dir: str | Path, params: MelParams = MelParams(),
                        n_iter: int = GRIFFIN_LIM_ITERS) -> list[torch.Tensor]:
    """Each spectrogram voiced and encoded by `encoder` (a SpeechEncoder front end): its hidden
    layers (layers, dim, frames), as a real clip's are cached."""

    def compute(mel: torch.Tensor) -> np.ndarray:
        y = voice(mel, params, n_iter)
        if encoder.sr != params.sr:
            y = librosa.resample(y, orig_sr=params.sr, target_sr=encoder.sr)
        return encoder.from_signal(y)

    # "s0": Griffin-Lim's starting phases seeded (ser/features/mel.py); entries made before were not.
    folder = Path(cache_dir) / f"voiced-gl{n_iter}s0-{encoder.kind}-{encoder.fingerprint()}"
    return _encoded_cached(list(mels), _key, compute, folder, "voiced and encoded generated spectrograms:")


def encode_whisper_inputs(dbs: list[torch.Tensor], peaks: list[float], encoder, cache_dir: str | Path) -> list[torch.Tensor]:
    """Generated Whisper inputs (each (1, 80, frames) in dB below the peak) at the given peak levels
    -> the encoder's hidden layers (layers, dim, frames / 2), cached like `encode_spectrograms`
    (keyed by the input and its peak level)."""

    def key(item) -> str:
        db, peak = item
        return hashlib.sha256(_key(db).encode() + np.float32(peak).tobytes()).hexdigest()

    def compute(item) -> np.ndarray:
        db, peak = item
        return encode_input(encoder.name, db_to_whisper_input(np.asarray(db[0]), peak))

    folder = Path(cache_dir) / f"whisper-input-{encoder.kind}-{encoder.fingerprint()}"
    return _encoded_cached(list(zip(dbs, peaks)), key, compute, folder, "encoded generated Whisper inputs:")
