"""The diffusion building blocks on a tiny UNet: mapping, training, samplers, enhance, sharing, fold safety."""

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ser.data.splits import assert_generator_fold_safe
from ser.diffusion.ddpm import SpectrogramDDPM
from ser.diffusion.generator import SpectrogramGenerator
from ser.diffusion.image_space import db_to_model, from_image, model_to_db, to_image
from ser.errors import ConfigError, GeneratorFoldLeak, NotFound

TINY_UNET = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


def test_db_model_space_round_trip():
    db = torch.linspace(-80, 0, 161).reshape(1, 1, 161)
    x = db_to_model(db)
    assert x.min() == -1 and x.max() == 1
    assert torch.allclose(model_to_db(x), db, atol=1e-4)
    assert db_to_model(torch.tensor([-200.0, 5.0])).tolist() == [-1.0, 1.0]  # outside the range: clamped
    mel = torch.sin(torch.linspace(0, 6, 87)).expand(128, 87).unsqueeze(0) * 30 - 40  # smooth in time
    img = to_image(mel, 128)
    assert img.shape == (1, 128, 128)
    back = from_image(img, 128, 87)
    assert back.shape == mel.shape and (back - mel).abs().max() < 1.0  # dB


def test_squeezing_to_a_small_image_loses_the_harmonics():
    """mode=quality's ceiling: what a generator of a given image size cannot represent."""
    from ser.diffusion.assess import squeeze

    smooth = torch.linspace(-60, -10, 128)[:, None].expand(128, 87).unsqueeze(0).clone()
    assert (squeeze(smooth, 32) - smooth).abs().max() < 1.0 and squeeze(smooth, 32).shape == smooth.shape
    harmonics = smooth.clone()
    harmonics[:, ::4] -= 30  # a comb across the mel bands, 4 bands apart
    loss_32 = (squeeze(harmonics, 32) - harmonics).abs().mean()
    loss_128 = (squeeze(harmonics, 128) - harmonics).abs().mean()
    assert loss_32 > 5 and loss_128 < 0.5 * loss_32


@pytest.fixture(scope="module")
def trained():
    pl.seed_everything(0)
    # Two "emotions": bright top half vs bright bottom half.
    x = -torch.ones(32, 1, 16, 16)
    x[:16, :, :8] = 1
    x[16:, :, 8:] = 1
    y = torch.tensor([0] * 16 + [1] * 16)
    model = SpectrogramDDPM(TINY_UNET, num_classes=2, num_train_timesteps=100, lr=2e-3, ema_decay=0.9)
    trainer = pl.Trainer(max_epochs=15, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    losses = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            losses.append(float(trainer.callback_metrics["train/loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True))
    return model.to_generator({"emotions": ["a", "b"], "train_speakers": ["s:01", "s:02"]}), losses, model


def test_lightning_trains_the_unet(trained):
    _, losses, _ = trained
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 10), ("dpmsolver++", 10)])
def test_each_sampler(trained, sampler, steps):
    model, _, _ = trained
    a = model.sample(3, label=1, sampler=sampler, steps=steps, seed=1)
    b = model.sample(3, label=1, sampler=sampler, steps=steps, seed=1)
    assert a.shape == (3, 1, 16, 16) and torch.isfinite(a).all() and a.abs().max() <= 1
    assert torch.equal(a, b)  # the seed fixes the samples
    guided = model.sample(3, label=1, sampler=sampler, steps=steps, seed=1, guidance=3.0)
    assert not torch.equal(guided, a)


def test_guidance_in_one_batch_is_the_two_pass_formula(trained):
    """The conditional and "no emotion" passes go through the UNet as one batch; the result must be
    the classifier-free guidance formula computed with two separate passes."""
    model, _, _ = trained
    assert model.inference_precision == "32-true"  # bf16 only on a GPU
    x, t, labels = torch.randn(3, 1, 16, 16), torch.tensor(500), torch.tensor([0, 1, 1])
    with torch.no_grad():
        cond = model.unet(x, t, class_labels=labels).sample
        uncond = model.unet(x, t, class_labels=torch.full_like(labels, 2)).sample
        batched = model._eps(x, t, labels, guidance=2.5)
        assert torch.allclose(batched, uncond + 2.5 * (cond - uncond), atol=1e-5)
        assert torch.allclose(model._eps(x, t, labels, guidance=1.0), cond, atol=1e-6)


def test_enhance(trained):
    model, _, _ = trained
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(model.enhance(x0, label=0, strength=0.0), x0)
    moved = model.enhance(x0, label=0, strength=0.6, steps=10)
    assert moved.shape == x0.shape and not torch.allclose(moved, x0)
    with pytest.raises(ConfigError, match="strength"):
        model.enhance(x0, label=0, strength=1.5)
    with pytest.raises(ConfigError, match="choose one of: ddpm, ddim, dpmsolver"):
        model.sample(1, label=0, sampler="ddmi", steps=5)


def test_save_and_load_without_pickle(trained, tmp_path):
    generator, _, module = trained
    with pytest.raises(ConfigError, match="train_speakers"):
        module.to_generator({"emotions": ["a", "b"]})  # fold safety needs the exact training speakers
    out = generator.save_pretrained(tmp_path / "g")
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*")) and not list(tmp_path.glob(".*"))
    loaded = SpectrogramGenerator.from_pretrained(out)
    assert loaded.metadata["train_speakers"] == ["s:01", "s:02"]
    assert json.loads((out / "metadata.json").read_text())["num_classes"] == 2
    expected = generator.sample(2, label=0, sampler="ddim", steps=5, seed=3)
    assert torch.allclose(loaded.sample(2, label=0, sampler="ddim", steps=5, seed=3), expected, atol=1e-5)
    # The saved weights are the EMA weights, not the last training step's.
    ema = dict(generator.unet.named_parameters())
    live = dict(module.unet.named_parameters())
    assert any(not torch.allclose(ema[k], live[k]) for k in ema)
    with pytest.raises(NotFound, match="no generator"):
        SpectrogramGenerator.from_pretrained(tmp_path / "nothing")


def test_fold_safety():
    trained_on = ["emodb:03", "emodb:08"]
    assert_generator_fold_safe(trained_on, ["emodb:09"])
    with pytest.raises(GeneratorFoldLeak, match="emodb:08"):
        assert_generator_fold_safe(trained_on, ["emodb:08"])


def test_convergence_summary_reads_the_held_out_curve():
    from ser.diffusion.training import convergence

    falling_then_flat = [{"epoch": e, "step": 10 * (e + 1), "val/loss": v}
                         for e, v in enumerate([1.0, 0.5, 0.3, 0.21, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])]
    c = convergence(falling_then_flat)
    assert c["steps_to_within_5pct_of_best"] == 40 and c["steps_trained"] == 100 and not c["still_improving"]
    still_falling = [{"epoch": e, "step": e + 1, "val/loss": 1.0 / (e + 1)} for e in range(10)]
    assert convergence(still_falling)["still_improving"]
    assert convergence([{"epoch": 0, "step": 5, "train/loss": 1.0}])["measured"] is False


def _tiny_recipe(epochs: int, **settings):
    from omegaconf import OmegaConf

    return OmegaConf.create({**settings, "unet": dict(TINY_UNET, block_out_channels=[16, 32],
                                          down_block_types=["DownBlock2D", "DownBlock2D"],
                                          up_block_types=["UpBlock2D", "UpBlock2D"]),
                             "num_train_timesteps": 50, "beta_schedule": "linear", "lr": 1e-3, "p_uncond": 0.1,
                             "ema_decay": 0.9, "batch_size": 8, "epochs": epochs, "max_steps": -1, "early_stopping": None})


class _Kill(pl.Callback):  # the process dies as epoch 2 begins
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 2:
            raise RuntimeError("killed")


def _fit_tiny(recipe, images, labels, checkpoint_dir, seed=0, callbacks=()):
    """fit_generator on CPU for the recipe's epochs, checkpointed (resumable) in `checkpoint_dir`."""
    from omegaconf import OmegaConf

    from ser.diffusion.training import fit_generator

    trainer = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "max_epochs": recipe.epochs, "max_steps": -1,
                                "logger": False, "enable_checkpointing": False, "enable_model_summary": False,
                                "num_sanity_val_steps": 0})
    hardware = OmegaConf.create({"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1,
                                 "precision": "32-true", "sync_batchnorm": False, "progress_bar": False})
    pl.seed_everything(seed)
    return fit_generator(recipe, trainer, hardware, images, labels, 2, checkpoint_dir=checkpoint_dir,
                         extra_callbacks=callbacks)


def test_an_interrupted_generator_training_resumes(tmp_path):
    """A generator training killed mid-way continues from its last finished epoch (weights, EMA,
    loop position, loss curve); a checkpoint of other training clips is discarded, not continued."""
    x, y = torch.rand(16, 1, 16, 16) * 2 - 1, torch.tensor([0, 1] * 8)

    def fit(epochs, where, images=x, seed=0, callbacks=()):
        return _fit_tiny(_tiny_recipe(epochs), images, y, tmp_path / where, seed, callbacks)

    _, reference = fit(2, "reference")  # epochs 0-1, never interrupted
    with pytest.raises(RuntimeError, match="killed"):
        fit(4, "run", callbacks=(_Kill(),))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.ckpt", "problem.json"]
    torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)  # plain tensors and numbers only
    resumed, training = fit(4, "run", seed=1)  # a restart would redo epochs 0-1 with other noise and batches
    assert [r["epoch"] for r in training["curve"]] == [0, 1, 2, 3]
    assert training["curve"][:2] == reference["curve"]  # epochs 0-1 were not run again
    assert [r["step"] for r in training["curve"]] == [2, 4, 6, 8]
    assert resumed.ema.optimization_step == 8  # the EMA continued too

    other, other_training = fit(1, "run", images=torch.rand(16, 1, 16, 16))  # other clips: starts afresh
    assert [r["step"] for r in other_training["curve"]] == [2] and other.ema.optimization_step == 2


def test_a_decaying_learning_rate_spans_the_budget_and_survives_a_resume(tmp_path):
    """diffusion.lr_schedule=cosine: lr at the first step, 0 after the last, the same curve when the
    training was killed and resumed; `constant` holds it. A typo names the choices."""
    from ser.diffusion.training import _training_problem

    x, y = torch.rand(16, 1, 16, 16) * 2 - 1, torch.tensor([0, 1] * 8)

    class Rates(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    def rates(schedule, where, kill=False):
        seen = Rates()
        _fit_tiny(_tiny_recipe(4, lr_schedule=schedule), x, y, tmp_path / where,
                  callbacks=(seen, _Kill()) if kill else (seen,))
        return seen.seen

    cosine = rates("cosine", "cosine")  # 4 epochs x 2 batches
    assert cosine == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    assert rates("constant", "constant") == pytest.approx([1e-3] * 8)
    with pytest.raises(RuntimeError, match="killed"):
        rates("cosine", "resumed", kill=True)
    assert rates("cosine", "resumed") == pytest.approx(cosine[4:])  # epochs 2-3, on the same curve
    with pytest.raises(ConfigError, match="diffusion.lr_schedule='cosin'.*constant, linear, cosine"):
        SpectrogramDDPM(TINY_UNET, lr_schedule="cosin")
    # `constant` is what every generator before the option trained with: their resume stamps stay valid.
    before = _training_problem(_tiny_recipe(4), x, y, 2)
    assert _training_problem(_tiny_recipe(4, lr_schedule="constant"), x, y, 2) == before
    assert _training_problem(_tiny_recipe(4, lr_schedule="cosine"), x, y, 2) != before


def test_only_rank_zero_clears_a_stale_resume_checkpoint(tmp_path, monkeypatch):
    """Under DDP every rank runs the training code; the others must not delete the folder rank 0
    decided to keep (or is writing into)."""
    from pytorch_lightning.utilities import rank_zero_only

    from ser.diffusion.training import resumable_checkpoint

    folder = tmp_path / "conditional"
    folder.mkdir()
    (folder / "problem.json").write_text(json.dumps({"recipe": "old"}))
    (folder / "last.ckpt").write_bytes(b"state")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert resumable_checkpoint(folder, {"recipe": "old"}) == folder / "last.ckpt"
    assert resumable_checkpoint(folder, {"recipe": "new"}) is None
    assert (folder / "last.ckpt").read_bytes() == b"state"  # left for rank 0 to judge
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert resumable_checkpoint(folder, {"recipe": "new"}) is None
    assert not (folder / "last.ckpt").exists() and json.loads((folder / "problem.json").read_text()) == {"recipe": "new"}


def test_min_snr_weights_cap_the_easy_timesteps():
    """snr_gamma: weight min(SNR, gamma) / SNR per timestep (1 where the noise dominates, below 1
    where the image barely changed); without it every timestep weighs 1."""
    plain = SpectrogramDDPM(TINY_UNET, num_classes=2, num_train_timesteps=100)
    weighted = SpectrogramDDPM(TINY_UNET, num_classes=2, num_train_timesteps=100, snr_gamma=5.0)
    t = torch.tensor([0, 10, 50, 99])
    assert torch.equal(plain.loss_weights(t), torch.ones(4))
    a = weighted.scheduler.alphas_cumprod[t]
    snr = a / (1 - a)
    expected = torch.where(snr > 5, 5 / snr, torch.ones(4))
    w = weighted.loss_weights(t)
    assert torch.allclose(w, expected, rtol=1e-4) and w[0] < 0.1 and w[-1] == 1
    x, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1])
    assert torch.isfinite(weighted.training_step((x, y), 0))
