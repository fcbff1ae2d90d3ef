"""aug.synthetic.filter: keep only the synthetic spectrograms that real speech vouches for.

A judge trained on the fold's real training clips alone (never a test or validation speaker)
scores every sample of the pool; a sample is kept when the judge gives its intended emotion a
probability of at least the threshold. Two judges (`aug.synthetic.judge`):

- bands (`BandJudge`): a logistic regression on each mel band's mean and spread over time,
  standardised per speaker, with the pool standardised as one more speaker, as the classifier
  normalises it. Simple, fast, and there for every model; but weak where the emotions are hard:
  on RAVDESS it passes only 18-25% of held-out actors' *real* clips (docs/benchmarks.md), so
  there it mostly measures itself.
- classifier (`ProbeJudge`): the run's own linear probe on a frozen speech encoder, fitted on the
  real training clips alone (exactly what aug=none trains), scoring each sample after it passes
  through the encoder as the run will feed it. As good a judge as the run's classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ser.data.datamodule import ExtraClips
from ser.diffusion.synthetic_set import SYNTHETIC_SPEAKER
from ser.errors import ConfigError
from ser.models.classical import predict_extra
from ser.models.linear_model import LinearModel


def band_statistics(mels) -> np.ndarray:
    """(clips, 2 x bands): each band's mean and standard deviation over the clip's frames (dB)."""
    return np.stack([torch.cat([m.float().mean(dim=-1), m.float().std(dim=-1)], dim=-1).flatten().numpy()
                     for m in mels]).astype(np.float64)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)


JUDGES = ("bands", "classifier")  # aug.synthetic.judge
# Where the classifier judge exists; the fix where it does not.
CLASSIFIER_JUDGE = ("aug.synthetic.judge=classifier scores samples with the run's linear probe on a speech encoder "
                    "(features=encoder, model=encoder_linear or encoder_lda)")


def passes(probabilities: np.ndarray, labels, threshold: float) -> np.ndarray:
    """Mask of the samples whose intended emotion gets probability >= `threshold`."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"aug.synthetic.filter={threshold}: a probability threshold in (0, 1), or null for no filter")
    labels = np.asarray(labels)
    return probabilities[np.arange(len(labels)), labels] >= threshold


class BandJudge:
    """A logistic regression on the band statistics of the fold's real training clips."""
    description = "logistic regression on band mean/std, real training clips"

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


class ProbeJudge:
    """The run's linear probe fitted on the real training clips alone (`probe`), scoring samples
    through the run's front end: `encode` takes the samples to what the probe reads (each one's
    encoder layers), and the samples are standardised together as one more speaker, as the run
    standardises the synthetic clips it trains on."""

    def __init__(self, cfg, data, probe: LinearModel, encode: Callable[[list], list], description: str):
        self.cfg, self.data, self.probe, self.encode, self.description = cfg, data, probe, encode, description

    def probabilities(self, mels) -> np.ndarray:
        encoded = self.encode(list(mels))
        # The labels are unused: the probe scores every emotion.
        samples = ExtraClips(encoded, np.zeros(len(encoded), dtype=int), [SYNTHETIC_SPEAKER] * len(encoded))
        return predict_extra(self.cfg, self.data, self.probe, samples)
