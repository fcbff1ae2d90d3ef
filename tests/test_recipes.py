"""The reference recipe and the corpus configs, through train.py, at toy scale."""

import json

import pytest

from conftest import tone, train, write_wav
from ser.errors import PretrainedWeightsUnavailable

pytestmark = pytest.mark.slow


def test_reference_resnet50_recipe_with_a_local_weights_file(tmp_path, cache_dir):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "resnet50.safetensors"  # stands in for ImageNet weights, which cannot be downloaded here
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(weights))
    out = tmp_path / "ref"
    # The recipe as configured, shrunk only in data, image size and epochs.
    train("model=resnet50", f"model.weights={weights}", "model.input.size=[64,64]", "model.epochs=1",
          "model.batch_size=8", "dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=2",
          "hardware.progress_bar=false", "evaluation.n_bootstrap=20", f"paths.cache_dir={cache_dir}", "logger=none",
          output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["weights"] == str(weights) and r["selected_checkpoint"] == "best.ckpt"
    assert r["config"]["model"]["optimizer"]["_target_"] == "torch.optim.Adam" and r["config"]["model"]["optimizer"]["lr"] == 1e-3
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["input"]["size"] == [64, 64] and spec["backbone"]["arch"] == "resnet50"


def test_reference_recipe_offline_without_weights_stops_with_the_fix(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        train("model=resnet50", "dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=2",
              f"paths.cache_dir={cache_dir}", "logger=none", output_dir=tmp_path / "x")
    assert "model.weights=" in str(err.value) and "model.pretrained=false" in str(err.value)


def _two_corpora(root):
    for actor in range(1, 5):  # RAVDESS: neutral, happy, sad, angry, calm (calm is RAVDESS-only)
        for e, code in enumerate(["01", "03", "04", "05", "02"]):
            for rep in ("01", "02"):
                write_wav(root / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{code}-01-01-{rep}-{actor:02d}.wav",
                          tone(1.0, f0=120 + 40 * e, seed=actor))
    for spk in ("03", "08", "09"):  # EmoDB: neutral, happy, sad, angry, boredom (boredom is EmoDB-only)
        for e, letter in enumerate("NFTWL"):
            for ver in "ab":
                write_wav(root / "emodb" / "wav" / f"{spk}a01{letter}{ver}.wav", tone(1.0, f0=130 + 40 * e, seed=int(spk)))
    return root


def test_cross_corpus_trains_on_one_corpus_and_tests_on_the_other(tmp_path, cache_dir):
    root = _two_corpora(tmp_path / "data")
    for fold, tested in ((0, "emodb"), (1, "ravdess")):
        r = train("dataset=combined", f"paths.data_root={root}", "split=cross_corpus", f"split.fold={fold}",
                  "model.epochs=1", "model.backbone.channels=8", "hardware.progress_bar=false",
                  "evaluation.n_bootstrap=20", f"paths.cache_dir={cache_dir}", "logger=none",
                  output_dir=tmp_path / f"cross{fold}")
        assert r["emotions"] == ["neutral", "happy", "sad", "angry"]  # the shared classes, in vocabulary order
        assert {s.split(":")[0] for s in r["test_speakers"]} == {tested}
        assert not {s.split(":")[0] for s in r["train_speakers"]} & {tested}
        assert r["n_test"] == (3 if tested == "emodb" else 4) * 4 * 2
        assert r["cross_corpus"]["test"] == [tested] and r["cross_corpus"]["mapping"]["emodb"] == \
            {"W": "angry", "F": "happy", "T": "sad", "N": "neutral"}
        assert r["cross_corpus"]["mapping"]["ravdess"] == {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
    from ser.evaluation.aggregate import aggregate

    summary = aggregate([tmp_path / "cross0", tmp_path / "cross1"], tmp_path / "summary")
    (arm,) = summary["arms"]
    assert [f["test"] for f in arm["cross_corpus"]["folds"]] == ["emodb", "ravdess"]
    assert "emodb -> ravdess" in (tmp_path / "summary" / "summary.md").read_text()


def test_combined_corpora_speaker_disjoint_kfold_low_data(tmp_path, cache_dir):
    root = _two_corpora(tmp_path / "data")
    out = tmp_path / "comb"
    train("dataset=combined", f"paths.data_root={root}", "split=kfold", "split.k=3", "split.fold=1",
          "split.n_val_speakers=1", "dataset.train_fraction=0.5", "model.epochs=1", "model.backbone.channels=8",
          "hardware.progress_bar=false", "evaluation.n_bootstrap=20", f"paths.cache_dir={cache_dir}", "logger=none",
          output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["emotions"] == ["neutral", "happy", "sad", "angry"]  # shared classes only
    speakers = set(r["train_speakers"]) | set(r["val_speakers"]) | set(r["test_speakers"])
    assert {s.split(":")[0] for s in speakers} == {"ravdess", "emodb"} and len(speakers) == 7
    assert not set(r["test_speakers"]) & (set(r["train_speakers"]) | set(r["val_speakers"]))
    total = 4 * 4 * 2 + 3 * 4 * 2
    assert r["n_train"] + r["n_val"] + r["n_test"] < total  # half of the training clips were dropped
