"""evaluate.py's statistics for augmentation studies: Holm's correction, comparisons with aug=none
and with the best classical augmentation, and what each augmentation arm trained on."""

import json

import numpy as np
import pytest

from ser.evaluation.aggregate import aggregate, baseline_of
from ser.evaluation.metrics import holm


def test_holm_matches_the_step_down_definition():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, None, 0.9]) == [pytest.approx(0.4), None, pytest.approx(0.9)]  # None is no test
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, never below an earlier step
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8]) and holm([]) == []


def test_switching_a_group_drops_that_groups_options():
    arm = {"aug": "ddpm", "aug.synthetic.filter": "0.5", "model": "mel_tdnn", "model.epochs": "2"}
    assert baseline_of(arm, {"aug": "none"}) == {"aug": "none", "model": "mel_tdnn", "model.epochs": "2"}
    assert baseline_of(arm, {"aug": "ddpm"}) == arm  # not switched: its options stay


def _write_run(root, k, aug, extra_arm, fold, correct, synthetic=None):
    """A results.json of 10 test clips (5 per class) with `correct` of them right."""
    labels = [0] * 5 + [1] * 5
    preds = [y if i < correct else 1 - y for i, y in enumerate(labels)]
    d = root / f"{k}"
    d.mkdir(parents=True)
    r = {"fold": fold, "seed": 0, "arm": {"aug": aug, **extra_arm}, "emotions": ["a", "b"], "protocol": "loso",
         "speaker_independent": True, "test_clips": [f"f{fold}c{i}" for i in range(10)], "test_labels": labels,
         "test_predictions": preds, "metrics": {}, "wall_time_s": 1.0, "synthetic": synthetic}
    (d / "results.json").write_text(json.dumps(r))


def test_augmentation_arms_against_none_and_the_best_classical_arm_with_holm(tmp_path):
    scores = {"none": [6, 6, 7, 6, 6], "specaug": [7, 6, 7, 7, 6], "audio": [8, 7, 8, 8, 7],
              "ddpm": [9, 8, 9, 9, 8], "sdedit": [8, 7, 8, 9, 7]}
    k = 0
    for aug, per_fold in scores.items():
        for fold, correct in enumerate(per_fold):
            synthetic = None
            if aug in ("ddpm", "sdedit"):
                synthetic = {"n_used": 40, "n_unique": 40, "sampler": "ddim", "steps": 50,
                             "filter": {"kept_fraction": 0.5} if aug == "ddpm" else None,
                             **({"strength": 0.3} if aug == "sdedit" else {}),
                             "provided": {"generator_train_time_s": 10.0, "sample_time_s": 2.0}}
                if aug == "sdedit":  # how an encoder probe saw them (ser/diffusion/assess_encoded.py)
                    synthetic["quality_in_classifier_space"] = {
                        "frechet_ratio": 1.0 + fold, "ua_ratio": 0.5,
                        "precision_recall": {"generated": {"precision": 1.0, "recall": 0.2}, "heldout": {"precision": 1.0, "recall": 0.6}},
                        "real_classifier_on_generated": {"ua": 0.4},
                        # runs made before the close-copy rate was recorded lack it (folds 0-1 here)
                        **({"memorization": {"close_rate": 0.1 * fold}} if fold >= 2 else {})}
            _write_run(tmp_path, k, aug, {"aug.synthetic.filter": "0.5"} if aug == "ddpm" else {}, fold, correct, synthetic)
            k += 1
    summary = aggregate([tmp_path], tmp_path / "summary", baselines=[{"aug": "none"}],
                        classical=["specaug", "audio", "mixup"])
    arms = {a["arm_spec"]["aug"]: a for a in summary["arms"]}
    ddpm = arms["ddpm"]
    vs_none = ddpm["comparisons"]["aug=none"]  # aug.synthetic.filter left with the switch to aug=none
    assert vs_none["n_pairs"] == 5 and vs_none["delta_mean"] == pytest.approx(0.24)
    best = ddpm["vs_best_classical"]
    assert best["arm"] == "aug=audio" and best["delta_mean"] == pytest.approx(0.10)  # audio beats specaug
    assert arms["audio"]["vs_best_classical"] is None and arms["none"]["vs_best_classical"] is None
    # Holm within each family: 4 arms vs none, 2 generative arms vs the best classical one.
    assert vs_none["family_size"] == 4 and best["family_size"] == 2
    family = [arms[a]["comparisons"]["aug=none"]["p_ttest"] for a in ("specaug", "audio", "ddpm", "sdedit")]
    assert [arms[a]["comparisons"]["aug=none"]["p_holm"] for a in ("specaug", "audio", "ddpm", "sdedit")] == \
        pytest.approx(holm(family))
    assert vs_none["p_holm"] >= vs_none["p_ttest"] and set(vs_none["per_class_delta"]) == {"a", "b"}
    assert ddpm["augmentation"]["synthetic"]["kept_fraction"] == 0.5
    assert ddpm["augmentation"]["synthetic"]["generation_time_s"] == pytest.approx(60.0)
    seen = arms["sdedit"]["augmentation"]["synthetic"]["in_classifier_space"]
    assert seen == {"n_runs": 5, "frechet_ratio": 3.0, "recall": 0.2, "heldout_recall": 0.6, "real_classifier_ua": 0.4,
                    "ua_ratio": 0.5, "close_rate": pytest.approx(0.3)}  # (0.2 + 0.3 + 0.4) / 3 runs that have it
    assert "in_classifier_space" not in ddpm["augmentation"]["synthetic"]
    md = (tmp_path / "summary" / "summary.md").read_text()
    assert "(best classical)" in md and "p (Holm)" in md and "filter kept" in md
    assert "| 3.0, 0.20 (0.60), 0.400 (0.50), 0.30; 5 runs |" in md
    assert np.isfinite(best["p_holm"])


def test_arms_without_a_generator_ignore_the_generator_choice(tmp_path):
    from ser.evaluation.aggregate import without_generator

    spec = {"aug": "ddpm", "diffusion": "cpu_whisper", "generator.sampling.steps": "20", "model": "encoder_lda"}
    assert without_generator(spec) == {"aug": "ddpm", "model": "encoder_lda"}
    for k, (aug, extra) in enumerate([("none", {}), ("audio", {}), ("ddpm", {"diffusion": "cpu_whisper"})]):
        for fold in range(3):
            _write_run(tmp_path, f"{k}{fold}", aug, extra, fold, 6 + k + (fold == 1))
    summary = aggregate([tmp_path], tmp_path / "summary", baselines=[{"aug": "none"}], classical=["audio"])
    ddpm = next(a for a in summary["arms"] if a["arm_spec"]["aug"] == "ddpm")
    assert list(ddpm["comparisons"]) == ["aug=none"] and ddpm["vs_best_classical"]["arm"] == "aug=audio"


def test_runs_pair_across_folds_whose_generators_live_in_their_own_folders(tmp_path):
    # Each fold's generator kept at its own generator.root (read with generate=never), one command a
    # fold: one arm. Two snapshots of a generator on the same folds: two arms, as before.
    syn = {"n_used": 10, "n_unique": 10, "sampler": "ddim", "steps": 50, "filter": None}
    for fold in range(3):
        _write_run(tmp_path, f"n{fold}", "none", {}, fold, 6)
        _write_run(tmp_path, f"d{fold}", "ddpm", {"generator.root": f"/gens/f{fold}", "aug.synthetic.generate": "never"},
                   fold, 7, synthetic=syn)
        for step in (1000, 2000):
            _write_run(tmp_path, f"s{step}-{fold}", "sdedit", {"generator.root": f"/snap/step_{step}"}, fold,
                       6 + step // 1000, synthetic=syn)
    summary = aggregate([tmp_path], tmp_path / "summary", baselines=[{"aug": "none"}])
    assert {a["arm"] for a in summary["arms"]} == {"aug=none", "aug=ddpm", "aug=sdedit,generator.root=/snap/step_1000",
                                                  "aug=sdedit,generator.root=/snap/step_2000"}
    ddpm = next(a for a in summary["arms"] if a["arm_spec"]["aug"] == "ddpm")
    assert ddpm["n_runs"] == 3 and ddpm["comparisons"]["aug=none"]["n_pairs"] == 3


def test_runs_without_a_generator_ignore_the_diffusion_settings_they_were_given(tmp_path):
    # One sweep gives every arm the generators' settings; aug=none read no generator, so it is one
    # arm, and the ddpm arm is compared with it.
    for fold in range(3):
        _write_run(tmp_path, f"n{fold}", "none", {"diffusion.epochs": "2"}, fold, 6)
        _write_run(tmp_path, f"d{fold}", "ddpm", {"diffusion.epochs": "2"}, fold, 7 + (fold == 1),
                   synthetic={"n_used": 10, "n_unique": 10, "sampler": "ddim", "steps": 50, "filter": None})
    summary = aggregate([tmp_path], tmp_path / "summary", baselines=[{"aug": "none"}])
    labels = {a["arm"] for a in summary["arms"]}
    assert labels == {"aug=none", "aug=ddpm,diffusion.epochs=2"}
    ddpm = next(a for a in summary["arms"] if a["arm_spec"]["aug"] == "ddpm")
    assert ddpm["comparisons"]["aug=none"]["n_pairs"] == 3
