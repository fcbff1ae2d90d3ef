"""How the strongest classifier sees a fold's generated clips: item 2's quality measures, taken in
the input space of a linear probe on a speech encoder (the pooled layers, standardised as the probe
trains on them) instead of a log-mel classifier's embedding.

train.py's generative arms on such a probe (aug=ddpm, ddpm_filtered, sdedit with features=encoder)
write this into results.json (`synthetic.quality_in_classifier_space`), after the run's own
predictions, so it never feeds the model. Three groups of rows, as in ser/diffusion/assess.py:
  train      the fold's real training clips,
  heldout    the fold's test speakers' clips, which no generator or classifier trained on: the scale,
  generated  the synthetic (or SDEdit) clips the run trained on.
The yardstick classifier is the same probe fitted on the real training clips alone (what aug=none
trains): its UA on the generated clips says whether they carry their emotion the way it hears real
speech, against its UA on the held-out speakers.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ser.data.datamodule import ExtraClips
from ser.evaluation import quality as q
from ser.evaluation.metrics import classification_metrics
from ser.models.classical import classifier_views, predict_extra
from ser.models.linear_model import LinearModel

log = logging.getLogger(__name__)

KNN_K = 3
EMBED_DIM = 32  # principal components of the probe's input the distances are taken in
MEMORIZATION_QUANTILE = 0.05  # as generate.py mode=quality's default (conf/generate.yaml)


def assess_in_classifier_space(cfg, data, split, generated: ExtraClips, real_only: LinearModel | None,
                               heldout_probs: np.ndarray, seed: int = 0) -> dict:
    """`real_only`: the probe fitted on the real training clips; `heldout_probs`: its class
    probabilities on the test clips, in split.test order. Distances are taken in the leading
    principal components of the probe's standardised input, whitened: its thousands of columns are
    too many for a few hundred clips, and the probe's own decision scores are
    useless as a space (a shrinkage LDA on 3840 columns separates its training clips by scores of
    order 1e5)."""
    train = np.concatenate([split.train, split.val]).astype(int)
    heldout = np.asarray(split.test, dtype=int)
    smallest = min(len(train), len(heldout), len(generated.labels))
    if real_only is None:
        return {"skipped": f"model={cfg.model.name} does not export as a linear map (e.g. a kernel SVM), so it has no "
                           "decision-score embedding to measure in"}
    if smallest <= KNN_K:
        return {"skipped": f"too few rows for the distances: {len(train)} training, {len(heldout)} held-out, "
                           f"{len(generated.labels)} generated (each needs more than {KNN_K})"}
    views, gen_views = classifier_views(cfg, data, generated)
    names = [name for name, _ in views]
    x, g = np.concatenate([v for _, v in views], axis=1), np.concatenate(gen_views, axis=1)
    # The probe's input columns, scaled on the training clips as the probe scales them, then their
    # leading principal components on the training clips.
    scaler = StandardScaler().fit(x[train])
    pca = PCA(n_components=min(EMBED_DIM, len(train) - 1), whiten=True, random_state=seed).fit(np.nan_to_num(scaler.transform(x[train])))
    embed = lambda m: pca.transform(np.nan_to_num(scaler.transform(m)))  # noqa: E731
    e_train, e_held, e_gen = embed(x[train]), embed(x[heldout]), embed(g)

    # Frechet distance, not KID: per-speaker standardisation makes each speaker's rows (and the
    # generator's, one more speaker) sum to zero, which biases KID's unbiased estimator below zero
    # for a set that is one whole speaker. FD compares means and covariances and is biased upward
    # at small N, so the sets are compared at the same size.
    rng = np.random.default_rng(seed)
    n_fd = min(len(e_gen), len(e_held))
    pick = lambda e: e[rng.choice(len(e), n_fd, replace=False)]  # noqa: E731
    fd = {"generated_vs_train": q.frechet_distance(e_train, pick(e_gen)),
          "heldout_vs_train": q.frechet_distance(e_train, pick(e_held)), "n_per_set": n_fd}
    n = len(data.emotions)
    on_gen = classification_metrics(generated.labels, predict_extra(cfg, data, real_only, generated).argmax(1), n)
    on_held = classification_metrics(data.labels[heldout], heldout_probs.argmax(1), n)
    scaling = "with the training clips statistics"
    if cfg.model.speaker_norm:
        scaling = f"per speaker, copies {'with their source speaker' if cfg.model.copies_norm == 'source' else 'as a group of their own'}"
    return {
        "space": f"the probe's input ({', '.join(names)}, {x.shape[1]} columns, standardised {scaling}), "
                 f"its {e_train.shape[1]} leading principal components on the training clips, whitened",
        "n": {"train": len(train), "heldout": len(heldout), "generated": len(e_gen)},
        "frechet": fd,
        # How far from real speech, in units of how far new real speakers land.
        "frechet_ratio": fd["generated_vs_train"] / fd["heldout_vs_train"],
        "precision_recall": {name: dict(zip(("precision", "recall"), q.knn_precision_recall(e_train, e, KNN_K)))
                             for name, e in (("generated", e_gen), ("heldout", e_held))} | {"k": KNN_K},
        # Novelty: generated clips nearer a training clip than 95% of new speakers' clips come are
        # close copies (expect ~0.05 from a generator that makes new clips; SDEdit variants are
        # edits of training clips, so theirs is high by design).
        "memorization": q.memorization(e_train, e_gen, e_held, quantile=MEMORIZATION_QUANTILE),
        # Item 2's second target (>= 0.8): do the clips carry their emotion as real speech does?
        "real_classifier_on_generated": {"ua": on_gen["ua"], "per_class_recall": dict(zip(data.emotions, on_gen["per_class_recall"]))},
        "real_classifier_on_heldout": {"ua": on_held["ua"]},
        "ua_ratio": on_gen["ua"] / on_held["ua"] if on_held["ua"] > 0 else None,
    }


def log_classifier_space_quality(report: dict) -> None:
    if "skipped" in report:
        log.info("generated clips' quality in the classifier's space not measured: %s", report["skipped"])
        return
    on = report["real_classifier_on_generated"]
    log.info("generated clips in the classifier's space: Frechet distance %.1f from the training clips (held-out real "
             "speakers %.1f, ratio %.1f); precision/recall %.2f/%.2f (held-out %.2f/%.2f); the real-only probe's UA on them "
             "%.3f (on held-out speakers %.3f)", report["frechet"]["generated_vs_train"], report["frechet"]["heldout_vs_train"],
             report["frechet_ratio"], *report["precision_recall"]["generated"].values(),
             *report["precision_recall"]["heldout"].values(), on["ua"], report["real_classifier_on_heldout"]["ua"])
