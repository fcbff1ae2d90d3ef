"""The built-in corpus is deterministic, and hard enough that chance and 100% are both failures."""

import hashlib

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ser.data.build import labelled_clips, load_corpus
from ser.data.synthetic import make_synthetic_corpus
from ser.features.mel import LogMel


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.wav")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_arguments_same_bytes(tmp_path):
    a = make_synthetic_corpus(tmp_path / "a", n_speakers=2, clips_per_speaker_emotion=2)
    b = make_synthetic_corpus(tmp_path / "b", n_speakers=2, clips_per_speaker_emotion=2)
    c = make_synthetic_corpus(tmp_path / "c", n_speakers=2, clips_per_speaker_emotion=2, seed=1)
    assert digest(a) == digest(b) != digest(c)
    assert not list(tmp_path.glob("*/.building-*"))


@pytest.mark.slow
def test_default_corpus_is_learnable_but_not_trivial(cache_dir):
    """A linear probe on per-band log-mel mean and std, leave-one-speaker-out."""
    spec = {"kind": "synthetic", "emotions": ["neutral", "happy", "sad", "angry"], "n_speakers": 6,
            "clips_per_speaker_emotion": 10, "seed": 0}
    data = labelled_clips(load_corpus(spec, cache_dir), LogMel(), cache_dir, workers=2)
    assert len(data.clips) == 240 and len(set(data.speakers)) == 6
    x = np.stack([torch.cat([m[0].mean(1), m[0].std(1)]).numpy() for m in data.features])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    pred = cross_val_predict(probe, x, data.labels, groups=data.speakers, cv=LeaveOneGroupOut())
    ua = balanced_accuracy_score(data.labels, pred)
    assert 0.45 < ua < 0.9, ua  # chance is 0.25
