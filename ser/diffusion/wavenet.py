"""A denoiser that keeps the spectrogram's native mel resolution: the mel bands are channels and a
stack of dilated 1-D convolutions runs along time (DiffSinger's denoiser, Liu et al., AAAI 2022).

Why not a 2-D UNet: on two CPU cores a 2-D UNet only fits at 32x32, and squeezing 128 mel bands
into 32 rows throws away the harmonics; held-out real speech squeezed that way and stretched back
already sits about 4 times farther (KID) from the training speech than it does unsqueezed
(docs/benchmarks.md). With frequency as channels every frame keeps all its bands and a layer costs
what one 32x32 2-D layer costs.

It speaks UNet2DModel's interface, so the DDPM module, the samplers and SDEdit use it unchanged:
    forward(sample (B, 1, n_mels, frames), timestep, class_labels=None) -> .sample, same shape
and it is saved and loaded the diffusers way (`save_pretrained` / `from_pretrained`, safetensors).
Class conditioning: an embedding added to the timestep embedding, as UNet2DModel does with
`num_class_embeds`; the extra last class is "no emotion" for classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class MelWaveNetOutput(BaseOutput):
    sample: torch.Tensor


class _ResidualLayer(nn.Module):
    """One gated, dilated convolution (WaveNet): conditioning enters before the convolution, the
    output splits into a residual for the next layer and a skip to the output."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, embed_dim: int):
        super().__init__()
        self.condition = nn.Linear(embed_dim, channels)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, filt = self.conv(h + self.condition(emb)[:, :, None]).chunk(2, dim=1)
        residual, skip = self.out(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, dim=1)
        return (h + residual) / math.sqrt(2.0), skip


class MelWaveNet(ModelMixin, ConfigMixin):
    """`sample_size`: (n_mels, frames) of the images it denoises (frames is a default; any length
    works, the network has no down-sampling). `residual_channels` x `layers` sets the cost; the
    dilation doubles every layer and restarts every `dilation_cycle` layers, so 12 layers of
    kernel 3 with a cycle of 6 see 253 frames (about 6 s at 22050 Hz, hop 512)."""

    @register_to_config
    def __init__(self, sample_size=(128, 88), in_channels: int = 1, out_channels: int = 1,
                 residual_channels: int = 128, layers: int = 12, dilation_cycle: int = 6, kernel_size: int = 3,
                 num_class_embeds: int | None = None):
        super().__init__()
        if in_channels != 1 or out_channels != 1:
            raise ValueError("MelWaveNet denoises single-channel spectrogram images (in_channels = out_channels = 1)")
        n_mels, c = int(sample_size[0]), residual_channels
        embed_dim = 4 * c
        self.time_proj = Timesteps(c, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c, embed_dim)
        self.class_embedding = nn.Embedding(num_class_embeds, embed_dim) if num_class_embeds else None
        self.input = nn.Conv1d(n_mels, c, 1)
        self.residual_layers = nn.ModuleList(_ResidualLayer(c, 2 ** (i % dilation_cycle), kernel_size, embed_dim)
                                    for i in range(layers))
        self.skip = nn.Conv1d(c, c, 1)
        self.output = nn.Conv1d(c, n_mels, 1)
        nn.init.zeros_(self.output.weight)  # start as "predict no noise": a stable first step
        nn.init.zeros_(self.output.bias)

    def forward(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor | None = None,
                return_dict: bool = True):
        if sample.dim() != 4 or sample.shape[1] != 1:
            raise ValueError(f"MelWaveNet expects (batch, 1, n_mels, frames) images, got {tuple(sample.shape)}")
        x = sample[:, 0]
        t = torch.as_tensor(timestep, device=x.device)
        t = t.reshape(1).expand(x.shape[0]) if t.dim() == 0 else t.expand(x.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(x.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("a class-conditional MelWaveNet needs class_labels")
            emb = emb + self.class_embedding(class_labels).to(x.dtype)
        h = torch.relu(self.input(x))
        skips = 0.0
        for layer in self.residual_layers:
            h, skip = layer(h, emb)
            skips = skips + skip
        out = self.output(torch.relu(self.skip(skips / math.sqrt(len(self.residual_layers)))))[:, None]
        return MelWaveNetOutput(sample=out) if return_dict else (out,)
