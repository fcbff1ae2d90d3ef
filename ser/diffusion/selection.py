"""aug.synthetic.filter: keep only the synthetic spectrograms that real speech vouches for.

A judge trained on the fold's real training clips alone (never a test or validation speaker)
scores every sample of the pool; a sample is kept when the judge gives its intended emotion a
probability of at least the threshold. The judge is deliberately simple and fast (a logistic
regression on each mel band's mean and spread over time, standardised per speaker, with the pool
standardised as one more speaker, as the classifier normalises it), so every run can afford it.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ser.errors import ConfigError


def band_statistics(mels) -> np.ndarray:
    """(clips, 2 x bands): each band's mean and standard deviation over the clip's frames (dB)."""
    return np.stack([torch.cat([m.float().mean(dim=-1), m.float().std(dim=-1)], dim=-1).flatten().numpy()
                     for m in mels]).astype(np.float64)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)


class EmotionJudge:
    """A classifier of the fold's real training clips that scores synthetic samples."""

    def __init__(self, mels: list[torch.Tensor], labels: np.ndarray, speakers: list[str], num_classes: int):
        x = band_statistics(mels)
        speakers = np.asarray(speakers)
        for spk in np.unique(speakers):  # per-speaker standardisation: label-free, as the classifier's
            x[speakers == spk] = _standardise(x[speakers == spk])
        self.num_classes = num_classes
        self.model = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(x, labels)

    def probabilities(self, mels) -> np.ndarray:
        """(samples, classes): each sample's class probabilities, the samples standardised together."""
        proba = self.model.predict_proba(_standardise(band_statistics(mels)))
        out = np.zeros((len(proba), self.num_classes))
        out[:, self.model.classes_] = proba
        return out

    def keep(self, mels, labels, threshold: float) -> np.ndarray:
        """Mask of the samples whose intended emotion gets probability >= `threshold`."""
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"aug.synthetic.filter={threshold}: a probability threshold in (0, 1), or null for no filter")
        labels = np.asarray(labels)
        return self.probabilities(mels)[np.arange(len(labels)), labels] >= threshold
