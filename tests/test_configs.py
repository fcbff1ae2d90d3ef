"""Every config group option and experiment preset composes and names what it should."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("group", ["dataset", "model", "aug", "split", "hardware", "logger"])
def test_every_group_option_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose_train(f"{group}={option}")
        assert cfg[group] is not None


@pytest.mark.parametrize("name,dataset,model,split,folds", [
    ("emodb_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_lld_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_hybrid_cpu", "emodb", "hybrid_tdnn", "loso", "range(10)"),
    ("ravdess_cpu", "ravdess", "spectro_cnn", "kfold", "range(6)"),
    ("emodb_seed", "emodb", "resnet50", "loso", "range(10)"),
    ("ravdess_seed", "ravdess", "resnet50", "kfold", "range(6)"),
    ("combined_seed", "combined", "resnet50", "kfold", "range(6)"),
    ("emodb_study_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_study", "emodb", "resnet50", "loso", "range(10)"),
    ("ravdess_study", "ravdess", "resnet50", "kfold", "range(6)"),
])
def test_experiment_presets(name, dataset, model, split, folds):
    cfg = compose_train(f"+experiment={name}")
    assert (cfg.dataset.name, cfg.model.name, cfg.split.protocol) == (dataset, model, split)
    assert cfg.hydra.sweeper.params["split.fold"] == folds
    # A model that reads functionals gets them, and only such a model.
    assert bool(cfg.features.get("functionals")) == (model == "hybrid_tdnn")


def test_reference_recipe_is_the_published_one():
    m = compose_train("model=resnet50").model
    assert m.backbone.arch == "resnet50" and m.backbone.pretrained and m.input.size == [224, 224]
    assert (m.optimizer, m.lr, m.epochs, m.batch_size) == ("adam", 1e-3, 50, 32)
    f = compose_train().features
    assert (f.sr, f.n_fft, f.hop_length, f.n_mels) == (22050, 2048, 512, 128)


def test_default_is_synthetic_on_cpu():
    cfg = compose_train()
    assert cfg.dataset.kind == "synthetic" and cfg.hardware.accelerator == "cpu"
    assert cfg.model.name == "mel_tdnn"


@pytest.mark.parametrize("recipe", ["cpu", "ddpm_seed", "ddpm_cond"])
def test_generate_config_composes(recipe):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("generate", overrides=[f"diffusion={recipe}"])
    assert cfg.diffusion.num_train_timesteps == 1000 and cfg.sample.sampler in ("ddpm", "ddim", "dpmsolver++")
    if recipe == "ddpm_seed":
        d = cfg.diffusion
        assert (d.per_emotion, d.image_size, d.batch_size, d.epochs) == (True, 128, 16, 10)
    if recipe == "ddpm_cond":  # the improved default: conditional, CFG, EMA, trained to convergence
        d = cfg.diffusion
        assert not d.per_emotion and d.image_size == 128 and d.p_uncond > 0 and d.ema_decay > 0
        assert d.early_stopping.patience > 0 and d.max_steps > 10 * 30


@pytest.mark.parametrize(("aug", "only"), [("ddpm", False), ("ddpm_only", True)])
def test_synthetic_only_arm(aug, only):
    cfg = compose_train(f"aug={aug}")
    assert cfg.aug.synthetic.only is only and cfg.aug.name == aug


@pytest.mark.parametrize("aug,expected", [("none", False), ("specaug", False), ("ddpm", True), ("ddpm_specaug", True)])
def test_only_ddpm_arms_mix_synthetic_data_in_study_presets(aug, expected):
    from ser.diffusion.mixing import wants_synthetic

    cfg = compose_train("+experiment=emodb_study", f"aug={aug}", "paths.root_dir=/project")
    assert wants_synthetic(cfg.aug) is expected
    if expected:
        assert cfg.aug.synthetic.path.startswith("/project/.cache/ser/generators/emodb-loso-f0-p1.0-ddpm_seed-s0/")
        assert cfg.aug.synthetic.ratio == 1.0
