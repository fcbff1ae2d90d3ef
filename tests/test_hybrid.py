"""model=hybrid_tdnn: frames and per-clip functionals as one input, through every path that
touches model inputs (normalisation, batching, mixup, the ensemble, export, ser-predict)."""

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import TINY_TRAINING, tone, train, write_wav
from ser.errors import ConfigError, DataError
from ser.features.transforms import FeatureNormalizer, FunctionalsNormalizer, collate_inputs
from ser.models.backbones import build_backbone
from ser.models.classifier import EmotionClassifier
from ser.models.export import embed, export_classifier, load_classifier, load_functionals_normalizer, predict_proba


def _pair(frames: int, d: int = 20, n_mels: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n_mels, frames, generator=g), torch.randn(d, generator=g)


def test_hybrid_reads_both_parts_and_ensembles():
    net = build_backbone("hybrid_tdnn", num_classes=4, side_dim=20, feat_dim=12, channels=8, ensemble=2).eval()
    frames, vec = collate_inputs([_pair(30), _pair(50, seed=1)], pad="repeat")
    assert frames.shape == (2, 1, 12, 50) and vec.shape == (2, 20)
    with torch.no_grad():
        out = net((frames, vec))
        assert out.shape == (2, 4)
        # Each part changes the output: neither branch is disconnected.
        assert not torch.allclose(out, net((frames, torch.zeros_like(vec))))
        assert not torch.allclose(out, net((torch.zeros_like(frames), vec)))
    # Inputs of different lengths are scored one at a time: no padding at test time.
    inputs = [_pair(30), _pair(50, seed=1), _pair(50, seed=2)]
    probs = predict_proba(net, inputs, batch_size=8)
    alone = predict_proba(net, [inputs[0]])
    assert probs.shape == (3, 4) and torch.allclose(probs[0], alone[0], atol=1e-6)
    assert embed(net, inputs).shape == (3, 2 * 3 * 8)  # two members x (mean, std, functionals) x channels


def test_functionals_normalizer_per_speaker_global_and_refusals():
    rng = np.random.default_rng(0)
    speakers = ["a"] * 6 + ["b"] * 6
    # Speaker b's features sit at another scale and offset; per speaker, both end up z-scored.
    vectors = [torch.tensor(rng.normal(0, 1, 5) * (1 if s == "a" else 50) + (0 if s == "a" else 100), dtype=torch.float32)
               for s in speakers]
    norm = FunctionalsNormalizer("speaker").fit(vectors, speakers)
    z = torch.stack([norm(v, s) for v, s in zip(vectors, speakers)])
    np.testing.assert_allclose(z[:6].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[6:].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[6:].std(0), 1, atol=1e-5)
    # A wild value in a new clip is clipped, not allowed to dominate the linear layer.
    assert norm(torch.full((5,), 1e6), "a").tolist() == [6.0] * 5
    again = FunctionalsNormalizer("speaker")
    again.load_state_dict(norm.state_dict())
    assert torch.equal(again(vectors[7], "b"), z[7])
    glob = FunctionalsNormalizer("global").fit(vectors, speakers)
    assert glob(vectors[0], "anyone").shape == (5,)
    with pytest.raises(ConfigError, match="not none"):
        FunctionalsNormalizer("none")
    with pytest.raises(DataError, match=r"\['c'\]"):
        FunctionalsNormalizer("speaker").fit(vectors + [vectors[0]], speakers + ["c"])
    with pytest.raises(DataError, match="at least two"):
        norm.add_speaker("new", [vectors[0]])


class _Pairs(Dataset):
    """Four classes, told apart by the functionals alone or by the frames alone."""

    def __init__(self, informative: str, n: int = 64, d: int = 16, rows: int = 8, frames: int = 20):
        g = torch.Generator().manual_seed(1)
        self.y = torch.arange(n) % 4
        self.frames = torch.randn(n, 1, rows, frames, generator=g)
        self.vec = torch.randn(n, d, generator=g)
        if informative == "functionals":
            self.vec[torch.arange(n), self.y] += 4.0
        else:
            self.frames[torch.arange(n), 0, self.y] += 3.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.frames[i], self.vec[i]), int(self.y[i])


@pytest.mark.parametrize("informative", ["functionals", "frames"])
def test_classifier_learns_from_either_part_with_mixup(informative):
    pl.seed_everything(0)
    data = _Pairs(informative)
    model = EmotionClassifier(backbone={"arch": "hybrid_tdnn", "side_dim": 16, "feat_dim": 8, "channels": 16,
                                        "side_dropout": 0.1, "drop_rate": 0.1, "ensemble": 2},
                              num_classes=4, emotions=["a", "b", "c", "d"],
                              optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3},
                              mixup_alpha=0.2)
    trainer = pl.Trainer(max_epochs=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=16, shuffle=True))
    probs = predict_proba(model.net, [data[i][0] for i in range(len(data))])
    assert (probs.argmax(1) == data.y).float().mean() > 0.9


def test_export_round_trip_keeps_the_functionals_statistics(tmp_path):
    net = build_backbone("hybrid_tdnn", num_classes=3, side_dim=20, feat_dim=12, channels=8).eval()
    speakers = ["s1", "s1", "s2", "s2"]
    pairs = [_pair(40, seed=i) for i in range(4)]
    mel_norm = FeatureNormalizer("speaker").fit([p[0] for p in pairs], speakers)
    fn_norm = FunctionalsNormalizer("speaker").fit([p[1] for p in pairs], speakers)
    spec = {"backbone": {"arch": "hybrid_tdnn", "side_dim": 20, "feat_dim": 12, "channels": 8},
            "emotions": ["a", "b", "c"],
            "input": {"normalization": "speaker", "pad": "repeat", "size": None, "frames": None, "resize_method": "bilinear"},
            "front_end": {"kind": "smile_lld", "functionals": "ComParE_2016"}, "trained_on": ["s1", "s2"]}
    export_classifier(tmp_path, net, mel_norm, spec, functionals_normalizer=fn_norm)
    net2, mel2, spec2 = load_classifier(tmp_path)
    fn2 = load_functionals_normalizer(tmp_path, spec2)
    inputs = [(mel_norm(m, s), fn_norm(v, s)) for (m, v), s in zip(pairs, speakers)]
    reloaded = [(mel2(m, s), fn2(v, s)) for (m, v), s in zip(pairs, speakers)]
    assert torch.allclose(predict_proba(net, inputs), predict_proba(net2, reloaded), atol=1e-6)
    with pytest.raises(ConfigError, match="normaliser"):
        export_classifier(tmp_path / "bad", net, mel_norm, spec)  # reads functionals, but no statistics given
    mel_only = dict(spec, front_end={"kind": "mel", "functionals": None})
    assert load_functionals_normalizer(tmp_path, mel_only) is None


HYBRID_TINY = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3",
               *[o for o in TINY_TRAINING if "layers" not in o]]


@pytest.mark.slow
def test_train_and_predict_with_the_hybrid(tmp_path, cache_dir):
    pytest.importorskip("opensmile")
    out = tmp_path / "run"
    train(*HYBRID_TINY, "features=compare_lld_functionals", "model=hybrid_tdnn", "model.backbone.ensemble=2",
          f"paths.cache_dir={cache_dir}", output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["n_test"] == 12 and 0.0 <= r["metrics"]["ua"] <= 1.0 and r["transductive"]
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["front_end"]["functionals"] == "ComParE_2016" and spec["backbone"]["side_dim"] == 6373
    from ser import Predictor

    files = [write_wav(tmp_path / f"new{i}.wav", tone(1.2, f0=150.0 + 40 * i, seed=i)) for i in range(3)]
    rows = Predictor(out).predict(files)
    assert [row["label"] in r["emotions"] for row in rows] == [True] * 3
    assert all(sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3) for row in rows)
    # One clip cannot be standardised per speaker on its own; its windows can.
    with pytest.raises(DataError, match="at least two clips"):
        Predictor(out).predict(files[:1])
    long = write_wav(tmp_path / "long.wav", np.tile(tone(1.0, f0=180.0), 3))
    assert len(Predictor(out).predict([long], window=1.0)[0]["windows"]) == 3


@pytest.mark.slow
def test_hybrid_and_functionals_must_come_together(tmp_path, cache_dir):
    pytest.importorskip("opensmile")
    with pytest.raises(ConfigError, match="features.functionals"):
        train(*HYBRID_TINY, "features=compare_lld", "model=hybrid_tdnn", f"paths.cache_dir={cache_dir}",
              output_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="read only by model=hybrid_tdnn"):
        train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", *TINY_TRAINING,
              "features=compare_lld_functionals", f"paths.cache_dir={cache_dir}", output_dir=tmp_path / "b")
