"""Pooling a sequence of frames into one vector per clip."""

from __future__ import annotations

import torch
from torch import nn


class AttentiveStatsPool(nn.Module):
    """Mean and standard deviation over time, weighted by a learned per-frame attention score
    (Okabe et al. 2018): frames that carry the emotion count more than pauses and steady vowels."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv1d(channels, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, 2C)
        w = torch.softmax(self.score(h), dim=-1)
        mean = (h * w).sum(dim=-1)
        std = ((h - mean.unsqueeze(-1)) ** 2 * w).sum(dim=-1).clamp_min(1e-6).sqrt()
        return torch.cat([mean, std], dim=1)
