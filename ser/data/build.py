"""From a `dataset` config to labelled spectrograms: pick the adapter, extract (cached) features."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ser.data.corpora import Corpus, combine, load_emodb, load_folder, load_manifest, load_ravdess
from ser.data.datamodule import LabelledMels
from ser.data.synthetic import make_synthetic_corpus
from ser.emotions import canonical, ordered
from ser.features.cache import FeatureCache, FrontEnd
from ser.features.mel import MelParams
from ser.features.smile import SmileFunctionals, SmileLLD

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


def functionals_front_end(cfg_features) -> SmileFunctionals | None:
    """The per-clip openSMILE functionals a `features` config asks for beside its frames
    (`functionals: ComParE_2016`), decoded like the frames; None when it asks for none."""
    name = cfg_features.get("functionals")
    if not name:
        return None
    return SmileFunctionals(name, cfg_features["sr"], cfg_features["min_duration"], cfg_features["max_duration"])


def labelled_mels(corpus: Corpus, front_end, cache_dir: str | Path, workers: int = 0,
                  functionals: SmileFunctionals | None = None) -> LabelledMels:
    """Cached features for every usable clip; with `functionals`, also each clip's functionals
    (a clip missing either is skipped, with the reason)."""
    paths = [c.path for c in corpus.clips]
    features, skipped = FeatureCache(Path(cache_dir) / "features", front_end).get_many(paths, workers=workers)
    vectors = {}
    if functionals is not None:
        usable = [p for p in paths if p in features]
        vectors, more = FeatureCache(Path(cache_dir) / "features", functionals).get_many(usable, workers=workers)
        skipped = skipped + [dict(s, reason=f"functionals: {s['reason']}") for s in more]
    clips = [c for c in corpus.clips if c.path in features and (functionals is None or c.path in vectors)]
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    emotions = ordered(c.emotion for c in clips)
    mels = [torch.from_numpy(features[c.path]).unsqueeze(0) for c in clips]
    side = None
    if functionals is not None:
        side = [torch.from_numpy(np.nan_to_num(vectors[c.path], nan=0.0, posinf=0.0, neginf=0.0)).float() for c in clips]
    return LabelledMels(clips=clips, mels=mels, emotions=emotions, skipped=corpus.skipped + skipped, functionals=side)
