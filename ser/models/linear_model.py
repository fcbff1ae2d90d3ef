"""A fitted linear classifier on clip vectors (the classical path, ser/models/classical.py) as
plain arrays, saved like the networks: `model.safetensors` (each view's standardisation, column
weights, coefficients and intercepts) and `model.json` (which views, how fused). No pickle: the
decision function of scikit-learn's linear classifiers (logistic regression, LDA, LinearSVC,
ridge) is z @ coef.T + intercept, which is all a prediction needs. SVC's one-vs-one decision is
not such a map (even with a linear kernel), so an SVC run is not exported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ser.io import atomic_dir


@dataclass
class LinearView:
    """One fitted classifier: the clip views it reads (`parts`, concatenated in early fusion), its
    standardisation, column weights, coefficients, and its weight in the late-fusion average."""

    parts: list[str]
    mean: np.ndarray
    scale: np.ndarray
    columns: np.ndarray
    coef: np.ndarray  # (classes it saw, or 1 for two classes, dim)
    intercept: np.ndarray
    classes: np.ndarray  # indices into the emotions
    weight: float = 1.0

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Clip vectors -> the decision scores (clips x the classes it saw, or 1 for two classes)."""
        return ((x - self.mean) / self.scale * self.columns) @ self.coef.T + self.intercept

    def proba(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Clip vectors -> class pseudo-probabilities: the softmax of the decision scores (argmax
        unchanged), zero for a class the classifier never saw."""
        scores = self.scores(x)
        if scores.shape[1] == 1:  # two classes: one score, positive for the second
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = np.zeros((len(x), n_classes))
        probs[:, self.classes] = scores / scores.sum(axis=1, keepdims=True)
        return probs


def linear_view(parts, scaler, estimator, columns, inputs: np.ndarray, weight: float = 1.0) -> LinearView | None:
    """The arrays of a fitted StandardScaler + classifier, or None when its decision function is
    not z @ coef.T + intercept: checked on `inputs` (some of the standardised, weighted vectors it
    was fitted on), so a kernel SVM that happens to have coef_ is never exported wrongly."""
    estimator = getattr(estimator, "best_estimator_", estimator)  # a GridSearchCV's refit
    if not (hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")):
        return None
    linear = inputs @ np.asarray(estimator.coef_).T + estimator.intercept_
    expected = estimator.decision_function(inputs)
    if linear.shape != np.atleast_2d(expected.T).T.shape or not np.allclose(linear.reshape(expected.shape), expected, atol=1e-6):
        return None
    return LinearView(list(parts), scaler.mean_, scaler.scale_, np.asarray(columns, dtype=float),
                      np.asarray(estimator.coef_, dtype=float), np.atleast_1d(np.asarray(estimator.intercept_, dtype=float)),
                      np.asarray(estimator.classes_, dtype=np.int64), float(weight))


class LinearModel:
    def __init__(self, views: list[LinearView], emotions: list[str]):
        self.views, self.emotions = views, emotions

    def predict_proba(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        """`matrices`: clips x columns per clip view (by name, after any per-speaker
        standardisation). The weighted mean of the fitted views' probabilities."""
        total = sum(v.weight for v in self.views)
        return sum(v.weight * v.proba(np.concatenate([matrices[p] for p in v.parts], axis=1), len(self.emotions))
                   for v in self.views) / total

    def embed(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        """The classifier's embedding of clips: every fitted view's decision scores side by side
        (clips x classes per view), the space its prediction is made in."""
        return np.concatenate([v.scores(np.concatenate([matrices[p] for p in v.parts], axis=1)) for v in self.views], axis=1)

    def save(self, out_dir: str | Path, spec: dict) -> Path:
        tensors, views = {}, []
        for i, v in enumerate(self.views):
            for key in ("mean", "scale", "columns", "coef", "intercept", "classes"):
                tensors[f"view{i}.{key}"] = torch.from_numpy(np.ascontiguousarray(getattr(v, key)))
            views.append({"parts": v.parts, "weight": v.weight})
        with atomic_dir(out_dir) as tmp:
            save_file(tensors, str(tmp / "model.safetensors"))
            (tmp / "model.json").write_text(json.dumps({**spec, "kind": "linear", "emotions": self.emotions,
                                                        "views": views}, indent=1))
        return Path(out_dir)

    @classmethod
    def load(cls, model_dir: str | Path) -> tuple["LinearModel", dict]:
        spec = json.loads((Path(model_dir) / "model.json").read_text())
        t = {k: v.numpy() for k, v in load_file(str(Path(model_dir) / "model.safetensors")).items()}
        views = [LinearView(v["parts"], *(t[f"view{i}.{k}"] for k in ("mean", "scale", "columns", "coef", "intercept", "classes")),
                            weight=v["weight"]) for i, v in enumerate(spec["views"])]
        return cls(views, spec["emotions"]), spec
