"""A trained spectrogram generator: a diffusers UNet2DModel, its noise scheduler, for a latent
recipe the autoencoder whose latents the UNet denoises, and the metadata that fold safety is
checked against. It samples new log-mel images, edits real ones (SDEdit), and is shared the
diffusers way:

    <dir>/unet/          UNet2DModel.save_pretrained (safetensors)
    <dir>/scheduler/     DDPMScheduler.save_pretrained
    <dir>/vae/           AutoencoderKL.save_pretrained (latent recipes only)
    <dir>/metadata.json  emotions, the exact training speakers, recipe, training curve; for a latent
                         recipe the latents' shift and scale ("latent")

Sampling is a hand-written loop over a diffusers scheduler because classifier-free guidance needs
two UNet passes per step (conditional and "no emotion").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from ser.diffusion.autoencoder import standardise, unstandardise
from ser.errors import ConfigError, NotFound, invalid_choice
from ser.io import atomic_dir

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


class SpectrogramGenerator:
    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, metadata: dict, vae: AutoencoderKL | None = None):
        for key in ("emotions", "train_speakers"):
            if key not in metadata:
                raise ConfigError(f"generator metadata needs {key!r} (fold safety is checked against it)")
        if vae is not None and "latent" not in metadata:
            raise ConfigError("a latent generator's metadata needs 'latent' (the shift and scale of its latents)")
        if vae is not None and scheduler.config.clip_sample:
            # DDPM and DDIM steps clip their estimate of the clean sample to [-1, 1] by default: right
            # for a pixel image, wrong for unit-variance latents, a third of whose values lie outside
            # (Stable Diffusion's schedulers turn it off too). Generators saved before this was
            # noticed carry the default (docs/benchmarks.md, "The latent sampler clipped its latents").
            scheduler = DDPMScheduler.from_config(scheduler.config, clip_sample=False)
        self.unet, self.scheduler, self.metadata, self.vae = unet, scheduler, metadata, vae

    @property
    def num_classes(self) -> int:
        return self.metadata["num_classes"]

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def to(self, device) -> "SpectrogramGenerator":
        self.unet.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self

    # --- latent recipes: the UNet denoises standardised autoencoder latents ---------------------
    def _to_latents(self, images: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return images
        return standardise(self.vae.encode(images.to(self.device)).latent_dist.mode(), self.metadata["latent"])

    def _to_images(self, x: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return x.clamp(-1, 1)
        return self.vae.decode(unstandardise(x, self.metadata["latent"])).sample.clamp(-1, 1)

    # --- sharing -----------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write the generator folder atomically: it appears complete or not at all."""
        with atomic_dir(out_dir) as tmp:
            self.write_into(tmp)
        return Path(out_dir)

    def write_into(self, folder: str | Path) -> Path:
        """The files of `save_pretrained`, written into `folder` as they are (for a caller that
        makes a larger folder atomic, e.g. one generator per emotion)."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(folder / "vae", safe_serialization=True)
        (folder / "metadata.json").write_text(json.dumps(self.metadata, indent=1))
        return folder

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "SpectrogramGenerator":
        """Load without unpickling anything: safetensors weights and JSON configs."""
        path = Path(path)
        if not (path / "metadata.json").is_file():
            raise NotFound(f"no generator at {path} (no metadata.json); train one with generate.py mode=train")
        unet = UNet2DModel.from_pretrained(path / "unet", use_safetensors=True, low_cpu_mem_usage=False)
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path / "vae", use_safetensors=True, low_cpu_mem_usage=False).eval()
        return cls(unet.eval(), DDPMScheduler.from_pretrained(path / "scheduler"),
                   json.loads((path / "metadata.json").read_text()), vae)

    # --- inference ---------------------------------------------------------------------------
    def _sampler(self, name: str, steps: int):
        if name not in SAMPLERS:
            raise invalid_choice("sampler", name, SAMPLERS)
        config = self.scheduler.config
        if name == "dpmsolver++":
            sched = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
        else:
            sched = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[name].from_config(config)
        sched.set_timesteps(steps, device=self.device)
        return sched

    @property
    def inference_precision(self) -> str:
        """bf16 on a GPU, as diffusers pipelines are usually run: in fp32 the ten 128x128 pools of
        one EmoDB seed did not finish in 3 minutes of an H200 (docs/benchmarks.md). fp32 on a CPU,
        where bf16 is slower, not faster. The scheduler's arithmetic stays fp32 either way."""
        return "bf16-mixed" if self.device.type == "cuda" else "32-true"

    def _eps(self, x, t, labels, guidance: float):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.inference_precision == "bf16-mixed"):
            if not self.num_classes:
                return self.unet(x, t).sample.float()
            if guidance == 1.0:
                return self.unet(x, t, class_labels=labels).sample.float()
            # Classifier-free guidance: the conditional and the "no emotion" pass as one batch.
            no_emotion = torch.full_like(labels, self.num_classes)
            cond, uncond = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, no_emotion])).sample.float().chunk(2)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def _denoise(self, x, sched, timesteps, labels, guidance, generator):
        for t in timesteps:
            eps = self._eps(sched.scale_model_input(x, t), t, labels, guidance)
            x = sched.step(eps, t, x, generator=generator).prev_sample
        return x

    def _labels(self, n: int, label: int | None):
        return None if label is None else torch.full((n,), int(label), device=self.device, dtype=torch.long)

    @torch.no_grad()
    def sample(self, n: int, label: int | None = None, sampler: str = "ddpm", steps: int | None = None,
               guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
        """`n` new images in [-1, 1], shape (n, 1, image_size, image_size)."""
        self.unet.eval()
        c, size = self.unet.config.in_channels, self.unet.config.sample_size
        sched = self._sampler(sampler, steps or self.scheduler.config.num_train_timesteps)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn((n, c, size, size), generator=generator).to(self.device) * sched.init_noise_sigma
        return self._to_images(self._denoise(x, sched, sched.timesteps, self._labels(n, label), guidance, generator))

    @torch.no_grad()
    def enhance(self, x0: torch.Tensor, label: int | None, strength: float, sampler: str = "ddim", steps: int = 50,
                guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
        """SDEdit: noise real images to `strength` (0..1) and denoise them toward `label`. 0 returns the input."""
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"enhance.strength must be in [0, 1], got {strength}")
        if strength == 0.0:
            return x0.clone()
        self.unet.eval()
        sched = self._sampler(sampler, steps)
        start = steps - max(1, int(round(strength * steps)))
        timesteps = sched.timesteps[start:]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        z0 = self._to_latents(x0.to(self.device))
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        x = sched.add_noise(z0, noise, timesteps[:1].repeat(x0.shape[0]))
        return self._to_images(self._denoise(x, sched, timesteps, self._labels(x0.shape[0], label), guidance, generator))


def load_generators(gen_dir: str | Path, emotions: list[str], device: str = "cpu") -> dict:
    """{emotion index: (generator, class label or None)} for a conditional generator (one folder)
    or the reference recipe's one unconditional generator per emotion (<gen_dir>/<emotion>/)."""
    gen_dir = Path(gen_dir)
    if (gen_dir / "metadata.json").is_file():
        generator = SpectrogramGenerator.from_pretrained(gen_dir).to(device)
        return {k: (generator, k) for k in range(len(emotions))}
    if not all((gen_dir / e / "metadata.json").is_file() for e in emotions):
        raise NotFound(f"no generator at {gen_dir} (nor one per emotion in {gen_dir}/<emotion>); "
                       "run generate.py mode=train for this fold first")
    return {k: (SpectrogramGenerator.from_pretrained(gen_dir / e).to(device), None) for k, e in enumerate(emotions)}

def generator_metadata_at(gen_dir: str | Path, emotions: list[str]) -> dict | None:
    """The saved metadata of the generator at `gen_dir` (conditional, or the first per-emotion one);
    None when there is none."""
    for path in [Path(gen_dir) / "metadata.json", *(Path(gen_dir) / e / "metadata.json" for e in emotions)]:
        if path.is_file():
            return json.loads(path.read_text())
    return None
