"""From configs to data: the corpus a `dataset` config names, the front end a `features` config
names, every usable clip with its (cached) features, and the run's speaker-independent split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ser.data.corpora import Corpus, combine, load_emodb, load_folder, load_manifest, load_ravdess
from ser.data.datamodule import LabelledClips
from ser.data.splits import Split, make_split, subsample_training
from ser.data.synthetic import make_synthetic_corpus
from ser.emotions import canonical, ordered
from ser.errors import ConfigError, DataError, invalid_choice
from ser.features.augment import AugmentedFrontEnd
from ser.features.cache import FeatureCache
from ser.features.encoder import EncoderInput, SpeechEncoder
from ser.features.mel import LogMel, MelParams
from ser.features.smile import SmileFunctionals, SmileLLD

log = logging.getLogger(__name__)

DATASET_KINDS = ("emodb", "ravdess", "folder", "manifest", "synthetic", "combined")
# Front ends by name. A whitelist, not a `_target_`: model.json files (which anyone may share)
# name their front end, and loading one must never run code the file names.
FRONT_ENDS = ("mel", "smile_lld", "encoder", "encoder_input")
# What identifies a speech encoder's features beyond its name: the weights that made the hidden
# layers, or the extractor settings that made the encoder's input. Recorded at export.
DIGESTS = {"encoder": "weights_digest", "encoder_input": "extractor_digest"}


def load_corpus(spec, cache_dir: str | Path) -> Corpus:
    """`spec` is a dataset config node (or dict); see conf/dataset/*.yaml."""
    corpus = _load(spec["kind"], spec, cache_dir)
    if spec["kind"] != "synthetic" and spec["emotions"]:
        corpus = corpus.restrict([canonical(e) for e in spec["emotions"]])
    if not corpus.clips:
        raise DataError(f"dataset {spec['name']} has no usable clips ({len(corpus.skipped)} skipped)")
    return corpus


def _load(kind: str, spec, cache_dir) -> Corpus:
    if kind == "emodb":
        return load_emodb(spec["root"])
    if kind == "ravdess":
        return load_ravdess(spec["root"])
    if kind == "folder":
        return load_folder(spec["root"], spec["speaker_regex"], name=spec["name"])
    if kind == "manifest":
        return load_manifest(spec["root"], name=spec["name"])
    if kind == "synthetic":
        root = make_synthetic_corpus(
            Path(cache_dir) / "corpora", emotions=tuple(spec["emotions"]), n_speakers=spec["n_speakers"],
            clips_per_speaker_emotion=spec["clips_per_speaker_emotion"], seed=spec["seed"],
        )
        return load_folder(root, name="synthetic")
    if kind == "combined":
        return combine([_load(part["kind"], part, cache_dir) for part in spec["parts"]], shared_only=spec["shared_only"])
    raise invalid_choice("dataset.kind", kind, DATASET_KINDS)


def front_end_from(cfg_features):
    """The front end a `features` config (or a model.json's copy of it) describes: log-mel
    (`kind: mel`) or openSMILE's frame-level descriptors (`kind: smile_lld`), both (rows, frames),
    or a pretrained speech encoder's hidden layers (`kind: encoder`), (layers, dim, frames), or
    what that encoder takes, for fine-tuning it (`kind: encoder_input`), (rows, frames)."""
    kind = cfg_features["kind"]
    durations = {"min_duration": cfg_features["min_duration"], "max_duration": cfg_features["max_duration"]}
    if kind == "smile_lld":
        return SmileLLD(feature_set=cfg_features["feature_set"], deltas=bool(cfg_features["deltas"]),
                        sr=cfg_features["sr"], **durations)
    if kind == "encoder":
        e = cfg_features["encoder"]
        # model.json files written before trim_db existed have none: they encoded untrimmed clips.
        return SpeechEncoder(name=str(e["name"]), window=e["window"], trim_db=e.get("trim_db"), **durations)
    if kind == "encoder_input":
        return EncoderInput(name=str(cfg_features["encoder"]["name"]), **durations)
    if kind == "mel":
        mel = MelParams(**{k: cfg_features[k] for k in ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "ref")})
        return LogMel(mel=mel, **durations)
    raise invalid_choice("features.kind", kind, FRONT_ENDS)


def functionals_front_end(cfg_features) -> SmileFunctionals | None:
    """The per-clip openSMILE functionals a `features` config asks for beside its frames
    (`functionals: ComParE_2016`), decoded like the frames; None when it asks for none."""
    name = cfg_features["functionals"]
    if not name:
        return None
    return SmileFunctionals(name, cfg_features["sr"], cfg_features["min_duration"], cfg_features["max_duration"])


def labelled_clips(corpus: Corpus, front_end, cache_dir: str | Path, workers: int = 0,
                   functionals: SmileFunctionals | None = None) -> LabelledClips:
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
    # (rows, frames) gets a channel axis -> (1, rows, frames); an encoder's (layers, dim, frames) has one.
    frames = [with_channels(torch.from_numpy(features[c.path])) for c in clips]
    side = None
    if functionals is not None:
        side = [torch.from_numpy(np.nan_to_num(vectors[c.path], nan=0.0, posinf=0.0, neginf=0.0)).float() for c in clips]
    return LabelledClips(clips=clips, features=frames, emotions=emotions, skipped=corpus.skipped + skipped, functionals=side)


def same_clips_with(cfg: DictConfig, data: LabelledClips, front_end) -> LabelledClips:
    """`data`'s clips, in the same order (so a split's indices still hold), with another front
    end's cached features: e.g. the log-mels a fold's generator learns from, in a run whose
    classifier reads a speech encoder."""
    paths = [c.path for c in data.clips]
    got, skipped = FeatureCache(Path(cfg.paths.cache_dir) / "features", front_end).get_many(paths, workers=cfg.features.workers)
    if skipped:
        raise DataError(f"{len(skipped)} clip(s) that the run's front end accepted fail in {front_end.kind}: {skipped[:3]}")
    return LabelledClips(clips=data.clips, features=[with_channels(torch.from_numpy(got[p])) for p in paths],
                         emotions=data.emotions)


def augmented_clips(cfg: DictConfig, data: LabelledClips, indices, functionals=None) -> LabelledClips:
    """aug=audio: `aug.audio.variants` waveform-augmented copies of the clips at `indices` (the
    training clips), through the run's front end, cached (ser/features/augment.py). Each copy keeps
    its source clip (path, speaker, emotion); `functionals` (a SmileFunctionals front end, for the
    models that read functionals) adds each copy's functionals too. A copy that fails is skipped
    with its reason."""
    a = cfg.aug.audio
    spec = json.dumps(OmegaConf.to_container(a.transforms, resolve=True), sort_keys=True)
    cache_dir = Path(cfg.paths.cache_dir) / "features"
    sources = [data.clips[int(i)] for i in indices]
    paths = [c.path for c in sources]
    clips, frames, side, skipped = [], [], [], []
    # Copies are numbered per run seed, so runs of another seed train on other random draws.
    for v in range(int(cfg.seed) * int(a.variants), (int(cfg.seed) + 1) * int(a.variants)):
        got, bad = FeatureCache(cache_dir, AugmentedFrontEnd(front_end_from(cfg.features), spec, v)).get_many(
            paths, workers=cfg.features.workers)
        vectors = {}
        if functionals is not None:
            vectors, more = FeatureCache(cache_dir, AugmentedFrontEnd(functionals, spec, v)).get_many(
                [p for p in paths if p in got], workers=cfg.features.workers)
            bad = bad + more
        skipped += [dict(s, reason=f"aug=audio variant {v}: {s['reason']}") for s in bad]
        for c in sources:
            if c.path in got and (functionals is None or c.path in vectors):
                clips.append(c)
                frames.append(with_channels(torch.from_numpy(got[c.path])))
                if functionals is not None:
                    side.append(torch.from_numpy(np.nan_to_num(vectors[c.path], nan=0.0, posinf=0.0, neginf=0.0)).float())
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    return LabelledClips(clips=clips, features=frames, emotions=data.emotions, skipped=skipped,
                         functionals=side if functionals is not None else None)


def with_channels(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 2 else x


def prepare(cfg: DictConfig, functionals: bool) -> tuple[LabelledClips, Split]:
    """The run's corpus with its cached features, and its split (the same for every model kind
    and for the generators). `functionals`: also each clip's openSMILE functionals
    (`features.functionals`), for the models that read them."""
    if functionals and not cfg.features.functionals:
        raise ConfigError("per-clip functionals were asked for, but features.functionals is null; "
                          "set it (e.g. features=compare_lld_functionals)")
    cache_dir = Path(cfg.paths.cache_dir)
    corpus = load_corpus(OmegaConf.to_container(cfg.dataset, resolve=True), cache_dir)
    data = labelled_clips(corpus, front_end_from(cfg.features), cache_dir, workers=cfg.features.workers,
                          functionals=functionals_front_end(cfg.features) if functionals else None)
    s = cfg.split
    split = make_split(data.speakers, [c.emotion for c in data.clips], protocol=s.protocol, fold=s.fold, k=s.k,
                       n_val_speakers=s.n_val_speakers, val_fraction=s.val_fraction, seed=s.seed,
                       folds=OmegaConf.to_container(s.folds) if s.folds else None)
    if cfg.dataset.train_fraction < 1.0:
        # Seeded by the split, not the run: every training seed and the fold's generator see the
        # same subset, so "identical folds" holds in low-data studies too.
        split.train_before_subsampling = split.train
        split.train = subsample_training(split.train, data.labels, cfg.dataset.train_fraction, seed=s.seed)
    return data, split
