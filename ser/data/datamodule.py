"""The Lightning DataModule: labelled clips + their cached features + a split -> train/val/test loaders."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ser.data.corpora import Clip
from ser.data.splits import Split
from ser.features.transforms import FeatureNormalizer, FunctionalsNormalizer, InputPipeline, collate_inputs


@dataclass
class LabelledClips:
    """Clips that survived feature extraction, aligned with their frame features."""

    clips: list[Clip]
    features: list[torch.Tensor]  # (1, rows, frames): log-mel dB, or openSMILE descriptors
    emotions: list[str]  # class order
    skipped: list[dict] = field(default_factory=list)
    functionals: list[torch.Tensor] | None = None  # (D,) per clip, for models that also read openSMILE functionals

    @property
    def labels(self) -> np.ndarray:
        index = {e: i for i, e in enumerate(self.emotions)}
        return np.array([index[c.emotion] for c in self.clips], dtype=np.int64)

    @property
    def speakers(self) -> list[str]:
        return [c.speaker for c in self.clips]


@dataclass
class ExtraClips:
    """Training examples beside the real clips that are not clips of the corpus (generated
    spectrograms, encoded): their features, labels and the speaker each is normalised as."""

    features: list[torch.Tensor]
    labels: np.ndarray
    speakers: list[str]
    functionals: list[torch.Tensor] | None = None


class ClipDataset(Dataset):
    """Model inputs and labels: a clip's frame features through their pipeline, paired with the
    clip's normalised functionals when the model reads them too."""

    def __init__(self, features, labels, speakers, pipeline: InputPipeline, train: bool,
                 functionals: list[torch.Tensor] | None = None, functionals_normalizer: FunctionalsNormalizer | None = None):
        self.features, self.labels, self.speakers = features, labels, speakers
        self.pipeline, self.train = pipeline, train
        self.functionals, self.functionals_normalizer = functionals, functionals_normalizer

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        x = self.pipeline(self.features[i], self.speakers[i], self.train)
        if self.functionals is not None:
            x = (x, self.functionals_normalizer(self.functionals[i], self.speakers[i]))
        return x, int(self.labels[i])


class SERDataModule(pl.LightningDataModule):
    def __init__(self, data: LabelledClips, split: Split, normalization: str = "global", size=None,
                 frames: int | None = None, resize_method: str = "bilinear", specaug: dict | None = None,
                 pad: str = "zero", batch_size: int = 32, num_workers: int = 0, extra_train: Dataset | None = None):
        super().__init__()
        self.data, self.split = data, split
        self.batch_size, self.num_workers = batch_size, num_workers
        self.extra_train = extra_train  # e.g. synthetic spectrograms (a labelled ClipDataset of their own)
        self.extra_only = False  # train on extra_train alone (a synthetic-only classifier), real clips still validate and test
        labels, speakers = data.labels, data.speakers
        self.normalizer = FeatureNormalizer(normalization)
        if normalization == "global":
            self.normalizer.fit([data.features[i] for i in split.train], [speakers[i] for i in split.train])
        elif normalization == "speaker":
            # Label-free statistics per speaker, test speakers included (transductive).
            self.normalizer.fit(data.features, speakers)
        self.functionals_normalizer = None
        if data.functionals is not None:
            # The same statistics scheme as the frames: training clips, or every speaker's own clips.
            self.functionals_normalizer = FunctionalsNormalizer(normalization)
            fit_on = split.train if normalization == "global" else range(len(data.clips))
            self.functionals_normalizer.fit([data.functionals[i] for i in fit_on], [speakers[i] for i in fit_on])
        self.train_pipeline = InputPipeline(self.normalizer, size, frames, resize_method, specaug, pad)
        self.eval_pipeline = InputPipeline(self.normalizer, size, frames, resize_method, None, pad)
        self._sets = {
            name: ClipDataset([data.features[i] for i in idx], labels[idx], [speakers[i] for i in idx],
                             self.train_pipeline if name == "train" else self.eval_pipeline, train=name == "train",
                             functionals=None if data.functionals is None else [data.functionals[i] for i in idx],
                             functionals_normalizer=self.functionals_normalizer)
            for name, idx in (("train", split.train), ("val", split.val), ("test", split.test))
        }

    def training_copies(self, copies: LabelledClips) -> ClipDataset:
        """A training set of augmented copies of real training clips (aug=audio): each is normalised
        as its source speaker and goes through the training pipeline like a real clip."""
        return ClipDataset(copies.features, copies.labels, copies.speakers, self.train_pipeline, train=True,
                           functionals=copies.functionals, functionals_normalizer=self.functionals_normalizer)

    @property
    def num_classes(self) -> int:
        return len(self.data.emotions)

    def class_counts(self) -> np.ndarray:
        """Training examples per class, synthetic ones included (they change the balance)."""
        labels = self.data.labels[self.split.train]
        if self.extra_train is not None:
            extra = np.asarray(self.extra_train.labels)
            labels = extra if self.extra_only else np.concatenate([labels, extra])
        return np.bincount(labels, minlength=self.num_classes)

    def dataset(self, name: str) -> Dataset:
        return self._sets[name]

    def _collate(self, batch):
        xs, ys = zip(*batch)
        return collate_inputs(list(xs), self.train_pipeline.pad), torch.tensor(ys)

    def _loader(self, dataset, shuffle: bool, drop_single: bool = False):
        # A training batch of one clip breaks every BatchNorm in training mode ("Expected more than
        # 1 value per channel"): when an epoch would end on one, that clip is left out of the epoch.
        # The order is shuffled, so it is a different clip each epoch and none is lost for good.
        # Under DDP each process sees ceil(n / world) clips of its own.
        world = self.trainer.world_size if self.trainer is not None else 1
        drop_last = drop_single and math.ceil(len(dataset) / world) % self.batch_size == 1
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=drop_last, collate_fn=self._collate)

    def train_dataloader(self):
        train = self._sets["train"]
        if self.extra_only:
            train = self.extra_train
        elif self.extra_train is not None and len(self.extra_train):
            train = ConcatDataset([train, self.extra_train])
        return self._loader(train, shuffle=True, drop_single=True)

    def val_dataloader(self):
        return self._loader(self._sets["val"], shuffle=False)

    def test_dataloader(self):
        return self._loader(self._sets["test"], shuffle=False)
