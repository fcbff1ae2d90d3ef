"""Pretrained speech encoders as a front end: tiny random Whisper and wav2vec 2.0 encoders built from
transformers configs (the code path hub models take), one fast check of the shared Whisper tiny.en,
the encoder probe and the linear probe through train -> export -> predict."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import ROOT, TINY, tone, train, write_wav
from ser.errors import ConfigError, PretrainedWeightsUnavailable
from ser.features.cache import FeatureCache
from ser.features.encoder import SpeechEncoder
from ser.models.backbones import build_backbone, learned_layer_weights
from ser.models.classifier import EmotionClassifier

TINY_PROBE = [o for o in TINY if "backbone.layers" not in o]  # TINY shrinks the TDNN; the probe has no layers key
SHARED_TINY_EN = ROOT.parent / "shared" / "models" / "whisper-tiny.en"


def _tiny_whisper(path: Path, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    config = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                           max_source_positions=1500, vocab_size=100, max_target_positions=16, pad_token_id=1,
                           bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
    WhisperModel(config).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def _tiny_wav2vec_family(path: Path, kind: str = "wav2vec2", **extra) -> Path:
    """A tiny random wav2vec 2.0, HuBERT, WavLM or data2vec-audio model: the same waveform front end
    (Wav2Vec2FeatureExtractor), different transformer stacks."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                  conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=4,
                                  num_conv_pos_embedding_groups=2, **extra)
    AutoModel.from_config(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return path


WAV2VEC_FAMILY = {"wav2vec2": {}, "wav2vec2_stable_norm": {"do_stable_layer_norm": True}, "hubert": {},
                  "wavlm": {"num_buckets": 8, "max_bucket_distance": 20}, "data2vec-audio": {"conv_pos_kernel_size": 4}}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    built = {"whisper": _tiny_whisper(root / "whisper")}
    for key, extra in WAV2VEC_FAMILY.items():
        built[key] = _tiny_wav2vec_family(root / key, key.removesuffix("_stable_norm"), **extra)
    return built


def test_every_hidden_layer_at_native_length(encoders, tmp_path):
    whisper = SpeechEncoder(str(encoders["whisper"]))
    for seconds in (1.0, 2.5):
        wav = write_wav(tmp_path / f"{seconds}.wav", tone(seconds))
        x = whisper.compute(str(wav))
        # embeddings + 2 layers, width 16, one frame per 20 ms (not Whisper's fixed 30-s window)
        assert x.shape == (3, 16, int(seconds * 50)) and x.dtype == np.float16
        np.testing.assert_array_equal(x, whisper.compute(str(wav)))  # deterministic
        for kind in WAV2VEC_FAMILY:  # the waveform encoders, through AutoModel / AutoFeatureExtractor
            encoder = SpeechEncoder(str(encoders[kind]))
            y = encoder.compute(str(wav))
            assert y.shape[:2] == (3, 16) and abs(y.shape[2] - seconds * 16000 / 20) <= 2, kind  # this tiny CNN strides 20
            assert np.isfinite(y.astype(np.float32)).all() and encoder.describe()["model_type"] == kind.removesuffix("_stable_norm")
    assert whisper.describe()["model_type"] == "whisper" and whisper.sr == 16000


def test_the_cache_is_keyed_by_the_weights_not_the_name(encoders, tmp_path):
    import shutil

    copy = shutil.copytree(encoders["whisper"], tmp_path / "same-weights-elsewhere")
    other = _tiny_whisper(tmp_path / "other-weights", seed=1)
    a, b, c = (SpeechEncoder(str(p)) for p in (encoders["whisper"], copy, other))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    wav = write_wav(tmp_path / "a.wav", tone(1.0))
    feats, skipped = FeatureCache(tmp_path / "cache", a).get_many([str(wav)])
    assert not skipped and FeatureCache(tmp_path / "cache", b).dir == FeatureCache(tmp_path / "cache", a).dir
    assert FeatureCache(tmp_path / "cache", c).dir != FeatureCache(tmp_path / "cache", a).dir


def test_a_missing_encoder_names_the_option_to_set(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="features.encoder.name"):
        SpeechEncoder(str(tmp_path / "no-such-model")).describe()


def test_a_hub_id_loads_offline_from_the_hugging_face_cache(encoders, tmp_path):
    """The presets name `openai/whisper-tiny.en`: with the model in a Hugging Face cache and no
    network (HF_HUB_OFFLINE=1), the hub id loads like a local directory, and an id that is not
    cached fails naming the option to set. A fresh process, since the hub reads its cache path at
    import."""
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--openai--whisper-tiny.en"
    shutil.copytree(encoders["whisper"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    script = ("from ser.errors import PretrainedWeightsUnavailable\n"
              "from ser.features.encoder import SpeechEncoder\n"
              "print(SpeechEncoder('openai/whisper-tiny.en').describe()['weights_digest'])\n"
              "try:\n    SpeechEncoder('openai/whisper-base').describe()\n"
              "except PretrainedWeightsUnavailable as err:\n    print('features.encoder.name' in str(err))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [SpeechEncoder(str(encoders["whisper"])).digest, "True"]


@pytest.mark.skipif(not SHARED_TINY_EN.is_dir(), reason="../shared/models/whisper-tiny.en is not beside the checkout")
def test_shared_whisper_tiny_en_loads_offline_and_embeds_a_real_clip_deterministically():
    clip = ROOT.parent / "shared" / "datasets" / "emodb" / "wav" / "03a01Fa.wav"
    encoder = SpeechEncoder(str(SHARED_TINY_EN))
    x = encoder.compute(str(clip))
    assert x.shape == (5, 384, 100)  # embeddings + 4 layers of 384 for 2.0 s at 50 frames/s
    np.testing.assert_array_equal(x, encoder.compute(str(clip)))
    assert np.isfinite(x.astype(np.float32)).all() and x.astype(np.float32).std() > 0.1


class _LayerData(Dataset):
    """Four classes that only layer 2 of 4 tells apart; the other layers are noise."""

    def __init__(self, n: int = 96):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(n, 4, 8, 12, generator=g)
        self.x[torch.arange(n), 2, self.y] += 2.5

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_the_probe_learns_which_layer_carries_the_emotion():
    pl.seed_everything(0)
    data = _LayerData()
    model = EmotionClassifier({"arch": "encoder_probe", "in_chans": 4, "feat_dim": 8, "channels": 16},
                              num_classes=4, emotions=list("abcd"),
                              optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2})
    pl.Trainer(max_epochs=30, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(model, DataLoader(data, batch_size=16, shuffle=True))
    (weights,) = learned_layer_weights(model.net)
    assert sum(weights) == pytest.approx(1.0, abs=1e-3) and int(np.argmax(weights)) == 2 and weights[2] > 0.4
    assert learned_layer_weights(build_backbone("mel_tdnn", num_classes=2, feat_dim=8)) is None


@pytest.mark.parametrize("ensemble", [1, 2])
def test_the_probe_layer_weights_learn_at_their_own_rate_without_decay(ensemble):
    # At the head's lr the layer weights barely left uniform in a CPU schedule; they get their own group.
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.01}
    backbone = {"arch": "encoder_probe", "in_chans": 3, "feat_dim": 8, "layer_lr_scale": 30, "ensemble": ensemble}
    model = EmotionClassifier(backbone, num_classes=4, emotions=list("abcd"), optimizer=optimizer)
    probes = model.net.members if ensemble > 1 else [model.net]
    groups = model.configure_optimizers().param_groups
    layer_groups = [g for g in groups if any(p is m.layer_logits for m in probes for p in g["params"])]
    assert len(groups) == 2 * ensemble and len(layer_groups) == ensemble
    assert all(len(g["params"]) == 1 and g["lr"] == pytest.approx(0.03) and g["weight_decay"] == 0 for g in layer_groups)
    others = [g for g in groups if all(g is not h for h in layer_groups)]
    assert all(g["lr"] == pytest.approx(1e-3) and g["weight_decay"] == 0.01 for g in others)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_the_probe_pools_the_same_statistics_in_training_and_evaluation():
    # Element-wise dropout before the pooling inflated the training-time standard deviations, a
    # train/eval mismatch that cost about 0.07 UA on EmoDB; what the head reads must not depend on the mode.
    torch.manual_seed(0)
    probe = build_backbone("encoder_probe", num_classes=4, in_chans=3, feat_dim=8)
    x = torch.randn(5, 3, 8, 40)
    training = probe.train().forward_features(x)
    assert torch.allclose(training, probe.eval().forward_features(x))


def test_an_export_from_another_version_fails_naming_the_file_and_the_fix(tmp_path):
    from ser.errors import DataError
    from ser.features.transforms import FeatureNormalizer
    from ser.models.export import export_classifier, load_classifier

    backbone = {"arch": "encoder_probe", "in_chans": 3, "feat_dim": 8}
    spec = {"backbone": backbone, "emotions": list("abcd"), "input": {"normalization": "none"},
            "front_end": {"functionals": None}}
    net = build_backbone(num_classes=4, **backbone)
    export_classifier(tmp_path / "ok", net, FeatureNormalizer("none").fit([], []), spec)
    assert load_classifier(tmp_path / "ok")[0].layer_logits.shape == (3,)
    # An export whose network took a setting this version's does not (the probe's old input_dropout).
    old = dict(spec, backbone=dict(backbone, input_dropout=0.1))
    export_classifier(tmp_path / "old", net, FeatureNormalizer("none").fit([], []), old)
    with pytest.raises(DataError, match=r"old/model.json.*encoder_probe.*input_dropout.*retrain"):
        load_classifier(tmp_path / "old")


@pytest.mark.slow
def test_train_export_and_predict_on_a_speech_encoder(encoders, tmp_path, cache_dir):
    from ser import Predictor

    out = tmp_path / "probe"
    train(*TINY_PROBE, "features=encoder", f"features.encoder.name={encoders['whisper']}", "model=encoder_probe",
          "model.backbone.channels=8", f"paths.cache_dir={cache_dir}", output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["n_test"] == 12 and len(r["layer_weights"][0]) == 3 and (out / "layer_weights.png").is_file()
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["backbone"]["in_chans"] == 3 and spec["backbone"]["feat_dim"] == 16
    assert spec["front_end"]["encoder"]["weights_digest"] == SpeechEncoder(str(encoders["whisper"])).digest
    files = [write_wav(tmp_path / f"new{i}.wav", tone(1.5, f0=150.0 + 30 * i, seed=i)) for i in range(2)]
    rows = Predictor(out).predict(files)
    assert all(row["label"] in r["emotions"] for row in rows)
    # The encoder moved: point to it; a different encoder is refused, a missing one names the option.
    moved = _tiny_whisper(tmp_path / "moved")
    assert Predictor(out, encoder=str(moved)).predict(files[:1])[0]["label"] in r["emotions"]
    with pytest.raises(ConfigError, match="weights_digest .* but this model was trained with"):
        Predictor(out, encoder=str(encoders["wav2vec2"]))
    with pytest.raises(PretrainedWeightsUnavailable, match="--encoder"):
        Predictor(out, encoder=str(tmp_path / "gone"))


@pytest.mark.slow
def test_linear_probe_on_pooled_layers(encoders, tmp_path, cache_dir):
    for layers, search in (("all", "null"), ("1", "{C:[0.01,1.0]}")):
        out = tmp_path / f"linear-{layers}"
        r = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
                  f"features.encoder.name={encoders['wav2vec2']}", "model=encoder_linear", f"model.layers={layers}",
                  f"model.search={search}", f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20", output_dir=out)
        # mean + std of 16 dims, of every layer (3) or of one
        assert r["n_features"] == (3 if layers == "all" else 1) * 32 and r["inputs"] == "encoder_layers"
        if search == "null":
            assert r["search"] is None
        else:  # chosen on the 3 training + validation speakers, never on the test speaker
            assert r["search"]["chosen"]["C"] in (0.01, 1.0) and 0 <= r["search"]["inner_ua"] <= 1
            assert r["search"]["inner_cv"] == "leave-one-speaker-out"
    r = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
              f"features.encoder.name={encoders['wav2vec2']}", "model=encoder_linear", "model.search={C:[0.01,1.0]}",
              "model.search_folds=2", f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20", output_dir=tmp_path / "k")
    assert r["search"]["inner_cv"] == "2 speaker-disjoint folds"


@pytest.mark.slow
def test_fusion_of_pooled_layers_and_functionals(encoders, tmp_path, cache_dir):
    pytest.importorskip("opensmile")
    r = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
              f"features.encoder.name={encoders['wav2vec2']}", "model=encoder_linear",
              "model.inputs=[encoder_layers,functionals]", "model.feature_set=eGeMAPSv02",
              f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20", output_dir=tmp_path)
    assert r["inputs"] == ["encoder_layers", "functionals"] and r["n_features"] == 3 * 32 + 88
    assert r["fusion"] == {"kind": "early", "views": ["layers all", "eGeMAPSv02"], "weights": [1.0, 1.0]}
    balanced = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
                     f"features.encoder.name={encoders['wav2vec2']}", "model=encoder_linear",
                     "model.inputs=[encoder_layers,functionals]", "model.feature_set=eGeMAPSv02", "model.view_weights=balanced",
                     f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20", output_dir=tmp_path / "balanced")
    # 96 and 88 columns: weights proportional to 1/sqrt(dim), averaging 1
    w = np.array([96, 88]) ** -0.5
    assert balanced["fusion"]["weights"] == [round(x, 4) for x in (w / w.mean()).tolist()]
    # Late fusion, every layer its own view: one classifier per view, probabilities averaged.
    late = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
                 f"features.encoder.name={encoders['wav2vec2']}", "model=encoder_linear", "model.layers=each",
                 "model.inputs=[encoder_layers,functionals]", "model.feature_set=eGeMAPSv02", "model.fusion=late",
                 "model.search={C:[0.01,1.0]}", f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20",
                 output_dir=tmp_path / "late")
    assert late["fusion"] == {"kind": "late", "views": ["layer 0", "layer 1", "layer 2", "eGeMAPSv02"], "weights": [1.0] * 4}
    assert set(late["search"]) == {"layer 0", "layer 1", "layer 2", "eGeMAPSv02"} and late["n_features"] == 3 * 32 + 88
    with pytest.raises(ConfigError, match="choose one of: functionals, encoder_layers"):
        train("features=encoder", "model=encoder_linear", "model.inputs=[encoder_layers,mfcc]", output_dir=tmp_path)


def test_models_and_front_ends_that_do_not_fit_are_refused(tmp_path):
    for overrides, message in [(["model=encoder_probe"], "set features=encoder"),
                               (["model=encoder_linear"], "set features=encoder"),
                               (["features=encoder"], "model=encoder_probe or model=encoder_linear"),
                               (["features=encoder", "model=encoder_linear", "model.layers=middle"], "a layer index"),
                               (["features=encoder", "model=encoder_linear", "model.fusion=mid"], "choose one of: early, late"),
                               (["model=encoder_finetune"], "use both together"),
                               (["features=encoder_input", "model=mel_tdnn"], "use both together"),
                               (["model.input.normalization=identity"], "only an encoder's own input")]:
        with pytest.raises(ConfigError, match=message):
            train(*overrides, output_dir=tmp_path)


def test_view_weights_balance_the_fused_views():
    from ser.models.classical import view_weights

    w = view_weights("balanced", [3840, 6373])
    assert w.mean() == pytest.approx(1.0) and (w[0] ** 2 * 3840) == pytest.approx(w[1] ** 2 * 6373)
    assert view_weights("balanced", [3840, 6373], fusion="late").tolist() == [1.0, 1.0]  # late: the plain mean
    assert view_weights(None, [4, 9]).tolist() == [1.0, 1.0] and view_weights([2, 0.5], [4, 9]).tolist() == [2.0, 0.5]
    with pytest.raises(ConfigError, match="one positive weight per view"):
        view_weights([1.0], [4, 9])


def test_a_copy_is_not_blown_up_by_a_column_its_speaker_never_varies():
    """EmoDB's shared clips all last 2.0 s, so pooled positional components are constant within a
    speaker to float16 precision; a time-stretched or re-voiced copy one encoder frame shorter
    differs there, and dividing by the speaker's float noise put it about 1e6 standard deviations
    away (fold 2, aug=sdedit voiced: Frechet ratio 1.4e7, the real-only probe at chance on the copies)."""
    from ser.models.classical import standardize_per_speaker

    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 3))
    real[:, 2] = np.float32(0.01776) + rng.normal(scale=4.7e-8, size=20)  # a length-only column
    speakers = ["a"] * 10 + ["b"] * 10
    copies = real[:4].copy()
    copies[:, 2] = 0.00785  # one frame shorter
    copies[:, 0] += 0.5
    out, extra = standardize_per_speaker(real, speakers, copies, ["a"] * 4)
    assert np.abs(extra).max() < 10 and np.all(extra[:, 2] == 0.0)
    # The informative columns keep the speaker's own scaling: the shift shows in units of its spread.
    a = real[:10, 0]
    assert extra[:, 0] == pytest.approx((copies[:, 0] - a.mean()) / a.std())
    assert out[:10, 0] == pytest.approx((a - a.mean()) / a.std())


def test_copies_are_scaled_with_their_speaker_or_as_a_group_of_their_own():
    """model.copies_norm: a route that shifts every copy alike (Griffin-Lim voicing before the
    encoder) keeps that shift under `source` scaling and loses it under `own`, as per-speaker
    standardisation removes a speaker's own offset; the copies' speakers are untouched."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ser.models.classical import classifier_views

    rng = np.random.default_rng(0)
    features = [torch.from_numpy(rng.normal(size=(2, 3, 6)).astype(np.float32)) for _ in range(12)]
    data = SimpleNamespace(features=features, speakers=["a"] * 6 + ["b"] * 6)
    copies = SimpleNamespace(features=[x + 0.3 for x in features[:6]], speakers=["a"] * 6, functionals=None)
    model = {"inputs": "encoder_layers", "layers": "all", "feature_set": None, "speaker_norm": True}
    views = {}
    for norm in ("source", "own"):
        cfg = OmegaConf.create({"model": {**model, "copies_norm": norm}})
        [(_, real)], [extra] = classifier_views(cfg, data, copies)
        views[norm] = real, extra
    assert np.array_equal(views["source"][0], views["own"][0])  # the real clips' scaling does not change
    real_a = views["own"][0][:6]
    assert views["own"][1] == pytest.approx(real_a, abs=1e-5)  # the shared shift is gone
    means = slice(0, 3)  # each layer's first columns: frame means, moved by the shift; stds are not
    assert np.all(views["source"][1][:, means] > real_a[:, means])
    assert copies.speakers == ["a"] * 6


def test_fine_tuning_trains_only_the_top_layers_with_decayed_learning_rates(encoders):
    from ser.models.finetune import EncoderFinetune

    for kind in ("whisper", *WAV2VEC_FAMILY):
        x = torch.randn(2, 1, 80, 101) if kind == "whisper" else torch.randn(2, 1, 1, 16000)
        net = EncoderFinetune(4, name=str(encoders[kind]), train_layers=1, layer_decay=0.5)
        trainable = {n for n, p in net.named_parameters() if p.requires_grad}
        # The top layer, and for Whisper the layer norm after it. The base wav2vec-family models'
        # norm sits before the first layer and must stay frozen with it; the large ones'
        # (do_stable_layer_norm) is not on the path of the hidden states the head reads.
        final_norm = "encoder.layer_norm." if kind == "whisper" else None
        top = "encoder.layers.1." if kind == "whisper" else "encoder.encoder.layers.1."
        assert trainable and all(n.startswith(("probe.", top) + ((final_norm,) if final_norm else ())) for n in trainable), \
            (kind, sorted(trainable))
        assert final_norm is None or {f"{final_norm}weight", f"{final_norm}bias"} <= trainable, kind
        groups = net.param_groups(1e-3)
        assert [g["lr"] for g in groups] == [1e-3, 5e-4]
        assert sum(len(g["params"]) for g in groups) == len(trainable)
        hidden = net.hidden_layers(x)
        assert hidden.shape[:3] == (2, 3, 16)  # embeddings + 2 layers, width 16, frames at the clip's length
        if kind == "whisper":
            assert hidden.shape[3] == 50  # 101 mel frames -> 100 -> 50 encoder frames, not Whisper's 1500
        net(x).sum().backward()
        assert all(p.grad is not None for n, p in net.named_parameters() if n in trainable and "layer_weights" not in n), kind
        assert all(p.grad is None for n, p in net.named_parameters() if n not in trainable), kind
    with pytest.raises(ConfigError, match="this encoder has 2 layers"):
        EncoderFinetune(4, name=str(encoders["whisper"]), train_layers=3)


def test_fine_tuning_sees_every_layer_although_the_config_drops_layers(tmp_path):
    """Hub wav2vec-family configs train with LayerDrop (transformers' default 0.1); a skipped layer
    would be missing from the hidden states the head weighs, so fine-tuning turns it off."""
    from ser.models.finetune import EncoderFinetune

    net = EncoderFinetune(4, name=str(_tiny_wav2vec_family(tmp_path / "w2v", layerdrop=0.9)), train_layers=1).train()
    assert net.encoder.config.layerdrop == 0.0
    for _ in range(5):  # with LayerDrop 0.9 nearly every batch would lose a layer
        assert net.hidden_layers(torch.randn(2, 1, 1, 4000)).shape[1] == 3
    spec = net.encoder_config()
    assert EncoderFinetune(4, name="exported", pretrained=False, encoder_config={**spec, "layerdrop": 0.5}).encoder.config.layerdrop == 0.0


def test_one_cycle_gives_each_layer_group_its_own_peak(encoders):
    model = EmotionClassifier(
        backbone={"arch": "encoder_finetune", "name": str(encoders["whisper"]), "pretrained": True, "train_layers": 2,
                  "layer_decay": 0.5},
        num_classes=4, emotions=list("abcd"),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
        scheduler={"interval": "step", "schedule": {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True,
                                                    "max_lr": 1e-3, "total_steps": 10}})
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["max_lr"] for g in optimizer.param_groups] == [1e-3, 5e-4, 2.5e-4]
    for _ in range(3):  # at the peak, each group sits at its own rate
        optimizer.step(), scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[0] == pytest.approx(2 * lrs[1]) == pytest.approx(4 * lrs[2])


@pytest.mark.parametrize("kind", ["whisper", "wav2vec2"])
def test_fine_tune_train_export_and_predict(encoders, kind, tmp_path, cache_dir):
    """The fine-tuned encoder through train.py, export and prediction; the export rebuilds the
    encoder from model.json alone (its weights are the fine-tuned ones, not the checkpoint's)."""
    import shutil

    from ser import Predictor
    from ser.features.encoder import EncoderInput

    out = tmp_path / kind
    r = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=2", "hardware.progress_bar=false",
              "evaluation.n_bootstrap=20", "features=encoder_input", f"features.encoder.name={encoders[kind]}",
              "model=encoder_finetune", "model.epochs=1", "model.batch_size=8", "model.backbone.train_layers=1",
              f"paths.cache_dir={cache_dir}", output_dir=out)
    assert r["n_test"] == 8 and len(r["layer_weights"][0]) == 3
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["backbone"]["encoder_config"]["model_type"] == kind
    assert spec["front_end"]["encoder"]["extractor_digest"] == EncoderInput(str(encoders[kind])).digest
    # The checkpoint's weights can go: the fine-tuned encoder is in the export. Only the extractor
    # settings are read, from where the run found them or from a copy.
    copy = tmp_path / "extractor"
    copy.mkdir()
    for name in ("preprocessor_config.json", "config.json"):
        shutil.copy(encoders[kind] / name, copy / name)
    files = [write_wav(tmp_path / f"new{i}.wav", tone(1.5, f0=150.0 + 30 * i, seed=i)) for i in range(2)]
    rows = Predictor(out, encoder=str(copy)).predict(files)
    assert all(row["label"] in r["emotions"] for row in rows)
    assert rows == Predictor(out).predict(files)


@pytest.mark.parametrize("overrides", [
    ["model=encoder_lda"],
    ["model=encoder_linear", "model.layers=each", "model.fusion=late", "model.inputs=[encoder_layers,functionals]",
     "model.feature_set=eGeMAPSv02", "model.search={C:[0.1,1.0]}"],
])
def test_linear_runs_export_and_predict_their_own_test_clips(encoders, overrides, tmp_path, cache_dir):
    """A classical run's linear classifier is exported as arrays (no pickle); scoring the test
    speaker's clips together (one speaker's standardisation) reproduces the run's predictions."""
    from ser import Predictor

    if "model.feature_set=eGeMAPSv02" in overrides:
        pytest.importorskip("opensmile")
    out = tmp_path / "run"
    r = train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=encoder",
              f"features.encoder.name={encoders['wav2vec2']}", *overrides, f"paths.cache_dir={cache_dir}",
              "evaluation.n_bootstrap=20", output_dir=out)
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["kind"] == "linear" and spec["front_end"]["encoder"]["weights_digest"]
    rows = Predictor(out).predict(r["test_clips"])
    assert [r["emotions"].index(row["label"]) for row in rows] == r["test_predictions"]


def test_a_kernel_svm_is_not_exported(tmp_path, cache_dir):
    pytest.importorskip("opensmile")
    out = tmp_path / "svm"
    train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "model=egemaps_svm",
          f"paths.cache_dir={cache_dir}", "evaluation.n_bootstrap=20", output_dir=out)
    assert (out / "results.json").is_file() and not (out / "model").exists()


def test_trimming_silence_encodes_only_the_speech(encoders, tmp_path):
    from conftest import tone
    from ser.features.encoder import SpeechEncoder

    speech = tone(1.0, sr=16000)
    padded = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(8000, np.float32)])
    plain, trimmed = SpeechEncoder(str(encoders["whisper"])), SpeechEncoder(str(encoders["whisper"]), trim_db=30)
    assert trimmed.fingerprint() != plain.fingerprint() and "trim_db" not in plain.describe()
    # Whisper frames are 20 ms: 2 s with the silence, about 1 s without it (librosa keeps a frame's margin).
    assert plain.from_signal(padded).shape[-1] == 100 and 50 <= trimmed.from_signal(padded).shape[-1] <= 58
    # A blip shorter than the minimum duration: the clip is kept whole rather than cut to nothing.
    blip = np.concatenate([np.zeros(16000, np.float32), tone(0.1, sr=16000), np.zeros(16000, np.float32)])
    assert trimmed.from_signal(blip).shape == plain.from_signal(blip).shape
