"""The first stage of a latent-diffusion recipe: a diffusers AutoencoderKL that compresses log-mel
images ([-1, 1], 1 x S x S) into a small latent grid (C x S/f x S/f) and decodes them back.

Why: a CPU-sized denoiser cannot model a spectrogram's fine texture (harmonics, silences) in pixel
space, and shrinking the image to make it affordable throws that texture away (docs/benchmarks.md:
the 32x32 image alone puts real speech 3.8 times the held-out distance from the training clips).
An autoencoder keeps the texture in its decoder and leaves the denoiser a 16x smaller problem
(Rombach et al., 2022; AudioLDM does the same for audio). It is trained per fold on the fold's
training images only, like the denoiser, with an L1 reconstruction loss and a small KL term that
keeps the latent space smooth enough to sample.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL


# What a latent recipe may set in `diffusion.autoencoder` (read one by one in ser/diffusion/training.py,
# so an unknown key would otherwise be ignored without a word).
AUTOENCODER_SETTINGS = ("latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups", "lr",
                        "kl_weight", "batch_size", "max_steps")


def build_autoencoder(latent_channels: int, block_out_channels: list[int], layers_per_block: int,
                      norm_num_groups: int, image_size: int) -> AutoencoderKL:
    """One down block per width; each block but the last halves the image."""
    n = len(block_out_channels)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                         norm_num_groups=norm_num_groups, sample_size=image_size)


def latent_size(image_size: int, block_out_channels: list[int]) -> int:
    return image_size // 2 ** (len(block_out_channels) - 1)


class SpectrogramAutoencoder(pl.LightningModule):
    def __init__(self, latent_channels: int = 4, block_out_channels: list[int] = (32, 64, 128), layers_per_block: int = 1,
                 norm_num_groups: int = 16, image_size: int = 128, lr: float = 5e-4, kl_weight: float = 1e-6):
        super().__init__()
        self.save_hyperparameters()
        self.vae = build_autoencoder(latent_channels, list(block_out_channels), layers_per_block, norm_num_groups,
                                     image_size)

    def _losses(self, x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        return F.l1_loss(self.vae.decode(z).sample, x), posterior.kl().mean()

    def training_step(self, batch, batch_idx):
        x = batch[0]
        l1, kl = self._losses(x, sample=True)
        loss = l1 + self.hparams.kl_weight * kl
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        self.log("train/l1", l1, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        """Reconstruction error on clips it never trains on (in image units: 1.0 is 40 dB)."""
        x = batch[0]
        l1, _ = self._losses(x, sample=False)
        self.log("val/loss", l1, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.vae.parameters(), lr=self.hparams.lr)


def standardise(z: torch.Tensor, latent: dict) -> torch.Tensor:
    """Latents to the unit-variance scale the denoiser's noise schedule assumes (`latent`: the
    shift and scale a generator's metadata records); `unstandardise` undoes it."""
    return (z - latent["shift"]) / latent["scale"]


def unstandardise(x: torch.Tensor, latent: dict) -> torch.Tensor:
    return x * latent["scale"] + latent["shift"]


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The posterior means of `images` (N, 1, S, S): deterministic latents to train the denoiser on."""
    vae.eval()
    device = vae.device
    return torch.cat([vae.encode(images[i:i + batch].to(device)).latent_dist.mode().cpu()
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, batch: int = 32) -> torch.Tensor:
    vae.eval()
    return torch.cat([vae.decode(latents[i:i + batch].to(vae.device)).sample.clamp(-1, 1)
                      for i in range(0, len(latents), batch)])
