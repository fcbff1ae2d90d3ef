"""The DDPM LightningModule: trains a diffusers UNet2DModel to denoise log-mel images (or, in a
latent recipe, an autoencoder's latents of them: `in_channels` = the latent channels).

One class-conditional UNet serves every emotion (class embeddings; a "null" class used with
probability `p_uncond` during training enables classifier-free guidance). With `num_classes=0`
it is unconditional: the reference recipe trains one such model per emotion.
This module only trains; `to_generator()` hands the (EMA) weights to a `SpectrogramGenerator`,
which samples, edits and is saved (ser/diffusion/generator.py).
"""

from __future__ import annotations

import copy
import inspect

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

from ser.diffusion.generator import SpectrogramGenerator
from ser.errors import invalid_choice

# How the learning rate moves over the training's step budget (diffusers.optimization's names):
# held, or decayed from `lr` to 0 at the last step, linearly or along a half cosine.
LR_SCHEDULES = ("constant", "linear", "cosine")
# What a recipe may set in `diffusion.unet`: diffusers' own UNet2DModel settings (dropout, widths, block
# types, ...), less those derived from the data here (the channels, one embedding per emotion).
UNET_SETTINGS = tuple(p for p in inspect.signature(UNet2DModel.__init__).parameters
                      if p not in ("self", "in_channels", "out_channels", "num_class_embeds"))


class SpectrogramDDPM(pl.LightningModule):
    def __init__(self, unet: dict, num_classes: int = 0, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", lr: float = 1e-4, p_uncond: float = 0.1, ema_decay: float = 0.0,
                 snr_gamma: float | None = None, in_channels: int = 1, lr_schedule: str = "constant"):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise invalid_choice("diffusion.lr_schedule", lr_schedule, LR_SCHEDULES)
        self.save_hyperparameters()
        # Conditional models get one extra embedding: index num_classes is "no emotion" (for CFG).
        self.unet = UNet2DModel(in_channels=in_channels, out_channels=in_channels,
                                num_class_embeds=(num_classes + 1) if num_classes else None, **unet)
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.ema = EMAModel(self.unet.parameters(), decay=ema_decay) if ema_decay > 0 else None

    @property
    def null_class(self) -> int:
        return self.hparams.num_classes

    def training_step(self, batch, batch_idx):
        x0, y = batch
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        labels = None
        if self.hparams.num_classes:
            drop = torch.rand(y.shape, device=y.device) < self.hparams.p_uncond
            labels = torch.where(drop, torch.full_like(y, self.null_class), y)
        per_image = F.mse_loss(self.unet(xt, t, class_labels=labels).sample, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_image * self.loss_weights(t)).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-timestep loss weights. Plain noise prediction weighs every timestep alike; Min-SNR-gamma
        (Hang et al., 2023; `snr_gamma`, 5 in the paper) caps the weight of the low-noise timesteps,
        whose easy objectives otherwise dominate the gradient, and converges several times faster.
        For noise prediction the weight is min(SNR, gamma) / SNR."""
        if not self.hparams.snr_gamma:
            return torch.ones(t.shape, device=t.device)
        snr = compute_snr(self.scheduler, t)
        return torch.clamp(snr, max=self.hparams.snr_gamma) / snr

    def validation_step(self, batch, batch_idx):
        """Denoising loss on clips the generator never trains on, with noise and timesteps fixed
        per batch, so successive epochs are measured on the same problem: the convergence curve
        (unweighted, so recipes with and without loss weights are measured alike)."""
        x0, y = batch
        g = torch.Generator().manual_seed(batch_idx)
        noise = torch.randn(x0.shape, generator=g).to(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g).to(x0.device)
        labels = y if self.hparams.num_classes else None
        loss = F.mse_loss(self.unet(self.scheduler.add_noise(x0, noise, t), t, class_labels=labels).sample, noise)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x0.shape[0])

    def on_validation_epoch_start(self):
        if self.ema is not None:  # measure the weights that will be saved
            self.ema.to(self.device)
            self.ema.store(self.unet.parameters())
            self.ema.copy_to(self.unet.parameters())

    def on_validation_epoch_end(self):
        if self.ema is not None:
            self.ema.restore(self.unet.parameters())

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.to(self.device)
            self.ema.step(self.unet.parameters())

    # The EMA weights are not parameters Lightning knows about: carry them in the checkpoint, so a
    # resumed training continues the same average instead of restarting it from the live weights.
    def on_save_checkpoint(self, checkpoint):
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        # The decay spans the budget the Trainer was given (max_steps, or epochs x batches), so it
        # reaches 0 at the last step. A resumed training whose max_steps was raised stretches the
        # rest of the curve over the new budget (the step count is kept, the lr jumps back up).
        decay = get_scheduler(self.hparams.lr_schedule, optimizer, num_warmup_steps=0,
                              num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def to_generator(self, metadata: dict, vae=None) -> SpectrogramGenerator:
        """The trained generator, with the EMA weights when they are kept (what gets sampled and
        saved); `metadata` must name the emotions and the exact training speakers (and, with the
        latent recipe's autoencoder `vae`, the latents' shift and scale)."""
        unet = copy.deepcopy(self.unet)
        if self.ema is not None:
            self.ema.to(self.device)
            self.ema.copy_to(unet.parameters())
        meta = {**metadata, "num_classes": self.hparams.num_classes, "p_uncond": self.hparams.p_uncond,
                "ema_decay": self.hparams.ema_decay, "lr": self.hparams.lr, "lr_schedule": self.hparams.lr_schedule,
                "snr_gamma": self.hparams.snr_gamma}
        return SpectrogramGenerator(unet.eval(), copy.deepcopy(self.scheduler), meta, vae)
