import json
import warnings

from pathlib import Path

import numpy as np

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from ser.data.splits import Split, assert_speaker_disjoint, make_split, subsample_training
from ser.errors import ConfigError, DataError, SpeakerLeak
from ser.evaluation.aggregate import find_runs, paired_comparison
from ser.evaluation.metrics import UnweightedAccuracy, bootstrap_ci, classification_metrics, t_interval, unweighted_accuracy


def corpus(n_speakers=10, per=12, emotions=("a", "b", "c")):
    speakers, labels = [], []
    for s in range(n_speakers):
        for i in range(per):
            speakers.append(f"c:{s:02d}")
            labels.append(emotions[i % len(emotions)])
    return speakers, labels


def test_loso_every_speaker_tested_once_never_trained_on():
    speakers, labels = corpus()
    tested = []
    for fold in range(10):
        s = make_split(speakers, labels, "loso", fold)
        assert len(s.test_speakers) == 1 and len(s.val_speakers) == 1
        assert not set(s.test_speakers) & (set(s.train_speakers) | set(s.val_speakers))
        assert not set(s.val_speakers) & set(s.train_speakers)
        assert len(s.train) + len(s.val) + len(s.test) == len(speakers)
        tested += s.test_speakers
    assert sorted(tested) == sorted(set(speakers))
    vals = {tuple(make_split(speakers, labels, "loso", f).val_speakers) for f in range(10)}
    assert len(vals) == 10  # validation speaker rotates


def test_ravdess_style_kfold_six_folds_of_four_actors():
    speakers, labels = corpus(n_speakers=24, per=8)
    seen = []
    for fold in range(6):
        s = make_split(speakers, labels, "kfold", fold, k=6, n_val_speakers=2)
        assert len(s.test_speakers) == 4 and len(s.val_speakers) == 2 and len(s.train_speakers) == 18
        seen += s.test_speakers
    assert sorted(seen) == sorted(set(speakers))


def test_listed_folds_reproduce_a_published_assignment():
    import yaml

    folds = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/split/ravdess_emobox.yaml").read_text())["folds"]
    speakers = [f"ravdess:{a:02d}" for a in range(1, 25) for _ in range(8)]
    labels = ["a", "b", "c", "d", "e", "f", "g", "h"] * 24
    seen = []
    for fold in range(6):
        s = make_split(speakers, labels, "listed", fold, n_val_speakers=2, folds=folds)
        assert s.test_speakers == sorted(folds[fold]) and s.n_folds == 6
        assert len(s.val_speakers) == 2 and len(s.train_speakers) == 18 and len(s.test) == 32
        seen += s.test_speakers
    assert sorted(seen) == sorted(set(speakers))
    # EmoBox's fold 1 tests actors 01, 11, 20 and 21.
    assert make_split(speakers, labels, "listed", 0, folds=folds).test_speakers == ["ravdess:01", "ravdess:11", "ravdess:20", "ravdess:21"]
    with pytest.raises(ConfigError, match=r"'ravdess:99'\] that the corpus does not have"):
        make_split(speakers, labels, "listed", 0, folds=[["ravdess:99"], ["ravdess:01"]])
    with pytest.raises(ConfigError, match=r"more than one fold"):
        make_split(speakers, labels, "listed", 0, folds=[["ravdess:01"], ["ravdess:01", "ravdess:02"]])
    with pytest.raises(ConfigError, match=r"needs split.folds"):
        make_split(speakers, labels, "listed", 0)
    with pytest.raises(ConfigError, match=r"out of range"):
        make_split(speakers, labels, "listed", 6, folds=folds)


def test_cross_corpus_tests_one_whole_corpus_and_trains_on_the_other():
    speakers = [f"emodb:{i:02d}" for i in range(3) for _ in range(4)] + [f"ravdess:{i:02d}" for i in range(4) for _ in range(4)]
    labels = ["a", "b", "c", "d"] * 7
    for fold, tested in ((0, "emodb"), (1, "ravdess")):
        s = make_split(speakers, labels, "cross_corpus", fold, n_val_speakers=1)
        assert {x.split(":")[0] for x in s.test_speakers} == {tested} and len(s.test) == (12 if fold == 0 else 16)
        assert {x.split(":")[0] for x in s.train_speakers + s.val_speakers} == {"emodb", "ravdess"} - {tested}
        assert len(s.val_speakers) == 1 and s.n_folds == 2
    with pytest.raises(ConfigError, match="at least two corpora"):
        make_split(speakers[:12], labels[:12], "cross_corpus", 0)


def test_random_split_is_labelled_speaker_dependent():
    speakers, labels = corpus()
    d = make_split(speakers, labels, "random", 0, k=5).describe()
    assert d["speaker_independent"] is False and "speaker-dependent" in d["warning"]


def test_errors_name_the_problem():
    speakers, labels = corpus()
    with pytest.raises(ConfigError, match="out of range"):
        make_split(speakers, labels, "loso", 10)
    with pytest.raises(DataError, match="speaker identities"):
        make_split(["x:unknown"] * 30, labels[:30], "loso", 0)
    # A negative count once sliced rest[:-1]: every training speaker but one became a validation speaker.
    for n, message in ((-1, "must be >= 0"), (9, "leaves no training speaker")):
        for protocol in ("loso", "kfold"):
            with pytest.raises(ConfigError, match=f"split.n_val_speakers={n} {message}"):
                make_split(speakers, labels, protocol, 0, k=2, n_val_speakers=n)
    leaky = Split("loso", 0, 2, np.arange(2), np.arange(0), np.arange(2, 3), ["a", "b"], [], ["b"])
    with pytest.raises(SpeakerLeak):
        assert_speaker_disjoint(leaky)


def test_subsample_is_stratified():
    speakers, labels = corpus()
    s = make_split(speakers, labels, "loso", 0)
    small = subsample_training(s.train, np.array(labels), 0.25, seed=0)
    kept = np.array(labels)[small]
    assert set(kept) == {"a", "b", "c"} and abs(len(small) - 0.25 * len(s.train)) <= 3
    assert set(small) <= set(s.train)
    assert np.array_equal(subsample_training(s.train, np.array(labels), 1, seed=0), s.train)
    for fraction in (0, 1.5):  # more than all of them was once taken as all of them
        with pytest.raises(ConfigError, match=r"dataset.train_fraction must be in \(0, 1\]"):
            subsample_training(s.train, np.array(labels), fraction, seed=0)


def test_metrics_match_sklearn_and_ci_brackets_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    m = classification_metrics(y, p, 5)  # class 4 absent from the test set: UA must ignore it
    assert m["ua"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["wa"] == pytest.approx(np.mean(y == p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
    assert np.sum(m["confusion"]) == 200 and m["per_class_recall"][4] is None
    lo, hi = bootstrap_ci(y, p, n_boot=300)
    assert lo < m["ua"] < hi and hi - lo < 0.3
    # ser's own UA (counted with numpy, for the bootstrap's sake) is sklearn's, whatever the labels:
    # classes only predicted, classes never predicted, strings, a single clip.
    for n in (1, 3, 17, 60):
        y = rng.integers(0, 5, n)
        p = np.where(rng.random(n) < 0.5, y, rng.integers(0, 7, n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn: "y_pred contains classes not in y_true"
            assert unweighted_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
            words = np.array(list("abcdefg"))
            assert unweighted_accuracy(words[y], words[p]) == pytest.approx(balanced_accuracy_score(words[y], words[p]))


def run(fold, seed, ua, clips):
    return {"fold": fold, "seed": seed, "test_clips": clips, "emotions": ["a", "b"], "_dir": f"r{fold}{seed}",
            "metrics": {"ua": ua, "per_class_recall": [ua, ua]}}


def test_ua_ignores_a_class_the_speaker_lacks_even_when_it_is_predicted():
    # EmoDB speaker 08 has no disgust clips; calling one of his clips disgust must cost that
    # clip's own class recall, not add a zero-recall disgust class to the average.
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 1, 2])
    assert classification_metrics(y, p, 3)["ua"] == pytest.approx(0.75)
    assert balanced_accuracy_score(y, p) == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))  # predicts classes 4 and 5 too
    metric = UnweightedAccuracy(6)
    for i in range(0, 300, 64):  # accumulated over batches, as in validation
        metric.update(torch.nn.functional.one_hot(torch.as_tensor(p[i:i + 64]), 6).float(), torch.as_tensor(y[i:i + 64]))
    assert float(metric.compute()) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-6)
    assert classification_metrics(y, p, 6)["ua"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-6)


def test_evaluate_rescores_runs_from_their_stored_predictions(tmp_path):
    # Tables use the current metric code even for results.json written by an older version.
    stale = {"metrics": {"ua": 0.5, "wa": 0.75, "macro_f1": 0.0, "ua_ci95": [0.4, 0.9]}, "emotions": ["a", "b", "c"],
             "test_labels": [0, 0, 1, 1], "test_predictions": [0, 0, 1, 2]}
    (tmp_path / "results.json").write_text(json.dumps(stale))
    (run,) = find_runs([tmp_path])
    assert run["metrics"]["ua"] == pytest.approx(0.75) and run["metrics"]["ua_ci95"] == [0.4, 0.9]
    assert run["metrics"]["confusion"][1] == [0, 1, 1]


def test_a_baseline_substitutes_choices_and_null_removes_them():
    from ser.evaluation.aggregate import baseline_of

    arm = {"experiment": "emodb_encoder_cpu", "model": "encoder_linear", "model.layers": "2", "aug": "none"}
    base = {"experiment": "emodb_cpu", "model": "egemaps_svm", "model.layers": None, "model.feature_set": "ComParE_2016"}
    assert baseline_of(arm, base) == {"experiment": "emodb_cpu", "model": "egemaps_svm", "aug": "none",
                                      "model.feature_set": "ComParE_2016"}
    assert baseline_of(arm, {"aug": "specaug"}) == {**arm, "aug": "specaug"}


def test_paired_comparison_pairs_by_fold_and_seed():
    base = [run(f, s, 0.5 + 0.01 * f, [f"x{f}"]) for f in range(5) for s in range(2)]
    arm = [run(f, s, 0.55 + 0.011 * f + 0.002 * s, [f"x{f}"]) for f in range(5) for s in range(2)]
    c = paired_comparison(arm, base)
    # Ten paired runs, but five independent units: the seeds of a fold share its test speakers.
    assert c["n_pairs"] == 10 and c["n_folds"] == 5 and c["n_seeds"] == 2 and c["wins"] == 5
    assert c["delta_mean"] == pytest.approx(0.053)
    assert c["delta_ci95"][0] > 0 and c["p_ttest"] < 1e-4
    arm[0]["test_clips"] = ["other"]
    with pytest.raises(DataError, match="not a paired comparison"):
        paired_comparison(arm, base)
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert lo < 2.0 < hi


def test_more_seeds_of_the_same_folds_do_not_buy_significance():
    from ser.evaluation.aggregate import summarize_arm

    rng = np.random.default_rng(0)
    deltas = [0.03, -0.01, 0.02, 0.00]  # four folds, an unconvincing mean gain
    base = [run(f, 0, 0.6, [f"x{f}"]) for f in range(4)]
    one = paired_comparison([run(f, 0, 0.6 + d, [f"x{f}"]) for f, d in enumerate(deltas)], base)
    # The same folds again under five seeds (the run-to-run noise is tiny): counting each run as a
    # pair would make this look decisive; per fold it is the same four differences.
    base5 = [run(f, s, 0.6, [f"x{f}"]) for f in range(4) for s in range(5)]
    arm5 = [run(f, s, 0.6 + d + rng.normal(0, 1e-4), [f"x{f}"]) for f, d in enumerate(deltas) for s in range(5)]
    five = paired_comparison(arm5, base5)
    assert five["n_folds"] == 4 and five["n_pairs"] == 20
    assert five["p_ttest"] == pytest.approx(one["p_ttest"], rel=0.05) and five["p_ttest"] > 0.1
    row = summarize_arm([dict(r, arm={"aug": "x"}, protocol="loso", speaker_independent=True, test_labels=[0, 1],
                              test_predictions=[0, 1], metrics=dict(r["metrics"], wa=0.5, macro_f1=0.5,
                                                                    confusion=[[1, 0], [0, 1]])) for r in arm5])
    assert row["n_folds"] == 4 and row["n_runs"] == 20
    assert row["ua"]["std"] == pytest.approx(np.std([0.6 + d for d in deltas], ddof=1), abs=1e-3)


def test_pooled_bootstrap_resamples_a_clips_seeds_together():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    once = bootstrap_ci(y, p, n_boot=300)
    # The same clips predicted identically by three seeds carry no more evidence than one seed.
    three = (np.tile(y, 3), np.tile(p, 3))
    grouped = bootstrap_ci(*three, n_boot=300, groups=np.tile(np.arange(300), 3))
    assert grouped == pytest.approx(once)
    naive = bootstrap_ci(*three, n_boot=300)
    assert naive[1] - naive[0] < 0.7 * (grouped[1] - grouped[0])  # treating them as 900 clips: too narrow
