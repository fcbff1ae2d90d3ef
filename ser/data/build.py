"""From a `dataset` config to labelled spectrograms: pick the adapter, extract (cached) features."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ser.data.corpora import Corpus, combine, load_emodb, load_folder, load_manifest, load_ravdess
from ser.data.datamodule import LabelledMels
from ser.data.synthetic import make_synthetic_corpus
from ser.emotions import canonical, ordered
from ser.features.cache import FeatureCache, FrontEnd
from ser.features.mel import MelParams
from ser.features.smile import SmileLLD

log = logging.getLogger(__name__)


def load_corpus(spec, cache_dir: str | Path) -> Corpus:
    """`spec` is a dataset config node (or dict) with a `kind`; see conf/dataset/*.yaml."""
    kind = spec["kind"]
    if kind == "emodb":
        corpus = load_emodb(spec["root"])
    elif kind == "ravdess":
        corpus = load_ravdess(spec["root"])
    elif kind == "folder":
        corpus = load_folder(spec["root"], spec.get("speaker_regex"), name=spec.get("name", "folder"))
    elif kind == "manifest":
        corpus = load_manifest(spec["root"], name=spec.get("name", "manifest"))
    elif kind == "synthetic":
        root = make_synthetic_corpus(
            Path(cache_dir) / "corpora", emotions=tuple(spec["emotions"]), n_speakers=spec["n_speakers"],
            clips_per_speaker_emotion=spec["clips_per_speaker_emotion"], seed=spec.get("seed", 0),
        )
        corpus = load_folder(root, name="synthetic")
    elif kind == "combined":
        corpus = combine([load_corpus(part, cache_dir) for part in spec["parts"]],
                         shared_only=spec.get("shared_only", False))
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    if kind != "synthetic" and spec.get("emotions"):
        corpus = corpus.restrict([canonical(e) for e in spec["emotions"]])
    if not corpus.clips:
        raise ValueError(f"dataset {spec.get('name', kind)} has no usable clips ({len(corpus.skipped)} skipped)")
    return corpus


def front_end_from(cfg_features):
    """The front end a `features` config describes (conf/features/*.yaml): log-mel by default,
    or `kind: smile_lld` for openSMILE's frame-level descriptors. Both give (channels, frames)."""
    kind = cfg_features.get("kind", "mel")
    durations = {"min_duration": cfg_features["min_duration"], "max_duration": cfg_features["max_duration"]}
    if kind == "smile_lld":
        return SmileLLD(feature_set=cfg_features["feature_set"], deltas=bool(cfg_features["deltas"]),
                        sr=cfg_features["sr"], **durations)
    if kind != "mel":
        raise ValueError(f"unknown features.kind {kind!r}; choose mel or smile_lld")
    mel = MelParams(**{k: cfg_features[k] for k in ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "ref")})
    return FrontEnd(mel=mel, **durations)


def labelled_mels(corpus: Corpus, front_end, cache_dir: str | Path, workers: int = 0) -> LabelledMels:
    cache = FeatureCache(Path(cache_dir) / "features", front_end)
    features, skipped = cache.get_many([c.path for c in corpus.clips], workers=workers)
    clips = [c for c in corpus.clips if c.path in features]
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    emotions = ordered(c.emotion for c in clips)
    mels = [torch.from_numpy(features[c.path]).unsqueeze(0) for c in clips]
    return LabelledMels(clips=clips, mels=mels, emotions=emotions, skipped=corpus.skipped + skipped)
