"""Every config group option and experiment preset composes, instantiates and names what it
should; typos fail before any work, naming the valid choices."""

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from conftest import compose_config, run_script
from ser.config import check_targets
from ser.diffusion.provenance import recipe_differences, recipe_settings
from ser.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("group", ["dataset", "model", "model/optimizer", "model/scheduler", "model/classifier", "aug", "split",
                                   "hardware", "trainer", "callbacks", "logger", "diffusion", "features"])
def test_every_group_option_composes_and_names_importable_targets(group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options
    # A classical model's classifier is a group of that model (the default model is a network).
    model = ["model=encoder_linear"] if group == "model/classifier" else []
    for option in options:
        cfg = compose_train(*model, f"{group}={option}", "paths.root_dir=/project")
        check_targets(cfg)  # every _target_ in the composed config imports
        if group == "model/classifier":
            assert instantiate(cfg.model.classifier).__class__.__name__ in {"SVC", "LogisticRegression",
                                                                             "LinearDiscriminantAnalysis"}


def test_optimizer_and_scheduler_configs_build_what_they_name():
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    for option in ("adam", "adamw", "sgd"):
        opt = instantiate(compose_train(f"model/optimizer={option}").model.optimizer)(params=params)
        assert type(opt).__name__.lower() == option
    cfg = compose_train("model/scheduler=onecycle", "model.optimizer.lr=0.01")
    schedule = instantiate(cfg.model.scheduler.schedule)
    assert cfg.model.scheduler.interval == "step" and schedule.keywords == {"max_lr": 0.01, "total_steps": None}
    assert compose_train("model/scheduler=cosine", "model.epochs=7").model.scheduler.schedule.T_max == 7


@pytest.mark.parametrize("name,dataset,model,split,folds", [
    ("emodb_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_lld_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_hybrid_cpu", "emodb", "hybrid_tdnn", "loso", "range(10)"),
    ("emodb_encoder_cpu", "emodb", "encoder_lda", "loso", "range(10)"),
    ("ravdess_encoder_cpu", "ravdess", "encoder_linear", "listed", "range(6)"),
    ("ravdess_cpu", "ravdess", "mel_tdnn", "listed", "range(6)"),
    ("emodb_seed", "emodb", "resnet50", "loso", "range(10)"),
    ("ravdess_seed", "ravdess", "resnet50", "listed", "range(6)"),
    ("combined_seed", "combined", "resnet50", "kfold", "range(6)"),
    ("emodb_study_cpu", "emodb", "mel_tdnn", "loso", "range(10)"),
    ("emodb_study", "emodb", "resnet50", "loso", "range(10)"),
    ("ravdess_study", "ravdess", "resnet50", "listed", "range(6)"),
])
def test_experiment_presets(name, dataset, model, split, folds):
    cfg = compose_train(f"+experiment={name}")
    assert (cfg.dataset.name, cfg.model.name, cfg.split.protocol) == (dataset, model, split)
    assert cfg.hydra.sweeper.params["split.fold"] == folds
    # A model that reads functionals gets them, and only such a model.
    assert bool(cfg.features.get("functionals")) == (model == "hybrid_tdnn")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_presets_set_only_keys_that_exist(preset):
    """A preset's body merges into the config without struct checks, so a renamed key (say
    `aug.synthetic.recipe` after it became the `diffusion` group) would be silently ignored.
    Every key a preset sets must exist in the config its own group choices compose."""
    import yaml

    body = yaml.safe_load((CONF / "experiment" / f"{preset}.yaml").read_text())
    groups = []
    for entry in body.pop("defaults", []):
        (key, value), = entry.items()
        groups.append(f"{key.removeprefix('override /')}={value}")
    body.pop("hydra", None)
    base = compose_train(*groups)

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                yield from leaves(value, path + ".")
            else:
                yield path

    from omegaconf import OmegaConf

    def defined(path):
        # A key exists, or sits under a free-form slot whose default is null (model.search: the grid).
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            value = OmegaConf.select(base, ".".join(parts[:n]), default="<missing>")
            if value != "<missing>":
                return n == len(parts) or value is None
        return False

    missing = [path for path in leaves(body) if not defined(path)]
    assert not missing, f"{preset} sets key(s) that no config defines: {missing}"


def test_reference_recipe_is_the_published_one():
    m = compose_train("model=resnet50").model
    assert m.backbone.arch == "resnet50" and m.backbone.pretrained and m.input.size == [224, 224]
    assert (m.optimizer._target_, m.optimizer.lr, m.epochs, m.batch_size) == ("torch.optim.Adam", 1e-3, 50, 32)
    assert m.scheduler.schedule._target_ == "torch.optim.lr_scheduler.ConstantLR"  # no schedule
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


@pytest.mark.parametrize("recipe,guidance", [("cpu", 2.0), ("ddpm_cond", 2.0), ("cpu_latent", 1.0)])
def test_a_recipe_sets_its_own_sampling_guidance(recipe, guidance, tmp_path):
    """The pool, SDEdit and generate.py's samples use the recipe's measured best guidance; an
    explicit generator.sampling.guidance still wins."""
    for config in ("generate", "train"):
        cfg = compose_config(config, f"diffusion={recipe}", output_dir=tmp_path)
        assert cfg.generator.sampling.guidance == guidance
    cfg = compose_config("generate", f"diffusion={recipe}", "generator.sampling.guidance=3.0", output_dir=tmp_path)
    assert cfg.sample.guidance == 3.0
    # A sampling default is not a training setting: changing it keeps the fold's trained generator.
    saved = {"recipe_settings": recipe_settings(compose_config("train", f"diffusion={recipe}", output_dir=tmp_path).diffusion)}
    other = compose_config("train", f"diffusion={recipe}", "++diffusion.guidance=1.5", output_dir=tmp_path).diffusion
    assert recipe_differences(saved, other) == ""
    retrained = compose_config("train", f"diffusion={recipe}", "diffusion.lr=0.001", output_dir=tmp_path).diffusion
    assert recipe_differences(saved, retrained).startswith("diffusion.lr: ")


def test_the_generator_location_is_defined_once_and_shared(tmp_path):
    over = ["dataset=emodb", "split.fold=3", "diffusion=ddpm_cond", "dataset.train_fraction=0.25"]
    made = compose_config("generate", *over, "seed=2", output_dir=tmp_path)
    read = compose_config("train", *over, "aug=ddpm", "generator.seed=2", output_dir=tmp_path)
    assert made.generator.synthetic_dir == str(Path(read.aug.synthetic.path).parent)
    assert made.generator.dir.endswith("generators/emodb-loso-f3-p0.25-ddpm_cond-s2/generator")


TYPOS = [  # (config, override, what the error must say)
    ("train", "model.select=bets", "model.select='bets' is not a valid choice; choose one of: best, last"),
    ("train", "model.scheduler=cosin", "model/scheduler=<constant|cosine|onecycle>"),
    ("train", "model.optimizer=adamw", "model/optimizer=<adam|adamw|sgd>"),
    ("train", "model.class_weights=balancd", "choose one of: balanced, none"),
    ("train", "model.input.pad=zeros", "choose one of: zero, repeat"),
    ("train", "model.input.normalization=speakers", "choose one of: global, speaker, none"),
    ("train", "model.scheduler.interval=batch", "choose one of: step, epoch"),
    ("train", "model.optimizer._target_=torch.optim.Adamm", "model.optimizer._target_='torch.optim.Adamm' cannot be imported"),
    ("train", "split.protocol=los", "choose one of: loso, kfold, listed, random"),
    ("train", "features.kind=wav2vec", "choose one of: mel, smile_lld"),
    ("train", "dataset.kind=emodbb", "choose one of: emodb, ravdess"),
    ("train", "model.kind=deep", "choose one of: neural, classical"),
    ("train", "model=egemaps_svm model.copies_norm=owns", "model.copies_norm='owns' is not a valid choice; choose one of: source, own"),
    ("train", "callbacks.best_checkpoint._target_=ModelCheckpoint", "callbacks.best_checkpoint._target_='ModelCheckpoint' cannot"),
    ("generate", "mode=trian", "mode='trian' is not a valid choice; choose one of: train, sample, train_sample, enhance, quality"),
    ("generate", "sample.sampler=ddmi", "choose one of: ddpm, ddim, dpmsolver++"),
    ("generate", "diffusion.lr_schedule=cosin", "choose one of: constant, linear, cosine"),
    ("train", "aug=ddpm diffusion.lr_schedule=cosin", "choose one of: constant, linear, cosine"),
    ("generate", "+diffusion.unet.dropuot=0.1", "diffusion.unet.dropuot is not a setting of the recipe's unet; the settings: "),
    ("train", "aug=sdedit diffusion=cpu_latent +diffusion.autoencoder.kl_wieght=0", "diffusion.autoencoder.kl_wieght is not"),
    ("evaluate", "metric=uaa", "choose one of: ua, wa, macro_f1"),
]


IMPOSSIBLE_NUMBERS = [  # (config, override, what the error must say): each once ran silently or failed late
    ("train", "aug=ddpm aug.synthetic.ratio=-1", "aug.synthetic.ratio=-1 is not a valid value: it must be a number >= 0"),
    ("train", "aug=audio aug.audio.variants=-2", "aug.audio.variants=-2 is not a valid value: it must be an integer >= 0"),
    ("train", "aug=audio aug.audio.variants=1.5", "aug.audio.variants=1.5 is not a valid value: it must be an integer >= 0"),
    ("train", "aug=sdedit aug.sdedit.variants=-1", "aug.sdedit.variants=-1 is not"),
    ("train", "aug=specaug aug.mixup_alpha=-1", "aug.mixup_alpha=-1 is not a valid value: it must be a number >= 0"),
    ("train", "dataset.train_fraction=1.5", "dataset.train_fraction=1.5 is not a valid value: it must be a number in (0, 1]"),
    ("train", "dataset.train_fraction=0", "it must be a number in (0, 1]"),
    ("train", "split.n_val_speakers=-1", "split.n_val_speakers=-1 is not a valid value: it must be an integer >= 0"),
    ("train", "model.epochs=0", "model.epochs=0 is not a valid value: it must be an integer >= 1"),
    ("train", "model.batch_size=0", "model.batch_size=0 is not"),
    ("train", "seed=-3", "seed=-3 is not a valid value: it must be an integer >= 0"),
    ("train", "aug=ddpm generator.sampling.steps=0", "generator.sampling.steps=0 is not"),
    ("train", "aug=ddpm diffusion.p_uncond=1.0", "diffusion.p_uncond=1.0 is not a valid value: it must be a number in [0, 1)"),
    ("train", "aug=ddpm diffusion.max_steps=0", "it must be an integer >= 1, or -1 (epochs decide)"),
    ("generate", "sample.n_per_emotion=0", "sample.n_per_emotion=0 is not a valid value: it must be an integer >= 1"),
    ("generate", "sample.guidance=-1", "sample.guidance=-1 is not a valid value: it must be a number >= 0"),
    ("generate", "sample.frames=0", "sample.frames=0 is not a valid value: it must be an integer >= 1, or null"),
    ("generate", "enhance.strength=1.2", "enhance.strength=1.2 is not a valid value: it must be a number in [0, 1]"),
    ("generate", "quality.knn_k=0", "quality.knn_k=0 is not"),
    ("generate", "quality.memorization_quantile=1", "it must be a number in (0, 1)"),
    ("generate", "diffusion.lr=0", "diffusion.lr=0 is not a valid value: it must be a number > 0"),
    ("train", "features=encoder model=encoder_lda features.encoder.trim_db=0",
     "features.encoder.trim_db=0 is not a valid value: it must be a number > 0, or null"),
    ("train", "aug=ddpm_filtered aug.synthetic.filter=1", "aug.synthetic.filter=1 is not"),
]


@pytest.mark.parametrize("config,override,message", TYPOS + IMPOSSIBLE_NUMBERS)
def test_a_typo_fails_before_any_work_naming_the_valid_choices(config, override, message, tmp_path, monkeypatch):
    import ser.jobs.evaluate
    import ser.jobs.generate
    import ser.jobs.train

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the config was checked")

    for module in (ser.jobs.train, ser.jobs.generate):
        monkeypatch.setattr(module, "prepare", no_work)
    monkeypatch.setattr(ser.jobs.evaluate, "aggregate", no_work)
    job = {"train": ser.jobs.train.run_experiment, "generate": ser.jobs.generate.run_generate,
           "evaluate": ser.jobs.evaluate.evaluate}[config]
    overrides = override.split()  # one option, or a choice and the option it brings in
    cfg = compose_config(config, *overrides, output_dir=tmp_path) if config != "evaluate" else compose_config(config, *overrides)
    with pytest.raises(ConfigError) as err:
        job(cfg)
    assert message in str(err.value)


def test_numbers_at_the_edge_of_their_range_pass(tmp_path):
    # 0 synthetic clips or copies is the real-only point of a ratio or variants sweep, not an error.
    from ser.config import check_generate_config, check_train_config

    for overrides in (["aug=ddpm", "aug.synthetic.ratio=0"], ["aug=audio", "aug.audio.variants=0"],
                      ["dataset.train_fraction=1"], ["aug=sdedit", "aug.sdedit.strength=0"], ["split.n_val_speakers=0", "model.select=last"]):
        check_train_config(compose_config("train", *overrides, output_dir=tmp_path))
    check_generate_config(compose_config("generate", "sample.frames=null", "enhance.strength=1", "diffusion=cpu", output_dir=tmp_path))


def test_combinations_that_cannot_work_are_refused_before_any_work(tmp_path, monkeypatch):
    import ser.jobs.train

    monkeypatch.setattr(ser.jobs.train, "prepare", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work started")))
    for overrides, message in [
        (["model.select=best", "split.n_val_speakers=0"], "split.n_val_speakers=0 leaves none"),
        (["model=egemaps_svm", "model.view_weights=balance"], "choose one of: null, balanced"),
        (["aug=ddpm", "model=egemaps_svm"], "is neither"),
        (["model=hybrid_tdnn"], "reads per-clip openSMILE functionals"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ser.jobs.train.run_experiment(compose_config("train", *overrides, output_dir=tmp_path))


@pytest.mark.slow
def test_the_cli_exits_non_zero_within_seconds_naming_the_choices(tmp_path):
    started = time.time()
    with pytest.raises(AssertionError) as err:
        run_script("generate.py", "mode=trian", f"hydra.run.dir={tmp_path}")
    assert "choose one of: train, sample, train_sample, enhance, quality" in str(err.value)
    assert time.time() - started < 60  # interpreter and torch start-up; no data is touched
    assert not list(tmp_path.rglob("*.safetensors"))


def test_hardware_cluster_without_the_launcher_names_the_install_command(monkeypatch):
    import ser.experiment

    monkeypatch.setattr(ser.experiment, "_importable", lambda module: False)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[cluster\]'"):
        ser.experiment.require_cluster_launcher(["hardware=cluster", "split.fold=0"])
    ser.experiment.require_cluster_launcher(["hardware=gpu"])  # nothing to check
    monkeypatch.setattr(ser.experiment, "_importable", lambda module: True)
    ser.experiment.require_cluster_launcher(["hardware=cluster"])


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


@pytest.mark.parametrize("preset,dataset,folds", [("emodb_aug_study", "emodb", 10), ("ravdess_aug_study", "ravdess", 6)])
def test_the_augmentation_study_grids_compose_arm_by_arm(preset, dataset, folds):
    """Every arm of each study's grid composes, its generative arms model Whisper's input (the
    route issue 11 item 8 measured better), and a fold's generator is named by fraction and seed."""
    from ser.diffusion.mixing import wants_edits, wants_synthetic

    grid = compose_train(f"+experiment={preset}").hydra.sweeper.params
    assert grid["split.fold"] == f"range({folds})" and grid["dataset.train_fraction"] == "1.0,0.25"
    for aug in grid["aug"].split(","):
        cfg = compose_train(f"+experiment={preset}", f"aug={aug}", "dataset.train_fraction=0.25", "seed=1",
                            "paths.root_dir=/project")
        assert (cfg.dataset.name, cfg.features.kind, cfg.diffusion.name) == (dataset, "encoder", "cpu_whisper")
        generative = wants_synthetic(cfg.aug) or wants_edits(cfg.aug)
        assert generative == (aug in ("ddpm", "ddpm_filtered", "sdedit"))
        assert cfg.generator.root.endswith(f"{dataset}-{cfg.split.protocol}-f0-p0.25-cpu_whisper-s1")


def test_an_override_that_restates_the_config_does_not_make_a_new_arm(tmp_path):
    """A sweep over dataset.train_fraction=1.0,0.25 names the default at full data; those runs must
    pair with runs that never named it (evaluate.py pairs arms by their recorded overrides). The same
    holds for a value a preset sets (emodb_encoder_cpu sets model.layers=all)."""
    from conftest import _compose_as_app, _hydra_app
    from ser.experiment import arm_of

    def arm(*overrides):
        with _hydra_app():
            cfg = _compose_as_app("train", *overrides, "split.fold=1", "seed=2", output_dir=tmp_path)
            return arm_of(cfg)

    plain = arm("aug=none")
    assert arm("aug=none", "dataset.train_fraction=1.0") == plain == {"aug": "none", "dataset": "synthetic",
                                                                       "model": "mel_tdnn", "split": "loso"}
    assert arm("aug=none", "dataset.train_fraction=0.25") == {**plain, "dataset.train_fraction": "0.25"}
    preset = arm("+experiment=emodb_encoder_cpu")
    assert arm("+experiment=emodb_encoder_cpu", "model.layers=all") == preset
    assert arm("+experiment=emodb_encoder_cpu", "model.layers=each") == {**preset, "model.layers": "each"}
    assert arm("aug=ddpm", "+aug.extra_option=1")["aug.extra_option"] == "1"  # a new key is always a change
