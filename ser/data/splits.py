"""Speaker-independent splits: which speakers train, validate and test in fold K.

A test speaker never appears in training or validation (asserted here, recorded in every run's
results). Validation speakers come from the training side, rotating with the fold so that no
single speaker steers model selection everywhere. `listed` takes each fold's test speakers from
the config, so a published fold assignment (EmoBox's RAVDESS folds, conf/split/ravdess_emobox.yaml)
is reproduced exactly. `random` exists for comparison with papers that use it, and is labelled
speaker-dependent wherever it is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedShuffleSplit

from ser.errors import ConfigError, DataError, GeneratorFoldLeak, SpeakerLeak, invalid_choice

PROTOCOLS = ("loso", "kfold", "listed", "random", "cross_corpus")


@dataclass
class Split:
    protocol: str
    fold: int
    n_folds: int
    train: np.ndarray  # clip indices
    val: np.ndarray
    test: np.ndarray
    train_speakers: list[str]
    val_speakers: list[str]
    test_speakers: list[str]
    # In a low-data run (dataset.train_fraction < 1): the fold's whole training set, of which
    # `train` is the kept subset (a generator's step budget is counted on it). None: `train` is whole.
    train_before_subsampling: np.ndarray | None = None

    @property
    def speaker_independent(self) -> bool:
        return self.protocol != "random"

    def describe(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("train", "val", "test", "train_before_subsampling")}
        d.update(n_train=len(self.train), n_val=len(self.val), n_test=len(self.test),
                 speaker_independent=self.speaker_independent)
        if self.train_before_subsampling is not None:
            d["n_train_before_subsampling"] = len(self.train_before_subsampling)
        if not self.speaker_independent:
            d["warning"] = "split=random is speaker-dependent: test speakers also appear in training"
        return d


def make_split(
    speakers: list[str],
    labels: list[str],
    protocol: str = "loso",
    fold: int = 0,
    k: int = 5,
    n_val_speakers: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    folds: list[list[str]] | None = None,
) -> Split:
    """Split clips (given by their speaker and label) for `fold` of `protocol`.

    `folds` (protocol `listed` only): each fold's test speakers, by their full id ("ravdess:01").
    """
    if protocol not in PROTOCOLS:
        raise invalid_choice("split.protocol", protocol, PROTOCOLS)
    speakers = np.asarray(speakers)
    labels = np.asarray(labels)
    idx = np.arange(len(speakers))
    unique = sorted(set(speakers.tolist()))

    if protocol == "random":
        n_folds = k
        _check_fold(fold, n_folds, protocol)
        outer = StratifiedShuffleSplit(n_splits=n_folds, test_size=1.0 / n_folds, random_state=seed)
        train_val, test = list(outer.split(idx, labels))[fold]
        inner = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed + fold)
        tr, va = next(inner.split(train_val, labels[train_val]))
        train, val = train_val[tr], train_val[va]
    elif protocol == "cross_corpus":
        # Fold f tests every clip of the f-th corpus (sorted by name) and trains on all the others:
        # speakers are "<corpus>:<id>", so the corpus is what precedes the colon.
        corpora = np.array([s.split(":")[0] for s in speakers.tolist()])
        names = sorted(set(corpora.tolist()))
        if len(names) < 2:
            raise ConfigError(f"split=cross_corpus needs at least two corpora (dataset=combined); found {names}")
        n_folds = len(names)
        _check_fold(fold, n_folds, protocol)
        test, train_val = idx[corpora == names[fold]], idx[corpora != names[fold]]
        rest = sorted(set(speakers[train_val].tolist()))
        _check_n_val_speakers(n_val_speakers, len(rest))
        val_mask = np.isin(speakers[train_val], rest[:n_val_speakers])
        train, val = train_val[~val_mask], train_val[val_mask]
    else:
        if len(unique) < 3 or "unknown" in {s.split(":")[-1] for s in unique}:
            raise DataError(
                f"split={protocol} needs speaker identities (found {len(unique)} speaker(s): {unique[:5]}). "
                "Give speakers (manifest column `speaker`, sub-folders, or dataset.speaker_regex), "
                "or use split=random, which is speaker-dependent."
            )
        if protocol == "listed":
            test_spk, n_folds = _listed_fold(folds, unique, fold)
            test = idx[np.isin(speakers, test_spk)]
            train_val = idx[~np.isin(speakers, test_spk)]
        else:
            if protocol == "loso":
                splitter, n_folds = LeaveOneGroupOut(), len(unique)
            else:
                if k > len(unique):
                    raise ConfigError(f"split=kfold with k={k} needs at least {k} speakers; the corpus has {len(unique)}")
                splitter, n_folds = GroupKFold(n_splits=k), k
            _check_fold(fold, n_folds, protocol)
            train_val, test = list(splitter.split(idx, labels, groups=speakers))[fold]
            test_spk = sorted(set(speakers[test].tolist()))
        rest = sorted(set(speakers[train_val].tolist()))
        _check_n_val_speakers(n_val_speakers, len(rest))
        # Rotate the validation speakers with the fold: fold f validates on the speakers that
        # follow its test speakers in sorted order.
        start = (unique.index(max(test_spk)) + 1) % len(unique)
        ring = unique[start:] + unique[:start]
        val_spk = [s for s in ring if s in rest][:n_val_speakers]
        val_mask = np.isin(speakers[train_val], val_spk)
        train, val = train_val[~val_mask], train_val[val_mask]

    split = Split(
        protocol=protocol, fold=fold, n_folds=n_folds, train=np.sort(train), val=np.sort(val), test=np.sort(test),
        train_speakers=sorted(set(speakers[train].tolist())),
        val_speakers=sorted(set(speakers[val].tolist())),
        test_speakers=sorted(set(speakers[test].tolist())),
    )
    if split.speaker_independent:
        assert_speaker_disjoint(split)
    return split


def assert_speaker_disjoint(split: Split) -> None:
    test = set(split.test_speakers)
    for side, speakers in (("training", split.train_speakers), ("validation", split.val_speakers)):
        leaked = test & set(speakers)
        if leaked:
            raise SpeakerLeak(f"test speaker(s) {sorted(leaked)} also in {side} for {split.protocol} fold {split.fold}")


def assert_generator_fold_safe(generator_speakers, test_speakers, where: str = "") -> None:
    """Refuse a generator (or its samples) that was trained on any of the run's test speakers."""
    leaked = sorted(set(generator_speakers) & set(test_speakers))
    if leaked:
        raise GeneratorFoldLeak(
            f"generator{(' ' + where) if where else ''} was trained on test speaker(s) {leaked} of this run; "
            f"its samples would leak the test speakers into training. Train a generator on this fold's "
            f"training speakers only (generate.py with the same dataset, split and split.fold)."
        )


def _listed_fold(folds, unique: list[str], fold: int) -> tuple[list[str], int]:
    """Fold `fold`'s test speakers from an explicit assignment, checked against the corpus."""
    if not folds:
        raise ConfigError("split.protocol=listed needs split.folds: one list of test speakers per fold "
                          "(see conf/split/ravdess_emobox.yaml)")
    folds = [[str(x) for x in f] for f in folds]
    _check_fold(fold, len(folds), "listed")
    listed = [x for f in folds for x in f]
    unknown = sorted(set(listed) - set(unique))
    if unknown:
        raise ConfigError(f"split.folds names speaker(s) {unknown} that the corpus does not have; "
                          f"its speakers are {unique}")
    twice = sorted({x for x in listed if listed.count(x) > 1})
    if twice:
        raise ConfigError(f"split.folds lists speaker(s) {twice} in more than one fold; each speaker is tested once")
    return sorted(folds[fold]), len(folds)


def _check_fold(fold: int, n_folds: int, protocol: str) -> None:
    if not 0 <= fold < n_folds:
        raise ConfigError(f"split.fold={fold} is out of range: {protocol} has folds 0..{n_folds - 1}")


def _check_n_val_speakers(n_val_speakers: int, available: int) -> None:
    if n_val_speakers < 0:
        raise ConfigError(f"split.n_val_speakers={n_val_speakers} must be >= 0")
    if n_val_speakers >= available:
        raise ConfigError(f"split.n_val_speakers={n_val_speakers} leaves no training speaker ({available} available)")


def subsample_training(train: np.ndarray, labels, fraction: float, seed: int) -> np.ndarray:
    """Keep `fraction` of the training clips, stratified by emotion (the low-data setting)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"dataset.train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train
    labels = np.asarray(labels)[train]
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted(set(labels.tolist())):
        members = train[labels == label]
        n = max(1, int(round(fraction * len(members))))
        keep.extend(rng.choice(members, size=n, replace=False).tolist())
    return np.sort(np.asarray(keep))
