"""The diffusion model's image space: the exact map between log-mel dB and [-1, 1] images, and back.

Spectrograms are in [-top_db, 0] dB (librosa power_to_db with ref=max, top_db=80; see
ser.features.mel). The model works on square single-channel images in [-1, 1]:

    x = 2 * (db + top_db) / top_db - 1          db = (x + 1) * top_db / 2 - top_db

The mel axis (128 bins) is kept; the time axis (T frames) is resampled to the image width
(bilinear) and back to T frames, so an image can be served to the classifier at its own input
size like any cached spectrogram.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def db_to_model(db: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    return (2.0 * (db.clamp(-top_db, 0.0) + top_db) / top_db - 1.0).to(torch.float32)


def model_to_db(x: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    return (x.clamp(-1.0, 1.0) + 1.0) * top_db / 2.0 - top_db


def to_image(mel: torch.Tensor, size: int = 128) -> torch.Tensor:
    """(1, n_mels, T) or (B, 1, n_mels, T) -> (.., 1, size, size): resample both axes to `size`."""
    batched = mel.dim() == 4
    x = mel if batched else mel.unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x if batched else x.squeeze(0)


def from_image(img: torch.Tensor, n_mels: int = 128, frames: int = 87) -> torch.Tensor:
    """The inverse of `to_image` onto a (n_mels, frames) grid."""
    batched = img.dim() == 4
    x = img if batched else img.unsqueeze(0)
    x = F.interpolate(x, size=(n_mels, frames), mode="bilinear", align_corners=False)
    return x if batched else x.squeeze(0)
