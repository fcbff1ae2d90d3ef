"""Synthetic spectrograms as extra training data for one run (aug=ddpm, aug=ddpm_only), fold safety enforced.

How many: `aug.synthetic.ratio` x the run's real training clips, per emotion in the real clips'
proportions (`classes: real`) or equally (`classes: balanced`). Which: drawn without replacement
from the fold's pool (ser/diffusion/pool.py makes or grows it when `generate: if_missing`), after
the optional filter (ser/diffusion/selection.py); a sample is used twice only when
`reuse: true` and the pool is short. When the filter passes too few samples of an emotion even
after the pool grew to its cap, the run uses those that passed and records the shortfall.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ser.data.datamodule import ClipDataset, LabelledClips, SERDataModule
from ser.data.splits import Split, assert_generator_fold_safe
from ser.diffusion.pool import MAX_POOL_FACTOR, provide_edits, provide_pool
from ser.diffusion.sdedit import load_edits
from ser.diffusion.selection import CLASSIFIER_JUDGE, JUDGES, BandJudge, passes
from ser.diffusion.synthetic_set import SYNTHETIC_SPEAKER, load_synthetic_set, synthetic_set_info
from ser.diffusion.provenance import assert_same_training_clips
from ser.errors import ConfigError, DataError, GeneratorFoldLeak, MissingSyntheticData, invalid_choice

GENERATE = ("if_missing", "never")  # aug.synthetic.generate
CLASSES = ("real", "balanced")  # aug.synthetic.classes
log = logging.getLogger(__name__)


def wants_synthetic(aug) -> bool:
    """Only aug options that define a synthetic set mix synthetic data in."""
    return "synthetic" in aug and aug.synthetic.ratio > 0


def wants_edits(aug) -> bool:
    """aug=sdedit: SDEdit variants of the real training clips."""
    return "sdedit" in aug and aug.sdedit.variants > 0


def edited_training_set(cfg, dm: SERDataModule, data: LabelledClips, split: Split) -> tuple[ClipDataset, dict]:
    """aug=sdedit for a network on log-mels: the variants (`fold_edits`), each normalised as its
    source speaker (it is that speaker's clip, moved)."""
    mels, labels, speakers, report = fold_edits(cfg, data, split)
    report.pop("sources")  # one path per variant: in the variants file, not in results.json
    return ClipDataset(mels, labels, speakers, dm.train_pipeline, train=True), report


def fold_edits(cfg, data: LabelledClips, split: Split) -> tuple[list, np.ndarray, list[str], dict]:
    """aug=sdedit: `aug.sdedit.variants` variants of every real training clip under its own emotion
    (spectrograms, labels, source speakers) and what results.json records about them. Made on
    demand (ser/diffusion/pool.py) unless `generate: never`. `data` holds log-mel features."""
    a = cfg.aug.sdedit
    if a.generate not in GENERATE:
        raise invalid_choice("aug.sdedit.generate", a.generate, GENERATE)
    if float(a.strength) == 0.0:
        # Strength 0 returns every clip unchanged (the control arm: only the route the copies take
        # to the classifier, e.g. Griffin-Lim voicing, differs from the real clips), so no generator
        # is trained or read.
        idx = [int(i) for i in split.train] * int(a.variants)
        return [data.features[i].clone() for i in idx], data.labels[idx], [data.speakers[i] for i in idx], {
            "kind": "sdedit", "path": None, "sources": [data.clips[i].path for i in idx], "n_used": len(idx),
            "variants": int(a.variants), "strength": 0.0, "generator": "none: strength 0 leaves every clip unchanged",
            "provided": None, "only": False}
    path = Path(a.path)
    provided = None
    if a.generate == "if_missing":
        if path.is_file():  # aug.sdedit.path may name another fold's variants: refuse them before training or editing
            _check_edits_fit(path, synthetic_set_info(path), cfg, data, split)
        provided = provide_edits(cfg, data, split, path)
    elif not path.is_file():
        raise MissingSyntheticData(f"no SDEdit variants for this run at {path} (aug.sdedit.generate=never); "
                                   "let train.py make them: aug.sdedit.generate=if_missing")
    mels, info = load_edits(path)
    _check_edits_fit(path, info, cfg, data, split)
    return mels, np.asarray(info["labels"]), info["speakers"], {
        "kind": "sdedit", "path": str(path), "sources": info["sources"], "n_used": len(mels), "variants": int(a.variants), "strength": info["strength"],
                     "sampler": info["sampler"], "steps": info["steps"], "guidance": info["guidance"],
                     "generator_train_speakers": info["train_speakers"], "provided": provided, "only": False}


def _check_edits_fit(path: Path, info: dict, cfg, data: LabelledClips, split: Split) -> None:
    """Variants may feed this run only if neither their generator nor their source clips include
    the run's test speakers, and they come from the run's training fraction and emotions."""
    assert_generator_fold_safe(info["train_speakers"], split.test_speakers, where=str(path))
    assert_generator_fold_safe(info["speakers"], split.test_speakers, where=f"{path} (edited clips)")
    if float(info["train_fraction"]) != float(cfg.dataset.train_fraction) or info["emotions"] != data.emotions:
        raise GeneratorFoldLeak(f"SDEdit variants {path} come from another training set (train_fraction "
                                f"{info['train_fraction']}, emotions {info['emotions']}); delete them to remake them")


def counts_needed(train_labels: np.ndarray, num_classes: int, ratio: float, classes: str) -> dict[int, int]:
    """Synthetic clips per emotion: ratio x the real ones, in the real proportions or balanced."""
    if classes not in CLASSES:
        raise invalid_choice("aug.synthetic.classes", classes, CLASSES)
    if classes == "balanced":
        per = math.ceil(ratio * len(train_labels) / num_classes)
        return {k: per for k in range(num_classes)}
    real = np.bincount(train_labels, minlength=num_classes)
    return {k: math.ceil(ratio * int(real[k])) for k in range(num_classes)}


def draw(labels: np.ndarray, usable: np.ndarray, needed: dict[int, int], reuse: bool, seed: int,
         fewer: bool = False) -> np.ndarray:
    """Indices into the pool: the first `needed[k]` usable samples of each emotion k in the pool's
    order; with `reuse`, a short emotion uses all its samples, then repeats them in a seeded random
    order, instead of failing; with `fewer`, it uses each of them once and the run has fewer of that
    emotion. The pool only ever grows at its end (its samples are already random draws of the
    generator), so taking its first samples makes a run's set independent of how far other runs
    grew the pool: a random draw from the whole pool made `aug=ddpm` give another result when it
    was rerun after `aug=ddpm_filtered` had grown it."""
    rng = np.random.default_rng(seed)
    picks = []
    for k, n in needed.items():
        candidates = np.flatnonzero((labels == k) & usable)
        if len(candidates) < n and fewer and not reuse:
            n = len(candidates)
        if len(candidates) < n and not reuse:
            raise DataError(f"the synthetic pool has {len(candidates)} usable samples of class {k}, and this run needs {n} "
                            "distinct ones")
        if n:
            if not len(candidates):
                raise DataError(f"the synthetic pool has no usable samples of class {k}")
            # Every sample once before any twice: as many distinct samples as the pool allows.
            rounds = [candidates] + [rng.permutation(candidates) for _ in range(math.ceil(n / len(candidates)) - 1)]
            picks.append(np.concatenate(rounds)[:n])
    return np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)


def synthetic_training_set(cfg, dm: SERDataModule, data: LabelledClips, split: Split, seed: int) -> tuple[ClipDataset, dict]:
    """This run's synthetic clips (`draw_synthetic`) as a labelled dataset for a network on
    log-mels, normalised like one more speaker (label-free statistics of the generator's output)."""
    chosen, labels, report = draw_synthetic(cfg, data, split, seed)
    dm.normalizer.add_speaker(SYNTHETIC_SPEAKER, chosen)
    return ClipDataset(chosen, labels, [SYNTHETIC_SPEAKER] * len(chosen), dm.train_pipeline, train=True), report


def _check_pool_fits(path: Path, info: dict, cfg, data: LabelledClips, split: Split) -> None:
    """A pool may feed this run only if its generator never heard the run's test speakers nor any
    real clip the run may not train on, and it labels the same emotions."""
    assert_generator_fold_safe(info["train_speakers"], split.test_speakers, where=str(path))
    fraction = float(cfg.dataset.train_fraction)
    if float(info["train_fraction"]) != fraction:
        # A generator that learned from more real clips than the classifier may use would smuggle
        # that data into a low-data run.
        raise GeneratorFoldLeak(f"synthetic set {path} comes from a generator trained with dataset.train_fraction="
                                f"{info['train_fraction']}; this run uses {fraction}. Generate with the same fraction.")
    assert_same_training_clips(info, data, split, where=f"the synthetic set {path}")
    if info["emotions"] != data.emotions:
        raise DataError(f"synthetic set {path} has emotions {info['emotions']}, this run has {data.emotions}")


def draw_synthetic(cfg, data: LabelledClips, split: Split, seed: int, judge=None) -> tuple[list, np.ndarray, dict]:
    """This run's synthetic spectrograms and labels, drawn from the fold's pool (made or grown
    first when allowed), and what results.json records about them. `data` holds log-mel features.
    `judge`: the filter's judge for aug.synthetic.judge=classifier (a ProbeJudge; the caller has the
    run's classifier); the bands judge is built here from `data`."""
    s, emotions = cfg.aug.synthetic, data.emotions
    if s.generate not in GENERATE:
        raise invalid_choice("aug.synthetic.generate", s.generate, GENERATE)
    path = Path(s.path)
    train_labels = data.labels[split.train]
    needed = counts_needed(train_labels, len(emotions), float(s.ratio), s.classes)
    keep = None
    if s.filter is not None:
        if s.judge not in JUDGES:
            raise invalid_choice("aug.synthetic.judge", s.judge, JUDGES)
        if s.judge == "bands":
            judge = BandJudge([data.features[i] for i in split.train], train_labels,
                              [data.speakers[i] for i in split.train], len(emotions))
        elif judge is None:
            raise ConfigError(f"{CLASSIFIER_JUDGE}; model={cfg.model.name} has none here. Use aug.synthetic.judge=bands")
        keep = lambda mels, labels: passes(judge.probabilities(mels), labels, float(s.filter))  # noqa: E731
    provided = None
    if s.generate == "if_missing":
        if path.is_file():  # aug.synthetic.path may name another fold's pool: refuse it before training or sampling
            _check_pool_fits(path, synthetic_set_info(path), cfg, data, split)
        provided = provide_pool(cfg, data, split, needed, keep)
    elif not path.is_file():
        raise MissingSyntheticData(
            f"no synthetic spectrograms for this run at {path} (aug.synthetic.generate=never). Make them with the same "
            f"dataset and fold:\n  python generate.py dataset={cfg.dataset.name} split={split.protocol} "
            f"split.fold={split.fold} diffusion={cfg.diffusion.name} seed={cfg.generator.seed} "
            f"paths.data_root={cfg.paths.data_root} paths.cache_dir={cfg.paths.cache_dir}\n"
            "(add the same dataset.* overrides you gave train.py), or let train.py make them: aug.synthetic.generate=if_missing")
    mels, labels, info = load_synthetic_set(path)
    _check_pool_fits(path, info, cfg, data, split)
    labels = labels.numpy()
    usable = np.ones(len(labels), bool) if keep is None else keep(mels, labels)
    # A filter that passes few samples of an emotion: the pool grew to its cap (ser/diffusion/pool.py),
    # so the run takes the samples that passed, each once, and records how many it lacks.
    fewer = keep is not None and s.generate == "if_missing"
    try:
        picks = draw(labels, usable, needed, bool(s.reuse), seed, fewer=fewer)
    except DataError as err:
        fixes = ["aug.synthetic.reuse=true (repeat samples)"]
        fixes.append("a lower aug.synthetic.filter" if keep is not None else
                     f"more samples (python generate.py ... sample.n_per_emotion={max(needed.values())}, or "
                     "aug.synthetic.generate=if_missing)")
        raise DataError(f"{path}: {err}; use {' or '.join(fixes)}") from None
    if not len(picks) and sum(needed.values()):
        raise DataError(f"{path}: the filter (aug.synthetic.filter={s.filter}) passed none of the {len(labels)} samples "
                        "of the pool; use a lower aug.synthetic.filter")
    chosen = [mels[i] for i in picks]
    used = np.bincount(labels[picks], minlength=len(emotions))
    shortfall = {emotions[k]: int(n - used[k]) for k, n in needed.items() if used[k] < n}
    if shortfall:
        log.warning("the filter passed too few samples of %s within %dx the pool this run needs; it trains on the %d "
                    "that passed (shortfall %s)", ", ".join(shortfall), MAX_POOL_FACTOR, len(picks), shortfall)
    per_class_pool = np.bincount(labels, minlength=len(emotions))
    per_class_kept = np.bincount(labels[usable], minlength=len(emotions))
    report = {"kind": "pool", "path": str(path), "n_used": int(len(picks)), "n_unique": int(len(np.unique(picks))),
              "ratio": float(s.ratio), "classes": s.classes, "n_per_emotion": {emotions[k]: n for k, n in needed.items()},
              "n_available": int(len(labels)), "reuse": bool(s.reuse),
              "generator_train_speakers": info["train_speakers"], "sampler": info["sampler"],
              "steps": info["steps"], "guidance": info["guidance"], "generator_seed": info.get("seed"),
              "filter": None if keep is None else {
                  "threshold": float(s.filter), "judge": judge.description,
                  "kept_fraction": round(float(usable.mean()), 4),
                  "kept_fraction_per_emotion": {e: round(float(per_class_kept[k] / max(per_class_pool[k], 1)), 4)
                                                for k, e in enumerate(emotions)},
                  "shortfall": shortfall},
              "provided": provided,
              # synthetic-only: does the generator's output alone teach the emotions of real speakers?
              "only": bool(s.only)}
    return chosen, labels[picks], report
