"""The classical SER baseline: openSMILE functionals (eGeMAPS or ComParE) + an SVM, same splits.

Per-speaker standardisation z-scores each feature within each speaker. It uses no labels, so a
deployed system can do it for a new speaker from a few unlabelled clips; it is transductive for
the test speaker, and results.json records that.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import OmegaConf
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ser.errors import DataError
from ser.features.cache import FeatureCache
from ser.features.smile import SmileFunctionals

log = logging.getLogger(__name__)


def standardize_per_speaker(x: np.ndarray, speakers: list[str]) -> np.ndarray:
    out = np.empty_like(x)
    speakers = np.asarray(speakers)
    for spk in np.unique(speakers):
        rows = speakers == spk
        out[rows] = StandardScaler().fit_transform(x[rows])
    return out


def fit_predict_classical(cfg, data, split):
    """Train on the split's training clips (validation clips join them: no model selection here)."""
    m = cfg.model
    try:
        import opensmile  # noqa: F401
    except ImportError:
        raise ImportError("model=egemaps_svm needs openSMILE: pip install 'ser[classical]'") from None
    front = SmileFunctionals(m.feature_set, cfg.features.sr, cfg.features.min_duration, cfg.features.max_duration)
    cache = FeatureCache(f"{cfg.paths.cache_dir}/features", front)
    paths = [c.path for c in data.clips]
    feats, skipped = cache.get_many(paths, workers=cfg.features.workers)
    missing = [p for p in paths if p not in feats]
    if missing:
        raise DataError(f"openSMILE failed on {len(missing)} clip(s) that the mel front end accepted: {skipped[:3]}")
    x = np.stack([feats[p] for p in paths]).astype(np.float64)
    x = np.nan_to_num(x)
    if m.speaker_norm:
        x = standardize_per_speaker(x, data.speakers)
    train = np.concatenate([split.train, split.val])
    scaler = StandardScaler().fit(x[train])
    svm = SVC(**OmegaConf.to_container(m.svm), decision_function_shape="ovr", random_state=cfg.seed)
    svm.fit(scaler.transform(x[train]), data.labels[train])
    scores = svm.decision_function(scaler.transform(x[split.test]))
    # Map SVM scores to per-class pseudo-probabilities (argmax unchanged) for a uniform results format.
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = np.zeros((len(split.test), len(data.emotions)))
    probs[:, svm.classes_] = scores / scores.sum(axis=1, keepdims=True)
    extra = {"weights": "n/a (classical)", "normalization": "speaker" if m.speaker_norm else "global",
             "transductive": bool(m.speaker_norm), "feature_set": m.feature_set, "n_features": int(x.shape[1])}
    return probs, extra
