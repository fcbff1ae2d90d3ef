"""generate.py mode=quality: how realistic, varied, novel and emotional is a fold's synthetic set?

The yardstick is a classifier trained on real clips of the same fold (a train.py run dir with
aug=none). Three groups of clips are compared in its embedding space:
  train      the real clips the generator learned from (the fold's training speakers),
  heldout    real clips of speakers that neither the generator nor the classifier trained on,
  synthetic  the generator's samples.
"heldout vs train" is the scale: how far genuinely new real speech lands from the training set.
A generator whose samples sit much farther than that makes unrealistic spectrograms; one whose
samples sit much closer than held-out speech (memorisation) copies its training clips.
"squeezed" is the recipe's ceiling: the held-out clips resampled to the generator's image size and
back (for a latent recipe, also through its autoencoder), scored like samples. A perfect generator
of that size (and decoder) can get no closer than they do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from omegaconf import DictConfig

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.autoencoder import decode_latents, encode_images
from ser.diffusion.image_space import db_to_model, from_image, model_to_db, to_image
from ser.diffusion.synthetic_set import FILENAME, SYNTHETIC_SPEAKER, load_synthetic_set
from ser.errors import ConfigError, DataError
from ser.evaluation import quality as q
from ser.evaluation.metrics import classification_metrics
from ser.evaluation.plots import plot_real_vs_generated
from ser.io import write_json
from ser.models.export import embed, eval_pipeline, load_classifier, model_dir_of, predict_proba

log = logging.getLogger(__name__)
SQUEEZED_SPEAKER = "squeezed"  # the held-out clips after the round trip, normalised as one more speaker


def squeeze(mel: torch.Tensor, size: int, vae: AutoencoderKL | None = None) -> torch.Tensor:
    """A spectrogram (dB) resampled to a generator's `size` x `size` image and back to its own grid,
    through a latent recipe's autoencoder `vae` on the way: the detail a generator of that size
    (and that decoder) cannot represent is gone."""
    image = to_image(db_to_model(mel), size)
    if vae is not None:
        image = decode_latents(vae, encode_images(vae, image[None]))[0]
    return model_to_db(from_image(image, mel.shape[-2], mel.shape[-1]))


def autoencoder_of(info: dict, emotions: list[str]) -> AutoencoderKL | None:
    """The autoencoder of the latent generator that drew a synthetic set (None for a pixel recipe,
    or when its folder has moved: the ceiling is then the image size's alone, and says so)."""
    root = Path(info.get("generator_dir", ""))
    for folder in (root / "vae", root / emotions[0] / "vae"):
        if info.get("generator_dir") and (folder / "config.json").is_file():
            return AutoencoderKL.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False).eval()
    return None


def assess_synthetic_set(cfg: DictConfig, data: LabelledClips, split: Split) -> dict:
    qc, syn_dir = cfg.quality, Path(cfg.generator.synthetic_dir)
    if not qc.classifier:
        raise ConfigError(
            "mode=quality needs a classifier trained on real clips of the same fold: quality.classifier=<train.py run dir>. "
            f"Make one with: python train.py dataset={cfg.dataset.name} split={split.protocol} split.fold={split.fold} aug=none")
    syn_path = syn_dir / FILENAME
    syn_mels, syn_labels, info = load_synthetic_set(syn_path)
    model_dir = model_dir_of(qc.classifier)
    net, normalizer, spec = load_classifier(model_dir)
    if spec["front_end"]["functionals"]:
        raise ConfigError(f"{qc.classifier} also reads openSMILE functionals, which generated spectrograms lack; "
                          "judge samples with a classifier trained on log-mels alone")
    if spec["emotions"] != data.emotions or info["emotions"] != data.emotions:
        raise DataError(f"emotions differ: dataset {data.emotions}, classifier {spec['emotions']}, synthetic {info['emotions']}")

    generator_speakers, classifier_speakers = set(info["train_speakers"]), set(spec["trained_on"])
    speakers = data.speakers
    train = [i for i in split.train if speakers[i] in generator_speakers]
    heldout = [i for i in range(len(speakers)) if speakers[i] not in generator_speakers | classifier_speakers]
    if len(heldout) < 2 or len(train) < 2:
        raise DataError(f"need real clips the generator trained on and clips nobody trained on; got {len(train)} and "
                         f"{len(heldout)} (generator speakers {sorted(generator_speakers)}, classifier speakers "
                         f"{sorted(classifier_speakers)})")

    size = int(info["image_size"])
    vae = autoencoder_of(info, data.emotions)
    squeezed = [squeeze(data.features[i], size, vae) for i in heldout]
    if normalizer.mode == "speaker":
        # Label-free statistics per speaker, as in training; the generator counts as one speaker.
        normalizer.fit(data.features, speakers)
        normalizer.add_speaker(SYNTHETIC_SPEAKER, list(syn_mels))
        normalizer.add_speaker(SQUEEZED_SPEAKER, squeezed)
    pipeline = eval_pipeline(normalizer, spec)
    real_inputs = {i: pipeline(data.features[i], speakers[i], train=False) for i in train + heldout}
    syn_inputs = [pipeline(m, SYNTHETIC_SPEAKER, train=False) for m in syn_mels]
    squeezed_inputs = [pipeline(m, SQUEEZED_SPEAKER, train=False) for m in squeezed]
    e_train = embed(net, [real_inputs[i] for i in train]).numpy()
    e_held = embed(net, [real_inputs[i] for i in heldout]).numpy()
    e_syn = embed(net, syn_inputs).numpy()
    e_squeezed = embed(net, squeezed_inputs).numpy()

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
                                   ("synthetic_vs_heldout", e_held, e_syn), ("squeezed_vs_train", e_train, e_squeezed))},
        "precision_recall": {name: dict(zip(("precision", "recall"), q.knn_precision_recall(e_train, b, k)))
                             for name, b in (("synthetic", e_syn), ("heldout", e_held))} | {"k": k},
        "memorization": q.memorization(e_train, e_syn, e_held, quantile=qc.memorization_quantile),
    }
    embedding["kid_ratio"] = kid_ratios(embedding["kid"])
    # Copying shows best where the generator works: its own [-1, 1] image space.
    as_images = lambda mels: torch.stack([to_image(db_to_model(m), size) for m in mels]).flatten(1).numpy()  # noqa: E731
    image = {"memorization": q.memorization(as_images([data.features[i] for i in train]), as_images(list(syn_mels)),
                                            as_images([data.features[i] for i in heldout]), quantile=qc.memorization_quantile),
             "image_size": size}

    n_classes = len(data.emotions)
    syn_pred = predict_proba(net, syn_inputs).argmax(1).numpy()
    held_pred = predict_proba(net, [real_inputs[i] for i in heldout]).argmax(1).numpy()
    on_syn = classification_metrics(syn_labels.numpy(), syn_pred, n_classes)
    on_held = classification_metrics(data.labels[heldout], held_pred, n_classes)
    squeezed_pred = predict_proba(net, squeezed_inputs).argmax(1).numpy()
    on_squeezed = classification_metrics(data.labels[heldout], squeezed_pred, n_classes)
    report = {
        "synthetic_set": str(syn_path), "classifier": str(model_dir), "emotions": data.emotions,
        "sampler": {k2: info[k2] for k2 in ("sampler", "steps", "guidance", "seconds_per_sample")},
        "n": {"train": len(train), "heldout": len(heldout), "synthetic": len(e_syn)},
        "heldout_speakers": sorted({speakers[i] for i in heldout}), "generator_speakers": sorted(generator_speakers),
        "embedding_dim": int(e_train.shape[1]), "embedding": embedding, "image": image,
        # Do the samples carry their emotion? Compare with the same classifier on new real speakers.
        "real_classifier_on_synthetic": {"ua": on_syn["ua"], "per_class_recall": dict(zip(data.emotions, on_syn["per_class_recall"]))},
        "real_classifier_on_heldout": {"ua": on_held["ua"], "per_class_recall": dict(zip(data.emotions, on_held["per_class_recall"]))},
        "real_classifier_on_squeezed": {"ua": on_squeezed["ua"], "image_size": size, "through_autoencoder": vae is not None},
    }
    out = write_json(syn_dir / "quality.json", report)
    plot_real_vs_generated([data.features[i] for i in train], data.labels[train], syn_mels, syn_labels.numpy(),
                           data.emotions, syn_dir / "real_vs_generated.png")
    e = embedding
    log.info("quality of %s: KID synthetic-vs-train %.4f (held-out real %.4f; held-out squeezed to %dx%d%s and back %.4f); "
             "precision/recall %.2f/%.2f "
             "(held-out real %.2f/%.2f); close-copy rate %.2f (expected %.2f); real classifier UA on synthetic %.3f "
             "(on held-out real %.3f) -> %s", syn_path, e["kid"]["synthetic_vs_train"]["mean"], e["kid"]["heldout_vs_train"]["mean"],
             size, size, " through the autoencoder" if vae is not None else "", e["kid"]["squeezed_vs_train"]["mean"],
             *e["precision_recall"]["synthetic"].values(), *e["precision_recall"]["heldout"].values(), image["memorization"]["close_rate"],
             qc.memorization_quantile, on_syn["ua"], on_held["ua"], out)
    return report


def kid_ratios(kid: dict) -> dict:
    """How far from real speech: KID in units of the held-out speakers' KID (item 2's target is a
    ratio). The unbiased KID of a held-out speaker the embedding cannot tell from the training
    speakers can be zero or negative (EmoDB fold 3: -0.0004, subset sd 0.024); a ratio to it is
    then undefined, not a large negative number, and says why."""
    held = kid["heldout_vs_train"]["mean"]
    if held <= 0:
        return {"synthetic": None, "squeezed": None,
                "undefined": f"the held-out speakers' KID is {held:.5f} (subset sd {kid['heldout_vs_train']['std']:.4f}): "
                             "this embedding does not tell them from the training speakers, so there is no scale to divide by"}
    return {"synthetic": kid["synthetic_vs_train"]["mean"] / held, "squeezed": kid["squeezed_vs_train"]["mean"] / held}
