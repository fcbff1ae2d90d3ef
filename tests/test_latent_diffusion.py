"""Latent diffusion (diffusion=cpu_latent) at toy scale: the autoencoder stage, a generator that
samples and edits through its decoder, sharing it without pickle, resuming, and the generate job."""

import json
import logging

import pytest
import pytorch_lightning as pl
import torch
from diffusers import DDPMScheduler
from omegaconf import OmegaConf

from conftest import TINY, compose_config, generate, train
from ser.diffusion.autoencoder import build_autoencoder, latent_size
from ser.diffusion.ddpm import SpectrogramDDPM
from ser.diffusion.generator import SpectrogramGenerator
from ser.diffusion.synthetic_set import load_synthetic_set
from ser.errors import ConfigError

TINY_AE = dict(latent_channels=2, block_out_channels=[8, 8], layers_per_block=1, norm_num_groups=4)
TINY_UNET = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
TRAINER = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "max_epochs": 1, "max_steps": -1, "logger": False,
                            "enable_checkpointing": False, "enable_model_summary": False, "num_sanity_val_steps": 0})
HARDWARE = OmegaConf.create({"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1,
                             "precision": "32-true", "sync_batchnorm": False, "progress_bar": False})
META = {"emotions": ["a", "b"], "train_speakers": ["s:01"]}
# The cpu_latent recipe at toy size, for the jobs (a 16x16 image, an 8x8 latent, a few steps).
TINY_LATENT = ["diffusion=cpu_latent", "diffusion.max_steps=4", "diffusion.image_size=16",
               "diffusion.autoencoder.block_out_channels=[8,8]", "diffusion.autoencoder.norm_num_groups=4",
               "diffusion.autoencoder.max_steps=3", "diffusion.unet.block_out_channels=[16,32]",
               "diffusion.unet.norm_num_groups=8", "diffusion.unet.layers_per_block=1",
               "diffusion.unet.down_block_types=[DownBlock2D,AttnDownBlock2D]",
               "diffusion.unet.up_block_types=[AttnUpBlock2D,UpBlock2D]"]


def _generator(shift=0.1, scale=2.0) -> SpectrogramGenerator:
    torch.manual_seed(0)
    vae = build_autoencoder(image_size=16, **TINY_AE).eval()
    ddpm = SpectrogramDDPM({**TINY_UNET, "sample_size": latent_size(16, TINY_AE["block_out_channels"])}, num_classes=2,
                           num_train_timesteps=20, in_channels=TINY_AE["latent_channels"])
    return ddpm.to_generator({**META, "latent": {"shift": shift, "scale": scale}}, vae)


def test_a_latent_generator_samples_and_edits_images_through_its_decoder():
    generator = _generator()
    assert generator.unet.config.in_channels == 2 and generator.unet.config.sample_size == 8
    images = generator.sample(3, label=1, sampler="ddim", steps=4, guidance=2.0, seed=1)
    assert images.shape == (3, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, generator.sample(3, label=1, sampler="ddim", steps=4, guidance=2.0, seed=1))
    # The decoder writes the image: the same latent noise, decoded with another latent scale, differs.
    assert not torch.allclose(images, _generator(scale=0.5).sample(3, label=1, sampler="ddim", steps=4, guidance=2.0, seed=1))
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(generator.enhance(x0, label=0, strength=0.0), x0)  # SDEdit at strength 0: the clips as they were
    edited = generator.enhance(x0, label=0, strength=0.5, steps=4)
    assert edited.shape == x0.shape and not torch.allclose(edited, x0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmsolver++"])
def test_a_latent_generator_does_not_clip_its_latents_to_the_pixel_range(sampler):
    # A denoiser that predicts no noise makes every step's clean-sample estimate the scaled-up
    # input, far outside [-1, 1]. Pixel images are clipped there; unit-variance latents must not be.
    latent = _generator()
    pixel = SpectrogramGenerator(latent.unet, DDPMScheduler(num_train_timesteps=20), META)
    for generator in (latent, pixel):
        generator._eps = lambda x, t, labels, guidance: torch.zeros_like(x)
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, generator in (("latent", latent), ("pixel", pixel)):
        sched = generator._sampler(sampler, 4)
        out[name] = generator._denoise(x * sched.init_noise_sigma, sched, sched.timesteps, None, 1.0,
                                       torch.Generator().manual_seed(1))
    assert out["latent"].abs().max() > 1.5
    if sampler != "dpmsolver++":  # DPM-Solver++ never clipped: it has no such setting
        assert out["pixel"].abs().max() <= 1.0 + 1e-6


def test_a_latent_generator_is_shared_without_pickle(tmp_path):
    generator = _generator()
    generator.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = SpectrogramGenerator.from_pretrained(tmp_path / "g")
    assert loaded.vae is not None and loaded.metadata["latent"] == {"shift": 0.1, "scale": 2.0}
    assert not loaded.scheduler.config.clip_sample  # saved as sampled: diffusers' own pipelines read it so
    assert torch.allclose(loaded.sample(2, label=0, sampler="ddim", steps=3, seed=5),
                          generator.sample(2, label=0, sampler="ddim", steps=3, seed=5), atol=1e-5)
    with pytest.raises(ConfigError, match="latent"):
        SpectrogramGenerator(generator.unet, generator.scheduler, META, generator.vae)  # no shift and scale


def test_the_quality_ceiling_of_a_latent_recipe_goes_through_its_autoencoder(tmp_path):
    """mode=quality's "squeezed" clips: for a latent generator, the image size and the decoder both
    bound how close its samples can get; an autoencoder that is not there is not made up."""
    from ser.diffusion.assess import autoencoder_of, squeeze

    generator = _generator()
    generator.save_pretrained(tmp_path / "g")
    vae = autoencoder_of({"generator_dir": str(tmp_path / "g")}, META["emotions"])
    assert vae is not None
    assert autoencoder_of({"generator_dir": str(tmp_path / "elsewhere")}, META["emotions"]) is None
    assert autoencoder_of({}, META["emotions"]) is None
    mel = torch.linspace(-70, -5, 128)[:, None].expand(128, 40).unsqueeze(0).clone()
    through = squeeze(mel, 16, vae)
    assert through.shape == mel.shape and through.min() >= -80 and through.max() <= 0
    assert (through - squeeze(mel, 16)).abs().mean() > 1.0  # an untrained decoder: far from the image-only round trip


def _recipe(max_steps: int, widths=(8, 8)):
    return OmegaConf.create({"image_size": 16, "autoencoder": {**TINY_AE, "block_out_channels": list(widths),
                                                              "lr": 2e-3, "kl_weight": 1e-6, "batch_size": 8,
                                                              "max_steps": max_steps}})


def test_the_autoencoder_learns_and_an_interrupted_generator_keeps_it(tmp_path, caplog):
    """The first stage trains to its own step budget and is kept in the resume folder: a run killed
    while the denoiser trains does not train the autoencoder again, but other settings do."""
    from ser.diffusion.training import fit_autoencoder

    pl.seed_everything(0)
    images = -torch.ones(32, 1, 16, 16)
    images[:, :, 4:12] = torch.linspace(-1, 1, 16)  # a band with a gradient
    images[::2, :, :, ::3] = 0.5                      # and a comb on every other image
    vae, latent = fit_autoencoder(_recipe(24), TRAINER, HARDWARE, images, images[:8], tmp_path / "ae")
    curve = latent["autoencoder_training"]["curve"]
    assert latent["autoencoder_training"]["steps_trained"] == 24 and curve[-1]["step"] == 24
    assert curve[-1]["train/loss"] < 0.7 * curve[0]["train/loss"] and "val/loss" in curve[-1]
    assert latent["channels"] == 2 and latent["size"] == 8 and latent["scale"] > 0
    assert (tmp_path / "ae" / "trained" / "diffusion_pytorch_model.safetensors").is_file()

    with caplog.at_level(logging.INFO, logger="ser.diffusion.training"):
        again, latent_again = fit_autoencoder(_recipe(24), TRAINER, HARDWARE, images, images[:8], tmp_path / "ae")
    assert "using the autoencoder trained before an interruption" in caplog.text
    assert latent_again == latent
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), again.state_dict().values()))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ser.diffusion.training"):
        _, other = fit_autoencoder(_recipe(8, widths=(8, 16)), TRAINER, HARDWARE, images, None, tmp_path / "ae")
    assert "using the autoencoder" not in caplog.text and other["autoencoder_training"]["steps_trained"] == 8


@pytest.mark.slow
def test_generate_trains_and_samples_the_latent_recipe(tmp_path, cache_dir):
    gen = tmp_path / "gen"
    generate(*TINY_LATENT, "dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "sample.n_per_emotion=2",
             "sample.steps=3", "listen.n_per_emotion=1", "listen.griffin_lim_iters=4", "hardware.progress_bar=false",
             f"paths.cache_dir={cache_dir}", f"generator.root={gen}", output_dir=tmp_path / "run")
    meta = json.loads((gen / "generator" / "metadata.json").read_text())
    assert meta["recipe"] == "cpu_latent" and meta["train_speakers"] == ["synthetic:spk02", "synthetic:spk03"]
    assert meta["latent"]["size"] == 8 and meta["latent"]["autoencoder_training"]["steps_trained"] == 3
    assert meta["training"]["budget"]["steps_trained"] == 4
    assert (gen / "generator" / "vae" / "config.json").is_file() and not (gen / "generator.partial").exists()
    mels, labels, info = load_synthetic_set(gen / "synthetic" / "synthetic.safetensors")
    assert mels.shape[:3] == (8, 1, 128) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert mels.min() >= -80 and mels.max() <= 0 and info["image_size"] == 16


@pytest.mark.slow
def test_the_default_recipe_is_latent_and_one_command_makes_and_uses_it(tmp_path):
    """`python train.py dataset=... aug=ddpm` with no recipe named: the fold's latent generator is
    trained on demand, its pool drawn through the decoder and mixed in; aug=sdedit edits the real
    clips with the same generator instead of training another."""
    for config in ("train", "generate"):
        assert compose_config(config, output_dir=tmp_path).diffusion.name == "cpu_latent"
    base = [*TINY, *TINY_LATENT[1:], "generator.sampling.steps=3", f"paths.cache_dir={tmp_path / 'c'}", "logger=none"]
    ddpm = train(*base, "aug=ddpm", output_dir=tmp_path / "ddpm")["synthetic"]
    assert ddpm["provided"]["generator_trained_here"] and ddpm["n_used"] == ddpm["n_unique"] == 24
    gen = next((tmp_path / "c" / "generators").glob("synthetic-loso-f0-*cpu_latent-s0"))
    meta = json.loads((gen / "generator" / "metadata.json").read_text())
    assert meta["recipe"] == "cpu_latent" and meta["latent"]["autoencoder_training"]["steps_trained"] == 3
    assert not DDPMScheduler.from_pretrained(gen / "generator" / "scheduler").config.clip_sample
    sdedit = train(*base, "aug=sdedit", output_dir=tmp_path / "sdedit")
    assert not sdedit["synthetic"]["provided"]["generator_trained_here"]


@pytest.mark.slow
def test_the_latent_recipe_on_whisper_inputs_feeds_the_encoder_directly(tmp_path):
    """diffusion=cpu_latent_whisper: the latent recipe with Whisper's own input as its image; the
    decoded samples go into the frozen encoder without a vocoder, and the generator records that
    front end beside its autoencoder."""
    from test_encoder import _tiny_whisper

    assert compose_config("train", "diffusion=cpu_latent_whisper", output_dir=tmp_path).diffusion.space == "encoder_input"
    encoder = _tiny_whisper(tmp_path / "whisper")
    tiny = ["diffusion=cpu_latent_whisper", *TINY_LATENT[1:]]
    base = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder", f"paths.cache_dir={tmp_path / 'c'}",
            f"features.encoder.name={encoder}", "model=encoder_linear", "evaluation.n_bootstrap=20", *tiny,
            "generator.sampling.steps=3", "hardware.progress_bar=false", "logger=none"]
    ddpm = train(*base, "aug=ddpm", output_dir=tmp_path / "ddpm")
    assert ddpm["synthetic"]["voiced_and_encoded"]["route"].startswith("generated Whisper inputs")
    assert ddpm["n_training_rows"] == 36 + 24
    gen = next((tmp_path / "c" / "generators").glob("*cpu_latent_whisper*")) / "generator"
    meta = json.loads((gen / "metadata.json").read_text())
    assert meta["recipe"] == "cpu_latent_whisper" and meta["front_end"]["kind"] == "whisper_input_db"
    assert meta["latent"]["autoencoder_training"]["steps_trained"] == 3 and (gen / "vae" / "config.json").is_file()
    # A network on log-mels cannot read Whisper's input: refused with the recipes that fit.
    with pytest.raises(ValueError, match="models Whisper's input"):
        train(*TINY, *tiny, "aug=ddpm", f"paths.cache_dir={tmp_path / 'c'}", output_dir=tmp_path / "mel")
