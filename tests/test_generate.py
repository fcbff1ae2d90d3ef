"""The generate job end to end at toy scale: fold-safe generators, a synthetic set, grids and audio,
quality, SDEdit, and aug=ddpm training on the samples (in-process; the CLI in test_configs.py)."""

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from filelock import FileLock

from conftest import TINY, TINY_RECIPE, generate, sweep, train
from ser.data.splits import assert_generator_fold_safe
from ser.diffusion.synthetic_set import load_synthetic_set
from ser.errors import ConfigError, GeneratorFoldLeak, MissingSyntheticData

pytestmark = pytest.mark.slow

TINY_GEN = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", *TINY_RECIPE, "sample.n_per_emotion=2",
            "sample.steps=5", "listen.n_per_emotion=1", "listen.griffin_lim_iters=4", "hardware.progress_bar=false"]


def test_conditional_generator_for_a_fold(tmp_path, cache_dir):
    generate(*TINY_GEN, f"paths.cache_dir={cache_dir}", f"generator.root={tmp_path / 'gen'}", output_dir=tmp_path / "run")
    meta = json.loads((tmp_path / "gen" / "generator" / "metadata.json").read_text())
    # Fold 0 of LOSO tests on spk00, validates on spk01: the generator saw spk02 and spk03 only.
    assert meta["train_speakers"] == ["synthetic:spk02", "synthetic:spk03"]
    assert (tmp_path / "gen" / "generator" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # The held-out denoising loss (validation speaker spk01, never trained on) after every epoch.
    training = meta["training"]
    assert [r["epoch"] for r in training["curve"]] == [0, 1] and all("val/loss" in r for r in training["curve"])
    assert training["convergence"]["measured"] and training["convergence"]["steps_trained"] == training["curve"][-1]["step"]
    assert (tmp_path / "gen" / "generator" / "convergence.png").stat().st_size > 1000
    assert not (tmp_path / "gen" / "generator.partial").exists()  # the resume checkpoints are gone
    mels, labels, info = load_synthetic_set(tmp_path / "gen" / "synthetic" / "synthetic.safetensors")
    assert mels.shape[:3] == (8, 1, 128) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert mels.min() >= -80 and mels.max() <= 0 and info["sampler"] == "ddim"  # the measured best
    assert_generator_fold_safe(info["train_speakers"], ["synthetic:spk00"])
    with pytest.raises(GeneratorFoldLeak):
        assert_generator_fold_safe(info["train_speakers"], ["synthetic:spk02"])  # a fold that tests on spk02 refuses it
    for emotion in ("neutral", "happy", "sad", "angry"):
        assert (tmp_path / "gen" / "synthetic" / f"grid_{emotion}.png").stat().st_size > 1000
        y, sr = sf.read(tmp_path / "gen" / "synthetic" / f"{emotion}_0.wav")
        frames = mels.shape[-1]
        assert sr == 22050 and abs(len(y) - (frames - 1) * 512) <= 2048
        assert np.sqrt(np.mean(y ** 2)) > 0.01  # not silent


def test_snapshots_of_a_training_are_generators_of_their_own(tmp_path, cache_dir):
    """diffusion.snapshot_every_steps: the generator as it stood every N steps, each one sampled and
    judged like the finished one (sample quality against training steps)."""
    gen = tmp_path / "gen"
    generate(*TINY_GEN, "+diffusion.snapshot_every_steps=2", f"paths.cache_dir={cache_dir}", f"generator.root={gen}",
             "mode=train", output_dir=tmp_path / "run")
    final = json.loads((gen / "generator" / "metadata.json").read_text())
    steps = final["training"]["curve"][-1]["step"]
    made = sorted(int(p.name.split("_")[1]) for p in (gen / "snapshots").iterdir())
    assert made == list(range(2, steps + 1, 2)) and len(made) >= 2
    snap = gen / "snapshots" / f"step_{made[0]}"
    meta = json.loads((snap / "metadata.json").read_text())
    assert meta["train_speakers"] == final["train_speakers"] and meta["training"] == {"snapshot_at_step": made[0]}
    generate(*TINY_GEN, f"paths.cache_dir={cache_dir}", f"generator.root={gen}", f"generator.dir={snap}",
             f"generator.synthetic_dir={snap / 'synthetic'}", "mode=sample", output_dir=tmp_path / "run2")
    early, _, _ = load_synthetic_set(snap / "synthetic" / "synthetic.safetensors")
    generate(*TINY_GEN, f"paths.cache_dir={cache_dir}", f"generator.root={gen}", "mode=sample", output_dir=tmp_path / "run3")
    late, _, _ = load_synthetic_set(gen / "synthetic" / "synthetic.safetensors")
    assert early.shape == late.shape and not np.allclose(early.numpy(), late.numpy())  # other weights, other samples


def test_reference_recipe_trains_one_generator_per_emotion(tmp_path, cache_dir):
    generate(*TINY_GEN, "diffusion=ddpm_seed", "diffusion.unet.layers_per_block=1", f"paths.cache_dir={cache_dir}",
             f"generator.root={tmp_path / 'gen'}", "mode=train", output_dir=tmp_path / "run")
    for emotion in ("neutral", "happy", "sad", "angry"):
        meta = json.loads((tmp_path / "gen" / "generator" / emotion / "metadata.json").read_text())
        assert meta["emotion"] == emotion and meta["num_classes"] == 0
        assert (tmp_path / "gen" / "generator" / emotion / "convergence.png").is_file()
    assert not (tmp_path / "gen" / "generator.partial").exists()
    generate(*TINY_GEN, "diffusion=ddpm_seed", f"paths.cache_dir={cache_dir}", f"generator.root={tmp_path / 'gen'}",
             "mode=sample", "sample.sampler=ddim", output_dir=tmp_path / "run2")
    _, labels, info = load_synthetic_set(tmp_path / "gen" / "synthetic" / "synthetic.safetensors")
    assert len(labels) == 8 and info["sampler"] == "ddim"


def test_aug_ddpm_sweep_is_fold_safe_and_evaluated(tmp_path, cache_dir):
    from ser.jobs.evaluate import evaluate
    from conftest import compose_config

    cache = f"paths.cache_dir={tmp_path / 'c'}"
    sweep([*TINY_GEN, cache, "sample.n_per_emotion=6"], [["split.fold=0", "split.fold=1"]], tmp_path / "gen", job=generate)
    runs = tmp_path / "sweep"
    # The same diffusion settings as the generators (else train.py refuses them: see the test below).
    sweep([*TINY, *TINY_RECIPE, cache, "logger=csv"], [["aug=none", "aug=ddpm"], ["split.fold=0", "split.fold=1"]], runs)
    results = [json.loads(p.read_text()) for p in runs.rglob("results.json")]
    ddpm = [r for r in results if r["arm"]["aug"] == "ddpm"]
    assert len(results) == 4 and len(ddpm) == 2
    for r in ddpm:
        syn = r["synthetic"]
        assert syn["n_used"] == syn["n_unique"] == r["n_train"] and not set(syn["generator_train_speakers"]) & set(r["test_speakers"])
        assert syn["provided"]["generator_trained_here"] is False and syn["provided"]["samples_drawn_here"] == 0

    # Quality of fold 0's synthetic set, measured in the embedding of fold 0's real-data classifier.
    quality_args = [*TINY_GEN, "mode=quality", "split.fold=0", cache]
    with pytest.raises(ConfigError, match="quality.classifier=<train.py run dir>"):
        generate(*quality_args, output_dir=tmp_path / "q")
    real_run = next(Path(r["_dir"]) for r in map(_with_dir, runs.rglob("results.json"))
                    if r["arm"]["aug"] == "none" and r["fold"] == 0)
    generate(*quality_args, f"quality.classifier={real_run}", "logger=wandb", output_dir=tmp_path / "q")
    assert list((tmp_path / "q" / "wandb").glob("offline-run-*"))  # the quality report, logged offline
    syn_dir = next((tmp_path / "c" / "generators").glob("*-f0-*")) / "synthetic"
    quality = json.loads((syn_dir / "quality.json").read_text())
    # Held-out real = speakers neither the generator (spk02, spk03) nor the classifier trained on.
    assert quality["heldout_speakers"] == ["synthetic:spk00", "synthetic:spk01"]
    assert quality["n"] == {"train": 24, "heldout": 24, "synthetic": 24}
    emb = quality["embedding"]
    for name in ("synthetic_vs_train", "heldout_vs_train", "synthetic_vs_heldout"):
        assert np.isfinite(emb["frechet"][name]) and emb["frechet"][name] >= 0 and np.isfinite(emb["kid"][name]["mean"])
    # The image size's ceiling: held-out clips squeezed to the generator's 16x16 and back.
    assert np.isfinite(emb["kid"]["squeezed_vs_train"]["mean"]) and quality["real_classifier_on_squeezed"]["image_size"] == 16
    held = emb["kid"]["heldout_vs_train"]["mean"]  # at this size it can be <= 0: then no ratio (kid_ratios)
    assert emb["kid_ratio"]["squeezed"] == (pytest.approx(emb["kid"]["squeezed_vs_train"]["mean"] / held) if held > 0 else None)
    for group in ("synthetic", "heldout"):
        assert 0 <= emb["precision_recall"][group]["precision"] <= 1 and 0 <= emb["precision_recall"][group]["recall"] <= 1
    assert 0 <= quality["image"]["memorization"]["close_rate"] <= 1
    assert 0 <= quality["real_classifier_on_synthetic"]["ua"] <= 1
    assert (syn_dir / "real_vs_generated.png").stat().st_size > 1000
    # Judging reads a finished set only, so it does not wait while another job holds the fold's lock
    # (a sweep training the generator). In a thread, so that waiting fails the test instead of hanging
    # it; the executor is left last, after the lock is released.
    quality_json = (syn_dir / "quality.json").stat().st_mtime_ns
    with ThreadPoolExecutor(1) as pool, FileLock(str(syn_dir.parent / ".lock")):
        pool.submit(generate, *quality_args, f"quality.classifier={real_run}", "logger=none",
                    output_dir=tmp_path / "q_locked").result(timeout=300)
    assert (syn_dir / "quality.json").stat().st_mtime_ns > quality_json

    # A synthetic-only classifier: trained on 36 draws from the 24 synthetic clips alone (ratio 1.5,
    # repeats allowed), tested on real spk00.
    train(*TINY, *TINY_RECIPE, "aug=ddpm_only", "split.fold=0", "aug.synthetic.ratio=1.5", "aug.synthetic.reuse=true", cache,
          "logger=none", output_dir=tmp_path / "only")
    only = json.loads((tmp_path / "only" / "results.json").read_text())
    assert only["synthetic"]["only"] is True and only["synthetic"]["n_used"] == 36 and only["synthetic"]["n_unique"] == 24
    assert only["test_speakers"] == ["synthetic:spk00"]

    evaluate(compose_config("evaluate", f"runs=[{runs}]"))
    summary = json.loads((runs / "summary" / "summary.json").read_text())
    arm = next(a for a in summary["arms"] if a["arm_spec"]["aug"] == "ddpm")
    assert list(arm["comparisons"]) and next(iter(arm["comparisons"].values()))["n_pairs"] == 2
    figures = summary["figures"]
    assert (runs / "summary" / "learning_curves.png").stat().st_size > 1000
    used = {e["fold"]: e for e in figures["synthetic_sets"]}
    assert set(used) == {0, 1} and used[0]["quality"]["n"]["synthetic"] == 24 and used[1]["quality"] is None
    assert Path(used[0]["grid"]).is_file()
    md = (runs / "summary" / "summary.md").read_text()
    assert "learning_curves.png" in md and "| 1 | 0 | not measured: run generate.py mode=quality" in md
    # Each set names its generator seed (a fold has one generator per seed): seed 0, the runs' default.
    assert used[0]["generator_seed"] == 0 and "| fold | generator seed | KID" in md and "_s0_" in Path(used[0]["grid"]).name

    # A generator trained on fold 0's speakers includes spk02, the test speaker of fold 2: refused.
    generators = sorted((tmp_path / "c" / "generators").iterdir())
    fold0 = next((tmp_path / "c" / "generators").glob("*-f0-*")) / "synthetic" / "synthetic.safetensors"
    with pytest.raises(GeneratorFoldLeak, match="test speaker"):
        train(*TINY, "aug=ddpm", "split.fold=2", f"aug.synthetic.path={fold0}", cache, "logger=none",
              output_dir=tmp_path / "leak")
    # A low-data run may not use a generator that learned from the full training set.
    with pytest.raises(GeneratorFoldLeak, match="dataset.train_fraction=1.0; this run uses 0.5"):
        train(*TINY, "aug=ddpm", "split.fold=0", "dataset.train_fraction=0.5", f"aug.synthetic.path={fold0}", cache,
              "logger=none", output_dir=tmp_path / "frac")
    # Both refused before any generator was trained for them (or a sample added to fold 0's pool).
    assert sorted((tmp_path / "c" / "generators").iterdir()) == generators and len(load_synthetic_set(fold0)[1]) == 24
    # Missing synthetic data, when the run may not make it, names the command that does.
    with pytest.raises(MissingSyntheticData, match="python generate.py dataset=synthetic split=loso split.fold=3"):
        train(*TINY, "aug=ddpm", "split.fold=3", "aug.synthetic.generate=never", cache, "logger=none",
              output_dir=tmp_path / "missing")


@pytest.mark.parametrize("strength", [0.0, 0.6])
def test_enhance_mode(tmp_path, cache_dir, strength):
    from safetensors.torch import load_file

    gen = tmp_path / "gen"
    generate(*TINY_GEN, "mode=train", f"paths.cache_dir={cache_dir}", f"generator.root={gen}", output_dir=tmp_path / "r1")
    generate(*TINY_GEN, "mode=enhance", "enhance.target=sad", f"enhance.strength={strength}", "enhance.n=3",
             "enhance.steps=5", f"paths.cache_dir={cache_dir}", f"generator.root={gen}", output_dir=tmp_path / "r2")
    t = load_file(str(gen / "synthetic" / "enhanced_sad.safetensors"))
    for j in range(3):
        assert t[f"enhanced_{j}"].shape == t[f"original_{j}"].shape
        same = bool((t[f"enhanced_{j}"] == t[f"original_{j}"]).all())
        assert same is (strength == 0.0)
    assert (gen / "synthetic" / "enhanced_sad.png").is_file() and (gen / "synthetic" / "enhanced_sad_0.wav").is_file()


def _with_dir(path):
    r = json.loads(path.read_text())
    r["_dir"] = str(path.parent)
    return r


def test_a_generator_trained_with_other_settings_is_refused(tmp_path, cache_dir, caplog):
    # A fold's generator folder is named by the recipe's name: without the check, diffusion.epochs=3
    # would be handed the 2-epoch generator.
    gen = tmp_path / "gen"
    generate(*TINY_GEN, "mode=train", f"paths.cache_dir={cache_dir}", f"generator.root={gen}", output_dir=tmp_path / "r1")
    meta = json.loads((gen / "generator" / "metadata.json").read_text())
    assert meta["recipe_settings"]["epochs"] == 2 and meta["recipe_settings"]["image_size"] == 16
    assert meta["environment"]["versions"]["diffusers"]
    # train.py, which makes what a fold lacks, refuses it, naming the difference and the fixes.
    with pytest.raises(ConfigError, match=r"diffusion.epochs: 2 there, 3 here.*generator.root=<a new folder>.*"
                                          r"aug.synthetic.generate=never"):
        train(*TINY, *TINY_RECIPE, "aug=ddpm", "diffusion.epochs=3", f"paths.cache_dir={cache_dir}",
              f"generator.root={gen}", output_dir=tmp_path / "r2")
    # When to save snapshots does not change the trained generator: no reason to refuse it.
    train(*TINY, *TINY_RECIPE, "aug=ddpm", "+diffusion.snapshot_every_steps=1", "aug.synthetic.ratio=0.5",
          f"paths.cache_dir={cache_dir}", f"generator.root={gen}", "logger=none", output_dir=tmp_path / "r3")
    assert json.loads((tmp_path / "r3" / "results.json").read_text())["synthetic"]["provided"]["generator_trained_here"] is False
    # generate.py samples the saved network as it is, and says that the settings given differ.
    with caplog.at_level(logging.WARNING, logger="ser.jobs.generate"):
        generate(*TINY_GEN, "mode=sample", "diffusion.lr=0.001", f"paths.cache_dir={cache_dir}", f"generator.root={gen}",
                 output_dir=tmp_path / "r4")
    assert "diffusion.lr: 0.0002 there, 0.001 here" in caplog.text


def test_a_kid_ratio_to_a_held_out_kid_at_or_below_zero_is_undefined():
    from ser.diffusion.assess import kid_ratios

    kid = {"synthetic_vs_train": {"mean": 0.04, "std": 0.01}, "squeezed_vs_train": {"mean": 0.002, "std": 0.001},
           "heldout_vs_train": {"mean": 0.01, "std": 0.02}}
    assert kid_ratios(kid) == {"synthetic": pytest.approx(4.0), "squeezed": pytest.approx(0.2)}
    kid["heldout_vs_train"]["mean"] = -0.00038  # EmoDB fold 3's test speaker: -104x before
    undefined = kid_ratios(kid)
    assert undefined["synthetic"] is None and undefined["squeezed"] is None and "-0.00038" in undefined["undefined"]


def test_evaluate_prints_an_undefined_kid_ratio_as_undefined():
    from ser.evaluation.report import _figures_markdown

    def quality(kid_ratio):
        pr = {"precision": 0.2, "recall": 0.9}
        return {"embedding": {"kid": {"synthetic_vs_train": {"mean": 0.04}, "heldout_vs_train": {"mean": -0.00038}},
                              "precision_recall": {"synthetic": pr, "heldout": pr}, "kid_ratio": kid_ratio},
                "image": {"memorization": {"close_rate": 0.01}},
                "real_classifier_on_synthetic": {"ua": 0.6}, "real_classifier_on_heldout": {"ua": 0.8}}

    sets = [{"fold": f, "generator_seed": 0, "grid": None, "quality": q} for f, q in
            ((0, quality({"synthetic": 2.5, "squeezed": 0.7})), (3, quality({"synthetic": None, "squeezed": None})),
             (5, quality(None)))]
    rows = _figures_markdown({"learning_curves": None, "synthetic_sets": sets}).splitlines()[-3:]
    assert [r.split(" | ")[3] for r in rows] == ["2.5x (0.7x)", "undefined (held-out KID <= 0)", "-"]
