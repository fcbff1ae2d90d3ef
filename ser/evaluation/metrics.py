"""SER metrics on one test set: UA (macro recall = balanced accuracy), WA (accuracy), macro-F1,
the confusion matrix, and bootstrap confidence intervals over test clips."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def ua_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Recall averaged over the classes that occur in the targets.

    Not torchmetrics' macro accuracy: that one keeps a class absent from the targets whenever it
    was predicted (recall 0), so a test speaker with no 'disgust' clips is scored out of 7 classes
    the moment one clip is called disgust (EmoDB's speaker 08 is such a speaker).
    """
    support = confusion.sum(dim=1)
    present = support > 0
    return (confusion.diagonal()[present].double() / support[present]).mean().float()


class UnweightedAccuracy(Metric):
    """UA (balanced accuracy) as a torchmetrics Metric: accumulates the confusion matrix (summed
    across DDP processes) and averages recall over the classes present in the targets."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        self.confusion += multiclass_confusion_matrix(preds, target, self.num_classes).to(self.confusion)

    def compute(self) -> torch.Tensor:
        return ua_from_confusion(self.confusion)


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    t, p = torch.as_tensor(np.asarray(y_true)), torch.as_tensor(np.asarray(y_pred))
    confusion_t = multiclass_confusion_matrix(p, t, num_classes)
    confusion = confusion_t.numpy()
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(num_classes, np.nan), where=support > 0)
    return {
        "ua": float(ua_from_confusion(confusion_t)),
        "wa": float(multiclass_accuracy(p, t, num_classes, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, t, num_classes, average="macro")),
        "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
        "confusion": confusion.tolist(),
    }


def unweighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def bootstrap_ci(y_true, y_pred, metric=unweighted_accuracy, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap over test clips: how much the metric moves with the luck of the sample."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    stats = np.array([metric(y_true[i], y_pred[i]) for i in rng.integers(0, n, size=(n_boot, n))])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
