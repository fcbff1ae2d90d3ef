"""SER metrics on one test set: UA (macro recall = balanced accuracy), WA (accuracy), macro-F1,
the confusion matrix, and bootstrap confidence intervals over test clips."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    t, p = torch.as_tensor(np.asarray(y_true)), torch.as_tensor(np.asarray(y_pred))
    confusion = multiclass_confusion_matrix(p, t, num_classes).numpy()
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(num_classes, np.nan), where=support > 0)
    return {
        # torchmetrics' macro average skips classes absent from the targets, as UA should.
        "ua": float(multiclass_accuracy(p, t, num_classes, average="macro")),
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
