"""generate.py mode=quality: how realistic, varied, novel and emotional is a fold's synthetic set?

The yardstick is a classifier trained on real clips of the same fold (a train.py run dir with
aug=none). Three groups of clips are compared in its embedding space:
  train      the real clips the generator learned from (the fold's training speakers),
  heldout    real clips of speakers that neither the generator nor the classifier trained on,
  synthetic  the generator's samples.
"heldout vs train" is the scale: how far genuinely new real speech lands from the training set.
A generator whose samples sit much farther than that makes unrealistic spectrograms; one whose
samples sit much closer than held-out speech (memorisation) copies its training clips.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ser.diffusion.job import load_synthetic_set
from ser.diffusion.mixing import SYNTHETIC_SPEAKER
from ser.diffusion.scaling import db_to_model, to_image
from ser.evaluation import quality as q
from ser.evaluation.metrics import classification_metrics
from ser.models.export import embed, eval_pipeline, load_classifier, predict_proba

log = logging.getLogger(__name__)


def assess_synthetic_set(cfg: DictConfig, data, split) -> dict:
    qc = cfg.quality
    if not qc.classifier:
        raise ValueError(
            "mode=quality needs a classifier trained on real clips of the same fold: quality.classifier=<train.py run dir>. "
            f"Make one with: python train.py dataset={cfg.dataset.name} split={split.protocol} split.fold={split.fold} aug=none")
    syn_path = Path(cfg.synthetic_dir) / "synthetic.safetensors"
    if not syn_path.is_file():
        raise FileNotFoundError(f"no synthetic set at {syn_path}; run generate.py mode=train_sample for this fold first")
    syn_mels, syn_labels, info = load_synthetic_set(syn_path)
    model_dir = Path(qc.classifier) / "model" if (Path(qc.classifier) / "model").is_dir() else Path(qc.classifier)
    net, normalizer, spec = load_classifier(model_dir)
    if spec["front_end"].get("functionals"):
        raise ValueError(f"{qc.classifier} also reads openSMILE functionals, which generated spectrograms lack; "
                         "judge samples with a classifier trained on log-mels alone")
    if spec["emotions"] != data.emotions or info["emotions"] != data.emotions:
        raise ValueError(f"emotions differ: dataset {data.emotions}, classifier {spec['emotions']}, synthetic {info['emotions']}")

    generator_speakers, classifier_speakers = set(info["train_speakers"]), set(spec["trained_on"])
    speakers = data.speakers
    train = [i for i in split.train if speakers[i] in generator_speakers]
    heldout = [i for i in range(len(speakers)) if speakers[i] not in generator_speakers | classifier_speakers]
    if len(heldout) < 2 or len(train) < 2:
        raise ValueError(f"need real clips the generator trained on and clips nobody trained on; got {len(train)} and "
                         f"{len(heldout)} (generator speakers {sorted(generator_speakers)}, classifier speakers "
                         f"{sorted(classifier_speakers)})")

    if normalizer.mode == "speaker":
        # Label-free statistics per speaker, as in training; the generator counts as one speaker.
        normalizer.fit(data.mels, speakers)
        normalizer.add_speaker(SYNTHETIC_SPEAKER, list(syn_mels))
    pipeline = eval_pipeline(normalizer, spec)
    real_inputs = {i: pipeline(data.mels[i], speakers[i], train=False) for i in train + heldout}
    syn_inputs = [pipeline(m, SYNTHETIC_SPEAKER, train=False) for m in syn_mels]
    e_train = embed(net, [real_inputs[i] for i in train]).numpy()
    e_held = embed(net, [real_inputs[i] for i in heldout]).numpy()
    e_syn = embed(net, syn_inputs).numpy()

    rng = np.random.default_rng(cfg.seed)
    # FD is biased upward at small N: compare synthetic and held-out sets of the same size.
    n_fd = min(len(e_syn), len(e_held))
    syn_fd, held_fd = e_syn[rng.choice(len(e_syn), n_fd, replace=False)], e_held[rng.choice(len(e_held), n_fd, replace=False)]
    k = int(qc.knn_k)
    embedding = {
        "frechet": {"synthetic_vs_train": q.frechet_distance(e_train, syn_fd),
                    "heldout_vs_train": q.frechet_distance(e_train, held_fd),
                    "synthetic_vs_heldout": q.frechet_distance(held_fd, syn_fd), "n_per_set": n_fd},
        "kid": {name: dict(zip(("mean", "std"), q.kernel_distance(a, b, seed=cfg.seed)))
                for name, a, b in (("synthetic_vs_train", e_train, e_syn), ("heldout_vs_train", e_train, e_held),
                                   ("synthetic_vs_heldout", e_held, e_syn))},
        "precision_recall": {name: dict(zip(("precision", "recall"), q.knn_precision_recall(e_train, b, k)))
                             for name, b in (("synthetic", e_syn), ("heldout", e_held))} | {"k": k},
        "memorization": q.memorization(e_train, e_syn, e_held, quantile=qc.memorization_quantile),
    }
    # Copying shows best where the generator works: its own [-1, 1] image space.
    size = int(info.get("image_size") or cfg.diffusion.image_size)
    as_images = lambda mels: torch.stack([to_image(db_to_model(m), size) for m in mels]).flatten(1).numpy()  # noqa: E731
    image = {"memorization": q.memorization(as_images([data.mels[i] for i in train]), as_images(list(syn_mels)),
                                            as_images([data.mels[i] for i in heldout]), quantile=qc.memorization_quantile),
             "image_size": size}

    n_classes = len(data.emotions)
    syn_pred = predict_proba(net, syn_inputs).argmax(1).numpy()
    held_pred = predict_proba(net, [real_inputs[i] for i in heldout]).argmax(1).numpy()
    on_syn = classification_metrics(syn_labels.numpy(), syn_pred, n_classes)
    on_held = classification_metrics(data.labels[heldout], held_pred, n_classes)
    report = {
        "synthetic_set": str(syn_path), "classifier": str(model_dir), "emotions": data.emotions,
        "sampler": {k2: info.get(k2) for k2 in ("sampler", "steps", "guidance", "seconds_per_sample")},
        "n": {"train": len(train), "heldout": len(heldout), "synthetic": len(e_syn)},
        "heldout_speakers": sorted({speakers[i] for i in heldout}), "generator_speakers": sorted(generator_speakers),
        "embedding_dim": int(e_train.shape[1]), "embedding": embedding, "image": image,
        # Do the samples carry their emotion? Compare with the same classifier on new real speakers.
        "real_classifier_on_synthetic": {"ua": on_syn["ua"], "per_class_recall": dict(zip(data.emotions, on_syn["per_class_recall"]))},
        "real_classifier_on_heldout": {"ua": on_held["ua"], "per_class_recall": dict(zip(data.emotions, on_held["per_class_recall"]))},
    }
    out = Path(cfg.synthetic_dir) / "quality.json"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    plot_real_vs_generated([data.mels[i] for i in train], data.labels[train], syn_mels, syn_labels.numpy(),
                           data.emotions, Path(cfg.synthetic_dir) / "real_vs_generated.png")
    _log_to_wandb(cfg, report)
    e = embedding
    log.info("quality of %s: KID synthetic-vs-train %.4f (held-out real %.4f); precision/recall %.2f/%.2f "
             "(held-out real %.2f/%.2f); close-copy rate %.2f (expected %.2f); real classifier UA on synthetic %.3f "
             "(on held-out real %.3f) -> %s", syn_path, e["kid"]["synthetic_vs_train"]["mean"], e["kid"]["heldout_vs_train"]["mean"],
             *e["precision_recall"]["synthetic"].values(), *e["precision_recall"]["heldout"].values(), image["memorization"]["close_rate"],
             qc.memorization_quantile, on_syn["ua"], on_held["ua"], out)
    return report


def plot_real_vs_generated(real, real_labels, synthetic, syn_labels, emotions, path: Path, per_row: int = 4) -> Path:
    """One row per emotion: real training clips on the left, generated ones on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(emotions), 2 * per_row, figsize=(1.3 * 2 * per_row, 1.1 * len(emotions) + 0.4),
                             squeeze=False)
    for row, emotion in enumerate(emotions):
        picks = [("real", real[i]) for i in np.flatnonzero(np.asarray(real_labels) == row)[:per_row]]
        picks += [(None, None)] * (per_row - len(picks))
        picks += [("generated", synthetic[i]) for i in np.flatnonzero(np.asarray(syn_labels) == row)[:per_row]]
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(picks) and picks[col][1] is not None:
                ax.imshow(picks[col][1][0].numpy(), origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma")
        axes[row][0].set_title(emotion, fontsize=8, loc="left")
    fig.suptitle(f"left {per_row}: real training clips; right {per_row}: generated", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _log_to_wandb(cfg, report: dict) -> None:
    spec = cfg.get("logger") or {}
    if not spec.get("wandb"):
        return
    import wandb

    w = spec.wandb
    flat = {f"quality/{k}": v for k, v in _flatten({key: report[key] for key in (
        "embedding", "image", "real_classifier_on_synthetic", "real_classifier_on_heldout")}).items()}
    run = wandb.init(project=w.project, entity=w.get("entity"), job_type="quality", mode=w.mode,
                     dir=str(Path(cfg.synthetic_dir)), config={"synthetic_set": report["synthetic_set"]})
    run.log({**flat, "quality/real_vs_generated": wandb.Image(str(Path(cfg.synthetic_dir) / "real_vs_generated.png"))})
    run.finish()


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
