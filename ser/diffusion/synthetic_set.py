"""The synthetic-set file format: generated spectrograms, their emotions, and where they came from.

One safetensors file (no pickle): `mels` (N, 1, n_mels, frames), log-mel spectrograms in dB, `labels` (N,), and
in its metadata `info`, a JSON object that names at least the emotions (class order) and the
generator's exact training speakers, which fold safety is checked against. Written by
ser.diffusion.sampling, read by aug=ddpm (ser.diffusion.mixing) and mode=quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ser.errors import NotFound
from ser.io import atomic_path

# The speaker name synthetic clips travel under: the generator is normalised like one more speaker.
SYNTHETIC_SPEAKER = "synthetic"
FILENAME = "synthetic.safetensors"


def save_synthetic_set(path: str | Path, spectrograms: torch.Tensor, labels, info: dict) -> Path:
    for key in ("emotions", "train_speakers"):
        if key not in info:
            raise ValueError(f"a synthetic set's info needs {key!r}")
    with atomic_path(path) as tmp:
        save_file({"mels": spectrograms.contiguous(), "labels": torch.as_tensor(labels)}, str(tmp),
                  metadata={"info": json.dumps(info)})
    return Path(path)


def synthetic_set_info(path: str | Path) -> dict:
    """The `info` of a synthetic set (or of SDEdit variants, saved the same way) without reading its
    spectrograms (a pool can hold thousands)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["info"])


def load_synthetic_set(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(spectrograms in dB (N, 1, n_mels, T), labels (N,), info)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no synthetic set at {path}")
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("mels"), f.get_tensor("labels"), json.loads(f.metadata()["info"])
