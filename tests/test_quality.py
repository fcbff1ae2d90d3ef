"""Synthetic-data quality metrics on point clouds whose answers are known."""

import numpy as np
import pytest

from ser.evaluation import quality as q

rng = np.random.default_rng(0)
D = 8
real = rng.standard_normal((300, D))
same = rng.standard_normal((300, D))  # a fresh draw from the same distribution
shifted = rng.standard_normal((300, D)) + 2.0


def test_frechet_distance_is_near_zero_for_one_distribution_and_the_mean_shift_otherwise():
    assert q.frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    assert q.frechet_distance(real, same) < 0.5
    # Same covariance, means 2 apart in every dimension: FD = ||mu1 - mu2||^2 = 4 * D (plus sampling noise).
    assert q.frechet_distance(real, shifted) == pytest.approx(4 * D, rel=0.15)


def test_kid_is_unbiased_near_zero_and_grows_with_the_gap():
    same_mean, same_std = q.kernel_distance(real, same, subsets=50, subset_size=100)
    far_mean, _ = q.kernel_distance(real, shifted, subsets=50, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 0.05  # unbiased: centred on zero, may go negative
    assert far_mean > 1.0 and far_mean > 20 * abs(same_mean)
    with pytest.raises(ValueError, match="subset size"):
        q.kernel_distance(real[:10], same[:5], subset_size=8)


def test_knn_precision_recall_separate_realism_from_coverage():
    p, r = q.knn_precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    p, r = q.knn_precision_recall(real, shifted)
    assert p < 0.2 and r < 0.2
    # A generator that collapsed onto a few real points: realistic (precision 1) but no coverage.
    collapsed = np.repeat(real[:3], 100, axis=0) + 1e-3 * rng.standard_normal((300, D))
    p, r = q.knn_precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.1


def test_memorization_flags_copies_and_not_new_samples():
    train, heldout = real[:200], real[200:]
    copies = train[:50] + 1e-4 * rng.standard_normal((50, D))
    m = q.memorization(train, copies, heldout)
    assert m["close_rate"] == 1.0 and m["median_ratio"] < 0.01
    fresh = q.memorization(train, same[:100], heldout)
    assert fresh["close_rate"] < 0.2 and 0.7 < fresh["median_ratio"] < 1.4


def test_synthetic_only_training_serves_the_synthetic_clips_alone():
    import torch

    from ser.data.corpora import Clip
    from ser.data.datamodule import ClipDataset, LabelledClips, SERDataModule
    from ser.data.splits import make_split

    emotions = ["neutral", "angry"]
    clips = [Clip(f"{s}_{e}_{k}.wav", e, s, "toy") for s in ("a", "b", "c", "d") for e in emotions for k in range(2)]
    data = LabelledClips(clips, [torch.randn(1, 8, 5) for _ in clips], emotions)
    split = make_split(data.speakers, [c.emotion for c in clips], "loso", 0)
    dm = SERDataModule(data, split, normalization="global", batch_size=100)
    dm.extra_train = ClipDataset([torch.zeros(1, 8, 5)] * 6, np.array([1] * 6), ["synthetic"] * 6,
                                dm.train_pipeline, train=True)
    real_and_synthetic = next(iter(dm.train_dataloader()))[1]
    assert len(real_and_synthetic) == len(split.train) + 6
    dm.extra_only = True
    synthetic_only = next(iter(dm.train_dataloader()))[1]
    assert synthetic_only.tolist() == [1] * 6
    assert dm.class_counts().tolist() == [0, 6]


def test_training_never_ends_an_epoch_on_a_batch_of_one():
    # EmoDB fold 3 without validation speakers has 16k+1 training clips: the last batch of one
    # crashed encoder_finetune's BatchNorm on the GPU run of 2026-11-27.
    import torch

    from ser.data.corpora import Clip
    from ser.data.datamodule import LabelledClips, SERDataModule
    from ser.data.splits import make_split

    emotions = ["neutral", "angry"]
    clips = [Clip(f"{s}_{e}_{k}.wav", e, s, "toy") for s in ("a", "b", "c", "d") for e in emotions for k in range(3)]
    data = LabelledClips(clips, [torch.randn(1, 8, 5) for _ in clips], emotions)
    split = make_split(data.speakers, [c.emotion for c in clips], "loso", 0, n_val_speakers=0)
    n = len(split.train)
    assert n == 18
    for batch_size, sizes in [(17, [17]), (6, [6, 6, 6]), (4, [4, 4, 4, 4, 2])]:
        dm = SERDataModule(data, split, normalization="global", batch_size=batch_size)
        assert [len(y) for _, y in dm.train_dataloader()] == sizes
    dm = SERDataModule(data, split, normalization="global", batch_size=5)
    assert [len(y) for _, y in dm.test_dataloader()] == [5, 1]  # evaluation keeps every clip
