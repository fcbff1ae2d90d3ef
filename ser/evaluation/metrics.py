"""SER metrics on one test set: UA (macro recall = balanced accuracy), WA (accuracy), macro-F1,
the confusion matrix, and bootstrap confidence intervals over test clips."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)


def ua_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Recall averaged over the classes that occur in the targets (scikit-learn's balanced accuracy,
    on a confusion matrix, which is what DDP processes can sum).

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
        "ua": unweighted_accuracy(y_true, y_pred),
        "wa": float(multiclass_accuracy(p, t, num_classes, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, t, num_classes, average="macro")),
        "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
        "confusion": confusion.tolist(),
    }


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: recall averaged over the classes present in `y_true`, as scikit-learn's
    balanced_accuracy_score computes it (tests/test_splits_metrics.py holds the two equal). Counted
    here with numpy because the bootstrap calls it thousands of times per summary, and sklearn's
    input validation made that 100 times slower."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes, t = np.unique(y_true, return_inverse=True)
    hits = np.bincount(t, weights=y_true == y_pred, minlength=len(classes))
    return float(np.mean(hits / np.bincount(t, minlength=len(classes))))


def bootstrap_ci(y_true, y_pred, metric=unweighted_accuracy, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, groups=None) -> tuple[float, float]:
    """Percentile bootstrap over test clips (scipy.stats.bootstrap, clips resampled with their
    labels): how much the metric moves with the luck of the sample. `groups` (one id per
    prediction, e.g. the clip's path when several seeds predicted it) resamples whole groups, so
    a clip predicted once per seed is not counted as that many independent clips."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if groups is None:
        groups = np.arange(len(y_true))
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(ids) < 2:  # nothing to resample
        value = metric(y_true, y_pred)
        return value, value
    order = np.argsort(inverse, kind="stable")  # rows grouped: group g is order[start[g]:start[g] + size[g]]
    size = np.bincount(inverse)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])

    def resampled(picked):
        picked = np.asarray(picked, dtype=int)
        counts = size[picked]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = order[np.repeat(start[picked], counts) + offsets]
        return metric(y_true[rows], y_pred[rows])

    with warnings.catch_warnings():  # a resample with one distinct value: a degenerate distribution warning
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(len(ids)),), resampled, vectorized=False, n_resamples=n_boot,
                              confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval for the mean of `values` (e.g. UA over folds, or paired
    differences); a single value is its own interval."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.all(v == v[0]):
        return float(v.mean()), float(v.mean())
    ci = stats.ttest_1samp(v, 0.0).confidence_interval(level)
    return float(ci.low), float(ci.high)


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are skipped and stay
    None): controls the family-wise error rate without assuming the tests are independent."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(present)
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
