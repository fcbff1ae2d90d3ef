"""The DDPM LightningModule: a diffusers UNet2DModel that learns to denoise log-mel images.

One class-conditional UNet serves every emotion (class embeddings; a "null" class used with
probability `p_uncond` during training enables classifier-free guidance). With `num_classes=0`
it is unconditional: the reference recipe trains one such model per emotion.
Sampling and enhancement are inference loops over a diffusers scheduler; training is Lightning's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


class GeneratorFoldLeak(RuntimeError):
    pass


class SpectrogramDDPM(pl.LightningModule):
    def __init__(self, unet: dict, num_classes: int = 0, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", lr: float = 1e-4, p_uncond: float = 0.1, ema_decay: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        # Conditional models get one extra embedding: index num_classes is "no emotion" (for CFG).
        self.unet = UNet2DModel(in_channels=1, out_channels=1,
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
        loss = F.mse_loss(self.unet(xt, t, class_labels=labels).sample, noise)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        """Denoising loss on clips the generator never trains on, with noise and timesteps fixed
        per batch, so successive epochs are measured on the same problem: the convergence curve."""
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

    def configure_optimizers(self):
        return torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr)

    # --- inference -------------------------------------------------------------------------
    def _sampler(self, name: str, steps: int):
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose from {SAMPLERS}")
        config = self.scheduler.config
        sched = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}.get(name)
        sched = sched.from_config(config) if sched else DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++")
        sched.set_timesteps(steps, device=self.device)
        return sched

    def _eps(self, x, t, labels, guidance: float):
        if not self.hparams.num_classes:
            return self.unet(x, t).sample
        cond = self.unet(x, t, class_labels=labels).sample
        if guidance == 1.0:
            return cond
        uncond = self.unet(x, t, class_labels=torch.full_like(labels, self.null_class)).sample
        return uncond + guidance * (cond - uncond)  # classifier-free guidance

    @torch.no_grad()
    def _denoise(self, x, sched, timesteps, labels, guidance, generator):
        for t in timesteps:
            eps = self._eps(sched.scale_model_input(x, t), t, labels, guidance)
            x = sched.step(eps, t, x, generator=generator).prev_sample
        return x.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, sampler: str = "ddpm", steps: int | None = None,
               guidance: float = 1.0, seed: int = 0, size: int | None = None) -> torch.Tensor:
        """`n` new images in [-1, 1], shape (n, 1, size, size)."""
        self.eval()
        size = size or self.unet.config.sample_size
        steps = steps or self.scheduler.config.num_train_timesteps
        sched = self._sampler(sampler, steps)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn((n, 1, size, size), generator=generator).to(self.device) * sched.init_noise_sigma
        labels = None if label is None else torch.full((n,), int(label), device=self.device, dtype=torch.long)
        return self._denoise(x, sched, sched.timesteps, labels, guidance, generator)

    @torch.no_grad()
    def enhance(self, x0: torch.Tensor, label: int | None, strength: float, sampler: str = "ddim", steps: int = 50,
                guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
        """SDEdit: noise real images to `strength` (0..1) and denoise them toward `label`. 0 returns the input."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if strength == 0.0:
            return x0.clone()
        self.eval()
        sched = self._sampler(sampler, steps)
        start = steps - max(1, int(round(strength * steps)))
        timesteps = sched.timesteps[start:]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        x = sched.add_noise(x0.to(self.device), noise, timesteps[:1].repeat(x0.shape[0]))
        labels = None if label is None else torch.full((x0.shape[0],), int(label), device=self.device, dtype=torch.long)
        return self._denoise(x, sched, timesteps, labels, guidance, generator)

    # --- sharing -----------------------------------------------------------------------------
    def save_generator(self, out_dir: str | Path, metadata: dict) -> Path:
        """diffusers `save_pretrained` (safetensors; EMA weights when kept) + scheduler + metadata.json.

        `metadata` must name the emotions and the exact speakers the generator was trained on:
        that is what fold safety is checked against.
        """
        for key in ("emotions", "train_speakers"):
            if key not in metadata:
                raise ValueError(f"generator metadata needs {key!r}")
        out = Path(out_dir)
        unet = self.unet
        if self.ema is not None:
            self.ema.store(unet.parameters())
            self.ema.copy_to(unet.parameters())
        unet.save_pretrained(out / "unet", safe_serialization=True)
        if self.ema is not None:
            self.ema.restore(unet.parameters())
        self.scheduler.save_pretrained(out / "scheduler")
        meta = {**metadata, "num_classes": self.hparams.num_classes, "p_uncond": self.hparams.p_uncond,
                "ema_decay": self.hparams.ema_decay, "lr": self.hparams.lr}
        (out / "metadata.json").write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load_generator(cls, path: str | Path) -> tuple["SpectrogramDDPM", dict]:
        path = Path(path)
        meta = json.loads((path / "metadata.json").read_text())
        unet = UNet2DModel.from_pretrained(path / "unet", use_safetensors=True, low_cpu_mem_usage=False)
        model = cls.__new__(cls)
        pl.LightningModule.__init__(model)
        model.save_hyperparameters({"unet": {}, "num_classes": meta["num_classes"], "p_uncond": meta["p_uncond"],
                                    "ema_decay": 0.0, "lr": meta["lr"]})
        model.unet, model.ema = unet, None
        model.scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
        return model, meta


def assert_fold_safe(generator_meta: dict, test_speakers, where: str = "") -> None:
    """Refuse a generator that was trained on any of the run's test speakers."""
    leaked = sorted(set(generator_meta.get("train_speakers", [])) & set(test_speakers))
    if leaked:
        raise GeneratorFoldLeak(
            f"generator{(' ' + where) if where else ''} was trained on test speaker(s) {leaked} of this run; "
            f"its samples would leak the test speakers into training. Train a generator on this fold's "
            f"training speakers only (generate.py with the same dataset, split and split.fold)."
        )
