"""Augmentation arms at toy scale: aug=ddpm making its own generator and pool on demand (one
generator for concurrent jobs of a fold), unique-sample pools, the filter."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, TINY_RECIPE, train
from ser.diffusion.mixing import counts_needed, draw
from ser.diffusion.selection import BandJudge, passes
from ser.errors import ConfigError, DataError, GeneratorFoldLeak

# A generator small enough to train in seconds, sampled in 3 DDIM steps.
TINY_DIFFUSION = [*TINY_RECIPE, "generator.sampling.steps=3"]


def test_counts_follow_the_real_classes_or_are_balanced():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 4)
    assert counts_needed(labels, 3, 1.0, "real") == {0: 6, 1: 2, 2: 4}
    assert counts_needed(labels, 3, 0.5, "real") == {0: 3, 1: 1, 2: 2}
    assert counts_needed(labels, 3, 1.0, "balanced") == {0: 4, 1: 4, 2: 4}
    with pytest.raises(ValueError, match="aug.synthetic.classes='equal'.*real, balanced"):
        counts_needed(labels, 3, 1.0, "equal")


def test_draws_are_unique_unless_reuse_is_asked_for():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    usable = np.array([True, True, False, True, True, True, True])
    picks = draw(labels, usable, {0: 2, 1: 3}, reuse=False, seed=0)
    assert len(picks) == len(set(picks)) == 5 and 2 not in picks  # the filtered-out sample is never drawn
    assert sorted(labels[picks]) == [0, 0, 1, 1, 1]
    assert np.array_equal(picks, draw(labels, usable, {0: 2, 1: 3}, reuse=False, seed=0))  # the run's seed fixes the draw
    # A pool grown since (another run needed more, or a filter passed few) gives the same set: its
    # first samples, so rerunning a run reproduces it whatever ran in between.
    grown_labels, grown_usable = np.concatenate([labels, [1, 0, 0, 1]]), np.concatenate([usable, [True] * 4])
    for seed in (0, 1, 2):
        assert np.array_equal(np.sort(draw(grown_labels, grown_usable, {0: 2, 1: 3}, reuse=False, seed=seed)), np.sort(picks))
    with pytest.raises(DataError, match="2 usable samples of class 0, and this run needs 3"):
        draw(labels, usable, {0: 3, 1: 1}, reuse=False, seed=0)
    again = draw(labels, usable, {0: 3, 1: 1}, reuse=True, seed=0)
    zeros = again[labels[again] == 0]
    assert len(again) == 4 and len(zeros) == 3 and set(zeros[:2]) == {0, 1}  # both usable ones, then a repeat
    fewer = draw(labels, usable, {0: 3, 1: 1}, reuse=False, seed=0, fewer=True)  # a filter's capped pool
    assert sorted(labels[fewer]) == [0, 0, 1] and len(set(fewer)) == 3 and 2 not in fewer


def test_the_judge_keeps_samples_that_sound_like_their_emotion():
    rng = np.random.default_rng(0)

    def clips(k, n, shift=0.0):  # emotion k: energy in band block k (8 bands of 32), plus noise
        x = rng.normal(-40, 3, size=(n, 1, 32, 20))
        x[:, :, 8 * k: 8 * k + 8] += 20 + shift
        return [torch.tensor(m, dtype=torch.float32) for m in x]

    real = [m for k in range(3) for m in clips(k, 12)]
    labels = np.repeat(np.arange(3), 12)
    speakers = (["a"] * 6 + ["b"] * 6) * 3
    judge = BandJudge(real, labels, speakers, 3)
    good = torch.stack([m for k in range(3) for m in clips(k, 5)])
    wrong = torch.stack([m for k in (1, 2, 0) for m in clips(k, 5)])  # labelled k, sounding like k+1
    pool = torch.cat([good, wrong])
    pool_labels = np.concatenate([np.repeat(np.arange(3), 5)] * 2)
    kept = passes(judge.probabilities(pool), pool_labels, 0.5)
    assert kept[:15].all() and not kept[15:].any()
    with pytest.raises(ValueError, match="aug.synthetic.filter=1.5"):
        passes(judge.probabilities(pool), pool_labels, 1.5)


@pytest.mark.slow
def test_aug_ddpm_makes_grows_and_filters_its_pool_on_demand(tmp_path):
    cache = f"paths.cache_dir={tmp_path / 'c'}"
    base = [*TINY, *TINY_DIFFUSION, cache, "logger=none", "aug=ddpm"]
    first = train(*base, output_dir=tmp_path / "r1")["synthetic"]
    assert first["provided"]["generator_trained_here"] and first["provided"]["generator_train_time_s"] > 0
    # Fold 0 trains on spk02 and spk03: 24 clips, 6 per emotion; the pool is exactly that, each used once.
    assert first["n_used"] == first["n_unique"] == first["n_available"] == 24
    assert first["n_per_emotion"] == {"neutral": 6, "happy": 6, "sad": 6, "angry": 6} and first["sampler"] == "ddim"
    gen_root = next((tmp_path / "c" / "generators").glob("synthetic-loso-f0-*-s0"))
    assert (gen_root / "generator" / "metadata.json").is_file()

    twice = train(*base, "aug.synthetic.ratio=2", output_dir=tmp_path / "r2")["synthetic"]
    assert not twice["provided"]["generator_trained_here"]  # the fold's generator, reused
    assert twice["provided"]["samples_drawn_here"] == 24 and twice["n_available"] == 48
    assert twice["n_used"] == twice["n_unique"] == 48

    balanced = train(*base, "aug.synthetic.classes=balanced", "aug.synthetic.ratio=0.5", output_dir=tmp_path / "r3")
    assert balanced["synthetic"]["n_per_emotion"] == {"neutral": 3, "happy": 3, "sad": 3, "angry": 3}

    filtered = train(*base, "aug.synthetic.filter=0.3", output_dir=tmp_path / "r4")["synthetic"]
    f = filtered["filter"]
    assert f["threshold"] == 0.3 and 0 < f["kept_fraction"] <= 1 and set(f["kept_fraction_per_emotion"]) == set(first["n_per_emotion"])
    assert filtered["n_used"] == filtered["n_unique"] == 24
    # The pool grew until 6 samples of each emotion passed (or hit its cap).
    assert filtered["n_available"] >= 48

    # A filter almost nothing passes: the pool stops at its cap (8x what the run needs) and the run
    # trains on the samples that passed, recording what it lacks.
    strict = train(*base, "aug.synthetic.filter=0.6", output_dir=tmp_path / "r6")["synthetic"]
    short = strict["filter"]["shortfall"]
    assert short and strict["n_available"] <= 8 * 24 and strict["n_used"] == strict["n_unique"] == 24 - sum(short.values())
    with pytest.raises(DataError, match="passed none of the .* samples of the pool; use a lower aug.synthetic.filter"):
        train(*base, "aug.synthetic.filter=0.9999", output_dir=tmp_path / "r7")

    other_seed = train(*base, "seed=1", output_dir=tmp_path / "r5")["synthetic"]
    assert other_seed["provided"]["generator_trained_here"] and other_seed["generator_seed"] == 1

    # A low-data run's subset is drawn by split.seed; a generator made from another subset of the
    # same size has seen real clips this run may not use: refused, not silently reused.
    half = train(*base, "dataset.train_fraction=0.5", output_dir=tmp_path / "h0")["synthetic"]
    assert half["provided"]["generator_trained_here"] and half["n_used"] == 12
    # Its generator learns from 12 clips for as many steps as 2 epochs of all 24 take (batch 16: 2 x 2),
    # not 2 epochs of its 12 (2 x 1): a low-data generator is not starved by the smaller epoch.
    budget = lambda p: json.loads((next((tmp_path / "c" / "generators").glob(f"synthetic-loso-f0-p{p}-*-s0"))  # noqa: E731
                                   / "generator" / "metadata.json").read_text())["training"]["budget"]
    assert budget("0.5") == {"max_epochs": -1, "max_steps": 4, "steps_trained": 4, "clips": 12, "full_data_clips": 24}
    assert budget("1.0") == {"max_epochs": 2, "max_steps": -1, "steps_trained": 4, "clips": 24, "full_data_clips": 24}
    # The old budget (2 epochs of the subset) makes another generator: refused, the difference named.
    with pytest.raises(ConfigError, match="diffusion.full_data_steps: True there, False here"):
        train(*base, "dataset.train_fraction=0.5", "diffusion.full_data_steps=false", output_dir=tmp_path / "h2")
    with pytest.raises(GeneratorFoldLeak, match="another subset of this fold's training clips.*split.seed"):
        train(*base, "dataset.train_fraction=0.5", "split.seed=1", output_dir=tmp_path / "h1")


def test_generators_are_matched_to_a_low_data_runs_own_subset():
    from ser.data.corpora import Clip
    from ser.data.datamodule import LabelledClips
    from ser.data.splits import Split
    from ser.diffusion.provenance import assert_same_training_clips, training_clips_digest

    clips = [Clip(f"/data/a/{i}.wav", "sad" if i % 2 else "happy", f"c:s{i % 3}", "c") for i in range(8)]
    data = LabelledClips(clips, [torch.zeros(1, 4, 4)] * 8, ["happy", "sad"])
    def split(train):
        return Split("loso", 0, 3, np.array(train), np.array([], int), np.array([6, 7]), ["c:s0", "c:s1"], [], ["c:s2"])
    mine, other = split([0, 1, 2, 3]), split([0, 1, 2, 4])
    moved = LabelledClips([Clip(c.path.replace("/data", "/elsewhere"), c.emotion, c.speaker, c.corpus) for c in clips],
                          data.features, data.emotions)
    assert training_clips_digest(data, mine) == training_clips_digest(moved, mine)  # moving the corpus changes nothing
    assert training_clips_digest(data, mine) != training_clips_digest(data, other)
    meta = {"train_fraction": 0.5, "n_train_clips": 4, "train_clips_digest": training_clips_digest(data, other)}
    with pytest.raises(GeneratorFoldLeak, match="the generator g was made from another subset"):
        assert_same_training_clips(meta, data, mine, where="the generator g")
    assert_same_training_clips({**meta, "train_fraction": 1.0}, data, mine, where="g")  # full data: the speakers decide
    assert_same_training_clips({**meta, "train_clips_digest": training_clips_digest(data, mine)}, data, mine, where="g")
    old = {"train_fraction": 0.5, "n_train_clips": 4}  # made before the digest: only the count can be checked
    assert_same_training_clips(old, data, mine, where="g")
    with pytest.raises(GeneratorFoldLeak):
        assert_same_training_clips({**old, "n_train_clips": 5}, data, mine, where="g")


@pytest.mark.slow
def test_concurrent_jobs_of_one_fold_train_one_generator(tmp_path):
    args = [*TINY, *TINY_DIFFUSION, f"paths.cache_dir={tmp_path / 'c'}", "logger=none", "aug=ddpm"]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / f'job{j}'}",
                               f"model.epochs={2 + j}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for j in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    made = [json.loads((tmp_path / f"job{j}" / "results.json").read_text())["synthetic"]["provided"] for j in range(2)]
    assert sorted(m["generator_trained_here"] for m in made) == [False, True]
    assert sum(m["samples_drawn_here"] for m in made) == 24  # one pool, sampled once
    assert len(list((tmp_path / "c" / "generators").iterdir())) == 1


@pytest.mark.slow
def test_sdedit_variants_of_the_training_clips(tmp_path):
    from conftest import compose_config
    from ser.data.build import prepare
    from ser.diffusion.sdedit import load_edits

    cache = f"paths.cache_dir={tmp_path / 'c'}"
    base = [*TINY, *TINY_DIFFUSION, cache, "logger=none", "aug=sdedit"]
    data, split = prepare(compose_config("train", *base, output_dir=tmp_path / "x"), functionals=False)
    source = {data.clips[i].path: data.features[i] for i in split.train}
    from ser.diffusion.mixing import fold_edits

    # Strength 0 is the identity: every training clip unchanged, under its own emotion and speaker,
    # and no generator trained or read for it.
    cfg0 = compose_config("train", *base, "aug.sdedit.strength=0", output_dir=tmp_path / "s0")
    mels, labels, speakers, report = fold_edits(cfg0, data, split)
    assert [torch.equal(m, data.features[i]) for m, i in zip(mels, split.train)] == [True] * len(split.train) == [True] * 24
    assert list(labels) == list(data.labels[split.train]) and speakers == [data.speakers[i] for i in split.train]
    same = train(*base, "aug.sdedit.strength=0", output_dir=tmp_path / "s0")["synthetic"]
    assert same["n_used"] == 24 and same["strength"] == 0 and same["path"] is None and same["provided"] is None
    assert not (tmp_path / "c" / "generators").exists()
    from ser.evaluation.aggregate import augmentation_summary

    assert augmentation_summary([{"synthetic": same}])["synthetic"] == {
        "n_used": 24.0, "n_unique": 24.0, "kept_fraction": None, "sampler": [], "strength": 0.0, "generation_time_s": 0.0}

    moved = train(*base, "aug.sdedit.strength=0.5", "aug.sdedit.variants=2", output_dir=tmp_path / "s5")["synthetic"]
    assert moved["n_used"] == 48 and moved["provided"]["generator_trained_here"] and moved["provided"]["edited_here"]
    mels, info = load_edits(moved["path"])
    change = [float((m - source[p]).abs().mean()) for m, p in zip(mels, info["sources"])]
    assert all(c > 0 for c in change) and all(m.shape == source[p].shape for m, p in zip(mels, info["sources"]))
    assert all(m.min() >= -80 and m.max() <= 0 for m in mels)
    # The same run again reads the variants instead of remaking them.
    again = train(*base, "aug.sdedit.strength=0.5", "aug.sdedit.variants=2", "model.epochs=1", output_dir=tmp_path / "s5b")
    assert again["synthetic"]["provided"]["edited_here"] is False
    # Another fold's variants named by path (fold 2 tests spk02, a source speaker of fold 0's): refused
    # before a generator is trained for the run or the file is remade.
    stamp = Path(moved["path"]).stat().st_mtime_ns
    with pytest.raises(GeneratorFoldLeak, match="test speaker"):
        train(*base, "split.fold=2", f"aug.sdedit.path={moved['path']}", output_dir=tmp_path / "leak")
    assert len(list((tmp_path / "c" / "generators").iterdir())) == 1 and Path(moved["path"]).stat().st_mtime_ns == stamp


def test_audio_augmentation_is_seeded_per_clip_and_variant():
    from conftest import tone
    from ser.features.augment import AugmentedFrontEnd, augment_signal, variant_seed
    from ser.features.mel import LogMel

    transforms = [{"_target_": "audiomentations.PitchShift", "min_semitones": -3.0, "max_semitones": 3.0, "p": 1.0},
                  {"_target_": "audiomentations.AddGaussianSNR", "min_snr_db": 10.0, "max_snr_db": 20.0, "p": 1.0},
                  {"_target_": "audiomentations.Gain", "min_gain_db": -6.0, "max_gain_db": 6.0, "p": 1.0}]
    y = tone(1.0)
    a, b = augment_signal(y, 22050, transforms, 7), augment_signal(y, 22050, transforms, 7)
    c = augment_signal(y, 22050, transforms, 8)
    assert np.array_equal(a, b) and not np.allclose(a, c) and not np.allclose(a, y)
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.0 and len(a) == len(y)
    assert variant_seed("/x/a.wav", 0) != variant_seed("/x/a.wav", 1) == variant_seed("/y/a.wav", 1)
    import json
    fronts = [AugmentedFrontEnd(LogMel(), json.dumps(t), v) for t, v in ((transforms, 0), (transforms, 1), (transforms[:1], 0))]
    assert len({f.fingerprint() for f in fronts}) == 3 and fronts[0].kind == "mel-audio"
    with pytest.raises(ValueError, match="not an audiomentations transform"):
        augment_signal(y, 22050, [{"_target_": "os.system", "command": "true"}], 0)


@pytest.mark.slow
def test_aug_audio_feeds_networks_and_linear_probes_on_encoders(tmp_path, cache_dir):
    from test_encoder import _tiny_wav2vec_family

    cache = f"paths.cache_dir={cache_dir}"
    net = train(*TINY, cache, "logger=none", "aug=audio", "aug.audio.variants=1", output_dir=tmp_path / "mel")
    assert net["audio_augmentation"]["n_used"] == net["n_train"] == 24 and net["audio_augmentation"]["skipped"] == []
    assert list(cache_dir.glob("features/mel-audio-*"))

    encoder = _tiny_wav2vec_family(tmp_path / "w2v2")
    probe = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder", cache,
             f"features.encoder.name={encoder}", "model=encoder_linear", "model.search={C:[0.01,1.0]}",
             "evaluation.n_bootstrap=20"]
    plain = train(*probe, output_dir=tmp_path / "none")
    augmented = train(*probe, "aug=audio", output_dir=tmp_path / "audio")
    # Training and validation speakers' 36 clips, twice each; the test speaker is never augmented.
    assert augmented["audio_augmentation"]["n_used"] == 72 and plain["audio_augmentation"] is None
    assert augmented["test_clips"] == plain["test_clips"]
    assert (plain["n_training_rows"], augmented["n_training_rows"]) == (36, 108)


@pytest.mark.slow
def test_generated_spectrograms_reach_a_linear_probe_on_an_encoder(tmp_path):
    from test_encoder import _tiny_wav2vec_family

    encoder = _tiny_wav2vec_family(tmp_path / "w2v2")
    base = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder", f"paths.cache_dir={tmp_path / 'c'}",
            f"features.encoder.name={encoder}", "model=encoder_linear", "evaluation.n_bootstrap=20", *TINY_DIFFUSION,
            "hardware.progress_bar=false"]
    ddpm = train(*base, "aug=ddpm", output_dir=tmp_path / "ddpm")
    syn = ddpm["synthetic"]
    assert syn["filter"] is None
    # 24 synthetic clips (one per real training clip) voiced, encoded and trained on beside the 36 real ones.
    assert syn["n_used"] == syn["n_unique"] == 24 and syn["provided"]["generator_trained_here"]
    assert ddpm["n_training_rows"] == 36 + 24 and syn["voiced_and_encoded"]["seconds"] >= 0
    gen = json.loads(next((tmp_path / "c" / "generators").glob("*")).joinpath("generator", "metadata.json").read_text())
    assert gen["front_end"]["kind"] == "mel" and gen["front_end"]["n_mels"] == 128  # the generator learned log-mels
    # The filter with the probe itself as its judge (aug.synthetic.judge=classifier): it keeps the
    # samples that the probe fitted on the real clips alone hears as their emotion. Half the ratio:
    # every sample the pool grows by is voiced by Griffin-Lim, about a second each on 2 cores.
    judged = train(*base, "aug=ddpm_filtered", "aug.synthetic.judge=classifier", "aug.synthetic.filter=0.4", "aug.synthetic.ratio=0.5",
                   output_dir=tmp_path / "judged")["synthetic"]
    assert judged["filter"]["judge"].startswith("the run's classifier (encoder_linear)")
    assert 0 < judged["filter"]["kept_fraction"] < 1 and judged["n_used"] == judged["n_unique"]
    on = lambda run: run["quality_in_classifier_space"]["real_classifier_on_generated"]  # noqa: E731
    assert on(judged)["ua"] > on(syn)["ua"] + 0.3  # the probe hears its own picks; 0.92 against 0.21 at ratio 1
    edits = train(*base, "aug=sdedit", output_dir=tmp_path / "sdedit")
    assert edits["n_training_rows"] == 36 + 24 and not edits["synthetic"]["provided"]["generator_trained_here"]
    assert list((tmp_path / "c" / "generators").glob("*/synthetic/voiced-gl32s0-encoder-*"))
    # Both arms say how the probe sees what they added, judged by the probe on real clips alone:
    # exactly what aug=none trains, so its UA on the held-out speakers is that run's.
    none = train(*base, "aug=none", output_dir=tmp_path / "none")
    for run in (ddpm, edits):
        seen = run["synthetic"]["quality_in_classifier_space"]
        assert seen["real_classifier_on_heldout"]["ua"] == pytest.approx(none["metrics"]["ua"])
        assert seen["n"] == {"train": 36, "heldout": 12, "generated": 24} and seen["frechet_ratio"] > 0
        assert 0 <= seen["real_classifier_on_generated"]["ua"] <= 1
        assert "per speaker, copies with their source speaker" in seen["space"]  # model.copies_norm, recorded


def test_generated_clips_are_measured_as_the_probe_sees_them(tmp_path):
    """Copies of the training clips sit as close to them as new real speakers and are classified as
    the probe learned them; noise sits far away and gets chance-level UA."""
    from conftest import compose_config
    from test_encoder import _tiny_wav2vec_family
    from ser.data.build import prepare
    from ser.data.datamodule import ExtraClips
    from ser.diffusion.assess_encoded import assess_in_classifier_space
    from ser.diffusion.selection import ProbeJudge
    from ser.models.classical import fit_predict_classical

    encoder = _tiny_wav2vec_family(tmp_path / "w2v2")
    cfg = compose_config("train", "dataset.n_speakers=6", "dataset.clips_per_speaker_emotion=3", "features=encoder",
                         f"paths.cache_dir={tmp_path / 'c'}", f"features.encoder.name={encoder}", "model=encoder_linear",
                         "model.search=null", output_dir=tmp_path / "run")
    data, split = prepare(cfg, functionals=False)
    probs, _, real_only = fit_predict_classical(cfg, data, split)
    train_rows = list(split.train)
    copies = ExtraClips([data.features[i] for i in train_rows], data.labels[train_rows], [data.speakers[i] for i in train_rows])
    gen = torch.Generator().manual_seed(0)
    noise = ExtraClips([torch.randn(x.shape, generator=gen) * 5 for x in copies.features], copies.labels,
                       ["synthetic"] * len(train_rows))
    near = assess_in_classifier_space(cfg, data, split, copies, real_only, probs)
    far = assess_in_classifier_space(cfg, data, split, noise, real_only, probs)
    assert near["real_classifier_on_generated"]["ua"] > 0.9 and near["frechet_ratio"] < 1.5
    assert far["frechet_ratio"] > 3 * near["frechet_ratio"] and far["real_classifier_on_generated"]["ua"] < 0.6
    assert near["precision_recall"]["generated"]["precision"] > far["precision_recall"]["generated"]["precision"]
    assert near["real_classifier_on_heldout"]["ua"] == far["real_classifier_on_heldout"]["ua"]
    # Copies of training clips are all close copies; noise is none.
    assert near["memorization"]["close_rate"] == 1.0 and far["memorization"]["close_rate"] == 0.0
    assert near["memorization"]["median_ratio"] < 0.01 < far["memorization"]["median_ratio"]

    # The filter's classifier judge is this probe on the samples as one more speaker: it passes the
    # copies under their own emotions and refuses them under another one.
    judge = ProbeJudge(cfg, data, real_only, lambda encoded: encoded, "the probe")
    probs = judge.probabilities(copies.features)
    wrong = (copies.labels + 1) % len(data.emotions)
    # (Copies of four speakers standardised together as one lose some of their per-speaker cues.)
    assert passes(probs, copies.labels, 0.5).mean() > 0.6 and passes(probs, wrong, 0.5).mean() < 0.1


@pytest.mark.parametrize("overrides, message", [
    (["aug=ddpm", "model=egemaps_svm"], "is neither"),
    (["aug=ddpm_only", "features=encoder", "model=encoder_linear"], "synthetic clips alone"),
    (["aug=sdedit", "aug.sdedit.strength=1.5"], r"aug.sdedit.strength=1.5 is not a valid value: it must be a number in \[0, 1\]"),
    (["aug=ddpm", "aug.synthetic.filter=2"], r"aug.synthetic.filter=2 is not a valid value: it must be a number in \(0, 1\), or null"),
    (["aug=ddpm", "aug.synthetic.generate=sometimes"], "choose one of: if_missing, never"),
    (["aug=ddpm", "aug.synthetic.classes=equal"], "choose one of: real, balanced"),
    (["aug=ddpm", "generator.sampling.sampler=dimm"], "choose one of: ddpm, ddim"),
    (["aug=ddpm", "aug.synthetic.judge=clasifier"], "choose one of: bands, classifier"),
    # The classifier judge is the run's linear probe on an encoder; a network on log-mels has none.
    (["aug=ddpm_filtered", "aug.synthetic.judge=classifier"], "model=mel_tdnn .*Use aug.synthetic.judge=bands"),
])
def test_generated_arms_refuse_what_they_cannot_do(tmp_path, overrides, message):
    from conftest import compose_config
    from ser.config import check_train_config

    with pytest.raises(ValueError, match=message):
        check_train_config(compose_config("train", *overrides, output_dir=tmp_path))


def test_classical_models_refuse_augmentations_they_would_ignore(tmp_path):
    from conftest import compose_config
    from ser.config import check_train_config

    for aug in ("specaug", "mixup"):
        with pytest.raises(ValueError, match=f"aug={aug} .*classical: use aug=audio"):
            check_train_config(compose_config("train", "model=egemaps_svm", f"aug={aug}", output_dir=tmp_path))


@pytest.mark.slow
def test_a_generator_of_whisper_inputs_feeds_the_encoder_directly(tmp_path):
    from conftest import compose_config
    from test_encoder import _tiny_whisper
    from ser.data.build import prepare
    from ser.diffusion.encoder_mixing import generated_for_encoder

    encoder = _tiny_whisper(tmp_path / "whisper")
    base = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder", f"paths.cache_dir={tmp_path / 'c'}",
            f"features.encoder.name={encoder}", "model=encoder_linear", "evaluation.n_bootstrap=20", *TINY_DIFFUSION,
            "hardware.progress_bar=false", "diffusion=cpu_whisper"]
    ddpm = train(*base, "aug=ddpm", output_dir=tmp_path / "ddpm")
    assert ddpm["n_training_rows"] == 36 + 24 and ddpm["synthetic"]["voiced_and_encoded"]["route"].startswith("generated Whisper")
    gen = json.loads(next((tmp_path / "c" / "generators").glob("*cpu_whisper*")).joinpath("generator", "metadata.json").read_text())
    assert gen["front_end"]["kind"] == "whisper_input_db"
    # SDEdit at strength 0 gives back each training clip's own Whisper input at its own level, so its
    # encoding is the clip's own hidden layers.
    cfg = compose_config("train", *base, "aug=sdedit", "aug.sdedit.strength=0", output_dir=tmp_path / "s0")
    data, split = prepare(cfg, functionals=False)
    extra, report = generated_for_encoder(cfg, data, split)
    assert report["path"] is None and len(extra.features) == len(split.train)
    for x, i in zip(extra.features, split.train):
        assert torch.allclose(x.float(), data.features[i].float(), atol=2e-2)
    from test_encoder import _tiny_wav2vec_family

    w2v2 = _tiny_wav2vec_family(tmp_path / "w2v2")
    with pytest.raises(ValueError, match="is not a Whisper encoder"):
        train(*[b for b in base if "encoder.name" not in b], f"features.encoder.name={w2v2}", "aug=ddpm", output_dir=tmp_path / "w")


def test_a_low_data_generator_trains_the_full_data_step_count():
    from omegaconf import OmegaConf

    from ser.diffusion.training import step_budget

    recipe = OmegaConf.create({"epochs": 30, "max_steps": -1, "batch_size": 16, "full_data_steps": True})
    assert step_budget(recipe, 300, 1200) == (-1, 30 * 75)  # 25% of a RAVDESS fold: 2250 steps, not 570
    assert step_budget(recipe, 1200, 1200) == (30, -1)  # full data: the recipe's own budget, untouched
    assert step_budget(OmegaConf.merge(recipe, {"max_steps": 1000}), 300, 1200) == (-1, 1000)  # still a cap
    assert step_budget(OmegaConf.merge(recipe, {"full_data_steps": False}), 300, 1200) == (30, -1)


def test_generators_saved_before_the_step_budget_setting_are_compared_as_trained():
    from omegaconf import OmegaConf

    from ser.diffusion.provenance import recipe_differences

    ours = OmegaConf.create({"name": "cpu", "epochs": 30, "full_data_steps": True})
    legacy = {"name": "cpu", "epochs": 30}  # saved before the key existed: trained 30 epochs of its clips
    # At 25% that was a quarter of the steps: another generator, named as such.
    assert recipe_differences({"train_fraction": 0.25, "recipe_settings": legacy}, ours) == \
        "diffusion.full_data_steps: False there, True here"
    # At full data the two budgets are one training: nothing to refuse.
    assert recipe_differences({"train_fraction": 1.0, "recipe_settings": legacy}, ours) == ""
    assert recipe_differences({"train_fraction": 1.0, "recipe_settings": {**legacy, "full_data_steps": False}}, ours) == ""
    assert recipe_differences({"train_fraction": 0.25, "recipe_settings": {**legacy, "full_data_steps": True}}, ours) == ""


def test_encoded_generated_spectrograms_are_cached_by_content(tmp_path):
    from ser.diffusion.encoded import encode_spectrograms

    class CountingEncoder:  # the front-end interface encode_spectrograms reads, counting its calls
        sr, kind, calls = 22050, "counting", 0

        def fingerprint(self):
            return "f0"

        def from_signal(self, y):
            self.calls += 1
            return np.array([[float(np.abs(y).sum())]], dtype=np.float32)

    g = torch.Generator().manual_seed(0)
    mels = [torch.rand(1, 128, 8, generator=g) * -80 for _ in range(3)]
    encoder = CountingEncoder()
    first = encode_spectrograms(mels[:2], encoder, tmp_path, n_iter=2)
    assert encoder.calls == 2 and len(list(tmp_path.glob("voiced-gl2s0-counting-f0/*.safetensors"))) == 2
    grown = encode_spectrograms(mels, encoder, tmp_path, n_iter=2)  # a grown pool: only the new one is encoded
    assert encoder.calls == 3 and all(torch.equal(a, b) for a, b in zip(first, grown[:2]))
    assert not torch.equal(grown[0], grown[2])


def test_a_killed_pool_sampling_resumes_where_it_was_saved(tmp_path, monkeypatch):
    """The pool is saved while it is sampled; a job killed part-way loses only the batches since the
    last save, and the rerun draws exactly the pool one uninterrupted run draws."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    import ser.diffusion.pool as pool
    from ser.diffusion.synthetic_set import load_synthetic_set

    class FakeGenerator:  # the noise is the sample: each batch is fixed by its seed
        metadata = {"train_speakers": ["a"], "train_fraction": 1.0, "n_train_clips": 3, "image_size": 8}
        device, inference_precision = torch.device("cpu"), "32-true"
        calls = 0
        fail_at = None

        def sample(self, b, label, sampler, steps, guidance, seed):
            FakeGenerator.calls += 1
            if FakeGenerator.calls == FakeGenerator.fail_at:
                raise KeyboardInterrupt("killed")
            return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    monkeypatch.setattr(pool, "load_generators", lambda *a, **k: {k: (FakeGenerator(), k) for k in range(2)})
    monkeypatch.setattr(pool, "SAMPLE_BATCH", 4)
    monkeypatch.setattr(pool, "CHECKPOINT_EVERY_S", 0)  # save after every batch
    cfg = OmegaConf.create({"generator": {"sampling": {"sampler": "ddim", "steps": 2, "guidance": 1.0}, "seed": 0, "dir": "g"},
                            "hardware": {"accelerator": "cpu"}})
    data = SimpleNamespace(emotions=["calm", "sad"], features=[torch.zeros(1, 6, 5)])
    needed = {0: 10, 1: 7}  # batches of 4: 4 4 2 for calm, 4 3 for sad

    whole = tmp_path / "whole.safetensors"
    assert pool._grow(cfg, data, whole, needed, None, 5)[1] == 17
    FakeGenerator.calls, FakeGenerator.fail_at = 0, 4  # killed in sad's first batch
    cut = tmp_path / "cut.safetensors"
    with pytest.raises(KeyboardInterrupt):
        pool._grow(cfg, data, cut, needed, None, 5)
    assert load_synthetic_set(cut)[1].tolist() == [0] * 10  # calm's three batches were saved
    FakeGenerator.fail_at = None
    assert pool._grow(cfg, data, cut, needed, None, 5)[1] == 7  # only sad is sampled again
    (a, la, _), (b, lb, _) = load_synthetic_set(whole), load_synthetic_set(cut)
    assert torch.equal(la, lb) and torch.equal(a, b)
