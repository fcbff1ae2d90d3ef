"""Classical classifiers on one vector per clip, same splits as the networks: openSMILE functionals
(eGeMAPS or ComParE) + SVM, the field's baseline, or a linear probe on a speech encoder's pooled
layers. The classifier is a scikit-learn `_target_` config.

Per-speaker standardisation z-scores each feature within each speaker. It uses no labels, so a
deployed system can do it for a new speaker from a few unlabelled clips; it is transductive for
the test speaker, and results.json records that.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut
from sklearn.preprocessing import StandardScaler

from ser.errors import ConfigError, DataError
from ser.features.cache import FeatureCache
from ser.features.smile import SmileFunctionals, require_opensmile
from ser.models.linear_model import LinearModel, linear_view

log = logging.getLogger(__name__)


def standardize_per_speaker(x: np.ndarray, speakers: list[str], extra: np.ndarray | None = None,
                            extra_speakers: list[str] | None = None):
    """Each speaker's rows z-scored with that speaker's statistics. `extra` rows (augmented copies
    of a speaker's clips) are scaled with their source speaker's statistics, from real clips only;
    with them, returns (x, extra)."""
    out = np.empty_like(x)
    speakers = np.asarray(speakers)
    scalers = {}
    for spk in np.unique(speakers):
        rows = speakers == spk
        scalers[spk] = StandardScaler().fit(x[rows])
        out[rows] = scalers[spk].transform(x[rows])
    if extra is None:
        return out
    extra_out = np.empty_like(extra)
    extra_speakers = np.asarray(extra_speakers)
    for spk in np.unique(extra_speakers):
        rows = extra_speakers == spk
        # A source speaker's copies use its statistics; a generator (no real clips) is one more speaker.
        scaler = scalers[spk] if spk in scalers else StandardScaler().fit(extra[rows])
        extra_out[rows] = scaler.transform(extra[rows])
        # A column that does not vary among the speaker's real clips, to the float16 precision the
        # features are stored at, has no spread to measure a copy against: a pooled positional
        # component depends only on a clip's length, and when every clip has one length (EmoDB's
        # shared copy: 2.0 s) a time-stretched or re-voiced copy one encoder frame shorter would
        # land millions of "standard deviations" away. The copy gets the speaker's mean there.
        extra_out[np.ix_(rows, _flat_columns(scaler))] = 0.0
    return out, extra_out


def _flat_columns(scaler: StandardScaler) -> np.ndarray:
    """Columns whose spread is below float16 resolution at their magnitude."""
    return np.sqrt(scaler.var_) <= np.finfo(np.float16).eps * np.maximum(np.abs(scaler.mean_), np.finfo(np.float16).tiny)


def pooled_layers(features: list, layers) -> np.ndarray:
    """Each clip's encoder layers (layers, dim, frames) -> mean and std over its frames, of every
    layer (`layers="all"`, concatenated) or of one (an index; 0 = the input embeddings)."""
    rows = []
    for x in features:
        x = x.float()
        picked = x if layers == "all" else x[int(layers)][None]
        rows.append(torch.cat([picked.mean(dim=-1), picked.std(dim=-1)], dim=-1).flatten().numpy())
    return np.stack(rows).astype(np.float64)


def _functionals(cfg, data) -> np.ndarray:
    m = cfg.model
    require_opensmile(f"model={m.name}")  # before the cache, which would skip every clip for want of it
    front = SmileFunctionals(m.feature_set, cfg.features.sr, cfg.features.min_duration, cfg.features.max_duration)
    cache = FeatureCache(f"{cfg.paths.cache_dir}/features", front)
    paths = [c.path for c in data.clips]
    feats, skipped = cache.get_many(paths, workers=cfg.features.workers)
    missing = [p for p in paths if p not in feats]
    if missing:
        raise DataError(f"openSMILE failed on {len(missing)} clip(s) that the front end accepted: {skipped[:3]}")
    return np.nan_to_num(np.stack([feats[p] for p in paths]).astype(np.float64))


FUSIONS = ("early", "late")  # one classifier on the concatenated views | one per view, probabilities averaged
# How per-speaker standardisation scales augmented copies of a speaker's clips (model.copies_norm):
# with the source speaker's real clips' statistics, so a copy keeps whatever the augmentation moved,
# or each source speaker's copies as a group of their own, which removes what the augmentation
# route moves by the same amount in every copy (Griffin-Lim voicing shifts every pooled encoder
# statistic), as standardisation removes a speaker's own offset. Generated clips are one group either way.
COPIES_NORMS = ("source", "own")


def input_names(inputs) -> list[str]:
    """`model.inputs`: one name, or a list of them (fused: `model.fusion`)."""
    return [inputs] if isinstance(inputs, str) else list(inputs)


def clip_views(inputs, layers, feature_set, frames: list, functionals) -> list[tuple[str, np.ndarray]]:
    """(name, clips x columns) per view: the functionals (`functionals()`, called only when read),
    the pooled encoder layers of `frames` (all layers as one view, one layer, or with
    `layers: each` every layer its own view). Training and prediction build them alike."""
    views = []
    for name in input_names(inputs):
        if name == "functionals":
            views.append((feature_set, functionals()))
        elif layers == "each":
            views += [(f"layer {i}", pooled_layers(frames, i)) for i in range(frames[0].shape[0])]
        else:
            views.append((f"layers {layers}", pooled_layers(frames, layers)))
    return views


def view_weights(spec, dims: list[int], fusion: str = "early") -> np.ndarray:
    """Each view's weight. Early fusion scales the view's standardised columns: `balanced` is
    1/sqrt(dim), averaging 1, which gives every view the same total variance, so an L2-penalised
    linear model no longer favours the view with more columns. Late fusion weights the views'
    probabilities in the average: `balanced` (or null) is the plain mean. A list is used as given."""
    if spec is None or (spec == "balanced" and fusion == "late"):
        return np.ones(len(dims))
    if spec == "balanced":
        w = 1.0 / np.sqrt(np.asarray(dims, dtype=float))
        return w / w.mean()
    weights = np.asarray(list(spec), dtype=float)
    if len(weights) != len(dims) or (weights <= 0).any():
        raise ConfigError(f"model.view_weights={list(spec)} needs one positive weight per view ({len(dims)}: "
                          "model.inputs, with model.layers=each one per layer), or balanced, or null")
    return weights


def _fit_view(cfg, x, data, split, train, parts, columns: np.ndarray | None = None, weight: float = 1.0,
              extra: tuple | None = None):
    """One classifier (with its hyper-parameter search) on one matrix, standardised on the training
    clips and then each column times its weight (`columns`; early fusion's view weights): the test
    clips' class pseudo-probabilities, what the search chose, and the fitted view as arrays
    (None if the classifier is not linear). `extra`: (rows, labels, speakers) of augmented
    training copies, trained on beside the real clips (the scaler stays fitted on real clips)."""
    m = cfg.model
    scaler = StandardScaler().fit(x[train])
    columns = np.ones(x.shape[1]) if columns is None else columns

    def inputs(rows):
        return scaler.transform(x[rows]) * columns

    train_x, train_y, groups = inputs(train), data.labels[train], np.asarray(data.speakers)[train]
    if extra is not None:
        # An augmented copy belongs to its source speaker, so the inner CV stays speaker-disjoint.
        train_x = np.concatenate([train_x, scaler.transform(extra[0]) * columns])
        train_y, groups = np.concatenate([train_y, extra[1]]), np.concatenate([groups, np.asarray(extra[2])])

    classifier, search = instantiate(m.classifier), None
    if m.search:
        # Hyper-parameters chosen by cross-validation over the training speakers alone (leave one
        # out, or `search_folds` speaker-disjoint folds), scored by UA: the test speakers never
        # influence the choice.
        inner = LeaveOneGroupOut() if m.search_folds is None else GroupKFold(n_splits=m.search_folds)
        classifier = GridSearchCV(classifier, OmegaConf.to_container(m.search), cv=inner, scoring="balanced_accuracy")
        classifier.fit(train_x, train_y, groups=groups)
        search = {"chosen": classifier.best_params_, "inner_ua": round(float(classifier.best_score_), 4),
                  "inner_cv": "leave-one-speaker-out" if m.search_folds is None else f"{m.search_folds} speaker-disjoint folds"}
    else:
        classifier.fit(train_x, train_y)
    scores = classifier.decision_function(inputs(split.test))
    # Decision scores -> per-class pseudo-probabilities (argmax unchanged): one results format for
    # every classifier, and what late fusion averages.
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = np.zeros((len(split.test), len(data.emotions)))
    probs[:, classifier.classes_] = scores / scores.sum(axis=1, keepdims=True)
    return probs, search, linear_view(parts, scaler, classifier, columns, inputs(train[:200]), weight)


def classifier_views(cfg, data, extra=None) -> tuple[list[tuple[str, np.ndarray]], list]:
    """Every clip's views (`clip_views`) as the classifier reads them: per-speaker standardised
    where `model.speaker_norm` says so. With `extra` (augmented or generated clips), their views
    too, each row standardised as its source speaker's or with the speaker's other copies
    (`model.copies_norm`; a generator is one more speaker); else Nones."""
    m = cfg.model
    views = clip_views(m.inputs, m.layers, m.feature_set, data.features, lambda: _functionals(cfg, data))
    extra_views = [None] * len(views)
    if extra is not None:
        extra_views = [x for _, x in clip_views(m.inputs, m.layers, m.feature_set, extra.features,
                                                 lambda: np.stack([v.numpy() for v in extra.functionals]).astype(np.float64))]
    if m.speaker_norm and extra is not None:
        # The copies' scaling groups; the inner search's CV groups stay their source speakers (_fit_view).
        groups = extra.speakers if m.copies_norm == "source" else [f"{s} (copies)" for s in extra.speakers]
        both = [standardize_per_speaker(x, data.speakers, e, groups) for (_, x), e in zip(views, extra_views)]
        views, extra_views = [(name, b[0]) for (name, _), b in zip(views, both)], [b[1] for b in both]
    elif m.speaker_norm:
        views = [(name, standardize_per_speaker(x, data.speakers)) for name, x in views]
    return views, extra_views


def predict_extra(cfg, data, model: LinearModel, extra) -> np.ndarray:
    """A fitted classifier's (clips, classes) probabilities for `extra` clips (generated ones),
    their views standardised as the classifier reads them (`classifier_views`)."""
    views, extra_views = classifier_views(cfg, data, extra)
    return model.predict_proba({name: e for (name, _), e in zip(views, extra_views)})


def fit_predict_classical(cfg, data, split, extra=None):
    """Train on the split's training clips (validation clips join them: no model selection here).
    The clip vectors are openSMILE functionals (`model.inputs: functionals`), the pooled layers of
    the run's speech encoder (`encoder_layers`, with features=encoder), or several views
    (`[encoder_layers, functionals]`, or `model.layers: each`), each standardised on its own first,
    then fused: one classifier on the weighted concatenation (`model.fusion: early`), or one per
    view with their probabilities averaged (`late`). `extra`: augmented copies of training clips
    or generated clips (anything with `features`, `labels`, `speakers` and, where the model reads
    them, `functionals` of model.feature_set), trained on too."""
    m, names = cfg.model, input_names(cfg.model.inputs)
    views, extra_views = classifier_views(cfg, data, extra)
    extra_rows = (lambda e: None) if extra is None else (lambda e: (e, extra.labels, extra.speakers))  # noqa: E731
    dims = [x.shape[1] for _, x in views]
    weights = view_weights(m.view_weights, dims, m.fusion)
    train = np.concatenate([split.train, split.val])
    if m.fusion == "early" or len(views) == 1:
        x = np.concatenate([x for _, x in views], axis=1)
        e = None if extra is None else np.concatenate(extra_views, axis=1)
        probs, search, fitted = _fit_view(cfg, x, data, split, train, [name for name, _ in views],
                                          columns=np.repeat(weights, dims), extra=extra_rows(e))
        fitted = [fitted]
    else:
        per_view = [_fit_view(cfg, x, data, split, train, [name], weight=w, extra=extra_rows(e))
                    for (name, x), w, e in zip(views, weights, extra_views)]
        probs = sum(w * p for w, (p, _, _) in zip(weights, per_view)) / weights.sum()
        search = {name: s for (name, _), (_, s, _) in zip(views, per_view)} if m.search else None
        fitted = [f for _, _, f in per_view]
    extra = {"weights": "n/a (classical)", "normalization": "speaker" if m.speaker_norm else "global",
             "transductive": bool(m.speaker_norm), "inputs": names[0] if len(names) == 1 else names,
             "n_features": int(sum(dims)), "n_training_rows": int(len(train) + (0 if extra is None else len(extra.features))), "feature_set": m.feature_set if "functionals" in names else None,
             "layers": m.layers if "encoder_layers" in names else None, "search": search,
             "fusion": {"kind": m.fusion, "views": [name for name, _ in views],
                        "weights": [round(float(w), 4) for w in weights]} if len(views) > 1 else None}
    model = LinearModel(fitted, list(data.emotions)) if all(f is not None for f in fitted) else None
    return probs, extra, model
