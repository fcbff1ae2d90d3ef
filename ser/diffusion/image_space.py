"""The diffusion model's image space: the exact map between log-mel dB and [-1, 1] images, and back.

Spectrograms are in [-top_db, 0] dB (librosa power_to_db with ref=max, top_db=80; see
ser.features.mel). The model works on square single-channel images in [-1, 1]:

    x = 2 * (db + top_db) / top_db - 1          db = (x + 1) * top_db / 2 - top_db

Both axes are resampled (bilinear) to the image's shape: a square `size` for the 2-D UNets, or
(n_mels, frames) for a denoiser that keeps the native mel resolution (diffusion.image_size=native).
`from_image` maps an image back onto a clip's (n_mels, T) grid, so it can be served to the
classifier at its own input size like any cached spectrogram.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def db_to_model(db: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    return (2.0 * (db.clamp(-top_db, 0.0) + top_db) / top_db - 1.0).to(torch.float32)


def model_to_db(x: torch.Tensor, top_db: float = 80.0) -> torch.Tensor:
    return (x.clamp(-1.0, 1.0) + 1.0) * top_db / 2.0 - top_db


def image_shape(size) -> tuple[int, int]:
    """(height, width) of an image: `size` is a side (square) or a (height, width) pair."""
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def to_image(mel: torch.Tensor, size=128) -> torch.Tensor:
    """(1, n_mels, T) or (B, 1, n_mels, T) -> (.., 1, height, width): resample both axes to `size`
    (a side, or a (height, width) pair; see image_shape)."""
    batched = mel.dim() == 4
    x = mel if batched else mel.unsqueeze(0)
    x = F.interpolate(x, size=image_shape(size), mode="bilinear", align_corners=False)
    return x if batched else x.squeeze(0)


def from_image(img: torch.Tensor, n_mels: int = 128, frames: int = 87) -> torch.Tensor:
    """The inverse of `to_image` onto a (n_mels, frames) grid."""
    batched = img.dim() == 4
    x = img if batched else img.unsqueeze(0)
    x = F.interpolate(x, size=(n_mels, frames), mode="bilinear", align_corners=False)
    return x if batched else x.squeeze(0)
