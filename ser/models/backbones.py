"""Backbones by name: timm models with single-channel input, our compact CNN/TDNNs for CPU
budgets, the probe on a frozen encoder's layers (probe.py) and the fine-tuned encoder (finetune.py).

Pretrained weights, in order of precedence:
  weights=/path/file (.safetensors/.pth/.bin)  a local checkpoint (timm or torchvision key names),
  weights=torchvision                          torchvision's checkpoint file in $TORCH_HOME/hub/checkpoints,
  pretrained=true                              timm's default tag from the Hugging Face hub (or its cache
                                               when HF_HUB_OFFLINE=1).
Single-channel input uses timm's `in_chans=1`, which sums the pretrained RGB filters of the stem.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from ser.errors import ConfigError, PretrainedWeightsUnavailable
from ser.models.finetune import EncoderFinetune
from ser.models.pooling import AttentiveStatsPool
from ser.models.probe import EncoderProbe


class SpectroCNN(nn.Module):
    """Conv blocks over (mel, time), then mean+std pooling over time (~0.1 M parameters at width 16).

    Small enough to train a LOSO fold in about a minute on 2 CPU cores; pooling statistics
    over time make it indifferent to clip length.
    """

    def __init__(self, num_classes: int, in_chans: int = 1, width: int = 16, depth: int = 4,
                 convs_per_block: int = 1, drop_rate: float = 0.3):
        super().__init__()
        chans = [in_chans] + [width * 2 ** i for i in range(depth)]
        blocks = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            for j in range(convs_per_block):
                blocks += [nn.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.num_features = 2 * chans[-1]
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=2)  # average over mel bands -> (B, C, T)
        return torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class TDNN(nn.Module):
    """1-D convolutions over time with each frame's features (mel bands or openSMILE descriptors)
    as channels (a TDNN, as in x-vectors), then mean+std pooling over time. `model=mel_tdnn`.

    Each filter sees the whole spectrum of a few frames, so spectral shape and its dynamics are
    learned directly, with far fewer examples than a 2-D CNN needs: on EmoDB LOSO it is both
    more accurate and faster to train on a CPU (docs/benchmarks.md).
    """

    def __init__(self, num_classes: int, in_chans: int = 1, feat_dim: int = 128, channels: int = 128,
                 layers: int = 3, kernel_size: int = 5, drop_rate: float = 0.3):
        super().__init__()
        blocks, c_in = [], feat_dim * in_chans
        for i in range(layers):
            dilation = 1 if i == 0 else 2  # widen the receptive field without more parameters
            blocks += [nn.Conv1d(c_in, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
                       nn.BatchNorm1d(channels), nn.ReLU(inplace=True)]
            c_in = channels
        self.features = nn.Sequential(*blocks)
        self.num_features = 2 * channels
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.flatten(1, 2))  # (B, C, feat_dim, T) -> (B, C * feat_dim, T)
        return torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class HybridTDNN(nn.Module):
    """Two views of a clip: a TDNN with attentive statistics pooling over its frame-level
    descriptors, and a dropout-regularised projection of its openSMILE functionals; one head
    reads both.

    Input: a pair (frames (B, 1, feat_dim, T), functionals (B, side_dim)). The functionals carry
    what the frame network struggles to learn from ~500 clips (voiced-segment statistics,
    percentiles, regression shapes); the frames carry the dynamics the functionals average out.
    On EmoDB LOSO it is level with ComParE functionals + SVM, not ahead (docs/benchmarks.md).
    """

    def __init__(self, num_classes: int, side_dim: int, in_chans: int = 1, feat_dim: int = 130, channels: int = 128,
                 input_dropout: float = 0.1, side_dropout: float = 0.5, drop_rate: float = 0.3):
        super().__init__()
        c = channels
        self.frames = nn.Sequential(
            nn.Dropout(input_dropout),
            nn.Conv1d(feat_dim * in_chans, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Conv1d(c, c, 3, padding=2, dilation=2), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
            nn.Conv1d(c, c, 3, padding=3, dilation=3), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
        )
        self.pool = AttentiveStatsPool(c)
        self.functionals = nn.Sequential(nn.Dropout(side_dropout), nn.Linear(side_dim, c), nn.ReLU(inplace=True))
        self.num_features = 3 * c
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(3 * c, c), nn.ReLU(inplace=True),
                                  nn.Dropout(drop_rate), nn.Linear(c, num_classes))

    def forward_features(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        frames, functionals = x
        return torch.cat([self.pool(self.frames(frames.flatten(1, 2))), self.functionals(functionals)], dim=1)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.head(self.forward_features(x))


class DeepEnsemble(nn.Module):
    """N copies of a network with different initialisations, trained side by side on the same
    batches (each with its own loss) and averaged at prediction time.

    `forward` returns log mean probability, so softmax(forward(x)) is the ensemble's average.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def param_groups(self, lr: float) -> list[dict] | None:
        """Each member's own parameter groups (e.g. the probe's layer weights), or None when the
        members have none (one group for everything)."""
        if not all(hasattr(m, "param_groups") for m in self.members):
            return None
        return [g for m in self.members for g in m.param_groups(lr)]

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [m(x) for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(z.float(), dim=-1) for z in self.member_logits(x)]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-12))


def learned_layer_weights(net: nn.Module) -> list[list[float]] | None:
    """The softmax layer weights an encoder probe learned, one list per ensemble member (None for
    networks without them)."""
    members = net.members if isinstance(net, DeepEnsemble) else [net]
    if not all(hasattr(m, "layer_weights") for m in members):
        return None
    with torch.no_grad():
        return [[round(float(w), 4) for w in m.layer_weights()] for m in members]


# Our own architectures by name; any other `arch` is a timm model name. A whitelist, not a
# `_target_`: exported model.json files name their arch, and loading one must not run code it names.
OURS = {"spectro_cnn": SpectroCNN, "mel_tdnn": TDNN, "hybrid_tdnn": HybridTDNN, "encoder_probe": EncoderProbe}
# Architectures whose `pretrained` means a speech encoder's weights (loaded by its own name).
ENCODER_MODELS = {"encoder_finetune": EncoderFinetune}


def build_backbone(arch: str, num_classes: int, in_chans: int = 1, pretrained: bool = False,
                   weights: str | None = None, drop_rate: float = 0.0, ensemble: int = 1, **kwargs) -> nn.Module:
    if ensemble > 1:
        return DeepEnsemble([build_backbone(arch, num_classes, in_chans, pretrained, weights, drop_rate, **kwargs)
                             for _ in range(ensemble)])
    if arch in ENCODER_MODELS:
        return ENCODER_MODELS[arch](num_classes, in_chans=in_chans, drop_rate=drop_rate, pretrained=pretrained, **kwargs)
    if arch in OURS:
        if pretrained or weights:
            raise ConfigError(f"{arch} has no pretrained weights; set model.pretrained=false")
        return OURS[arch](num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    common = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    if weights == "torchvision":
        weights = torchvision_checkpoint(arch)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsUnavailable(f"model.weights={weights} does not exist")
        # timm reads the file itself (safetensors, or torch.load with weights_only=True), adapts
        # the stem to in_chans and drops a classifier whose size does not match.
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **common)
    if pretrained:
        try:
            return timm.create_model(arch, pretrained=True, **common)
        except Exception as err:
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
            raise PretrainedWeightsUnavailable(
                f"could not load ImageNet weights for {arch} from the Hugging Face hub"
                f"{' (HF_HUB_OFFLINE is set and they are not in the HF cache)' if offline else ''}: {err}. "
                f"Fix: pass a local checkpoint with model.weights=/path/to/{arch}.safetensors (timm or "
                f"torchvision key names), or model.weights=torchvision with the file in $TORCH_HOME/hub/checkpoints, "
                f"or train from scratch with model.pretrained=false."
            ) from None
    return timm.create_model(arch, pretrained=False, **common)


def torchvision_checkpoint(arch: str) -> str:
    """Where torchvision keeps `arch`'s default ImageNet checkpoint; it must already be there."""
    enum = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if not path.is_file():
        raise PretrainedWeightsUnavailable(
            f"torchvision checkpoint for {arch} not found at {path}; download {enum.url} there, "
            f"or pass model.weights=/path/to/file, or set model.pretrained=false"
        )
    return str(path)
