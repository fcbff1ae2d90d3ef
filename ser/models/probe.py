"""A probe on a speech encoder's hidden layers: which layers, which frames, which emotion."""

from __future__ import annotations

import torch
from torch import nn

from ser.models.pooling import AttentiveStatsPool


class EncoderProbe(nn.Module):
    """A probe on a frozen speech encoder's hidden layers (SUPERB-style): a learned softmax weighting
    of the layers, (optionally) a 1x1 projection, attentive statistics pooling over time, and a
    linear head on the batch-normalised statistics.

    Input: (B, in_chans = the encoder's layers, feat_dim = its width, T) from features=encoder.
    Which layers carry emotion is learned on the training speakers (`layer_weights()`, saved in
    results.json), never picked on test folds. `channels=None` pools the encoder's own dimensions
    (a linear probe with learned layer weights and attention); a number projects to that many first.
    No dropout comes before the pooling: element-wise dropout scales the kept values by 1 / (1 - p),
    which inflates the pooled standard deviations while training and not at evaluation (and shifts
    the projection's batch-norm statistics the same way). On EmoDB validation speakers that
    mismatch cost about 0.07 UA at p = 0.1 (docs/benchmarks.md); dropout acts on the head only.
    """

    def __init__(self, num_classes: int, in_chans: int, feat_dim: int, channels: int | None = None,
                 drop_rate: float = 0.3, layer_lr_scale: float = 1.0):
        super().__init__()
        self.layer_lr_scale = layer_lr_scale
        self.layer_logits = nn.Parameter(torch.zeros(in_chans))
        width = channels or feat_dim
        self.project = nn.Identity() if channels is None else nn.Sequential(
            nn.Conv1d(feat_dim, channels, 1), nn.BatchNorm1d(channels), nn.ReLU(inplace=True))
        self.pool = AttentiveStatsPool(width)
        self.num_features = 2 * width
        self.head = nn.Sequential(nn.BatchNorm1d(self.num_features), nn.Dropout(drop_rate),
                                  nn.Linear(self.num_features, num_classes))

    def param_groups(self, lr: float) -> list[dict]:
        """The layer weights learn at `layer_lr_scale` x the head's lr, without weight decay. They are
        5-13 numbers beside thousands in the head: at the head's lr their logits move at most about
        lr per step, so in a short CPU schedule (~450 steps at 1e-3) they stayed near uniform
        (0.17-0.22 on EmoDB) and the plot said nothing. At 30x they move (EmoDB: 0.31-0.34 on
        layer 2, under 0.1 on layers 3-4), with no significant change in UA (docs/benchmarks.md)."""
        rest = [p for n, p in self.named_parameters() if n != "layer_logits"]
        return [{"params": [self.layer_logits], "lr": lr * self.layer_lr_scale, "lr_scale": self.layer_lr_scale,
                 "weight_decay": 0.0},
                {"params": rest, "lr": lr, "lr_scale": 1.0}]

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        mixed = (x * self.layer_weights().view(1, -1, 1, 1)).sum(dim=1)  # (B, dim, T)
        return self.pool(self.project(mixed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
