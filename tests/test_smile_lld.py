"""openSMILE frame-level descriptors as a front end: known answers on tones, the cache, and the
whole train -> predict path with features=compare_lld."""

import json

import numpy as np
import pytest

from conftest import SR, TINY, generate, tone, train, write_wav
from ser.data.build import front_end_from
from ser.errors import BadAudio, ConfigError
from ser.features.cache import FeatureCache
from ser.features.mel import LogMel
from ser.features.smile import SmileLLD, smile_lld

opensmile = pytest.importorskip("opensmile")


def _f0_row(feature_set: str = "ComParE_2016") -> int:
    names = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors).feature_names
    return next(i for i, n in enumerate(names) if n.startswith("F0final"))


@pytest.mark.parametrize("f0", [140.0, 260.0])
def test_pitch_descriptor_follows_the_tone(f0):
    x = smile_lld(tone(1.5, f0=f0), SR)
    assert x.shape[0] == 130 and 120 <= x.shape[1] <= 160  # 65 descriptors + deltas, 10 ms frames
    assert np.isfinite(x).all()
    voiced = x[_f0_row(), x[_f0_row()] > 0]
    assert len(voiced) > 0.5 * x.shape[1]
    assert np.median(voiced) == pytest.approx(f0, rel=0.05)


def test_deltas_are_the_time_derivative_of_the_descriptors():
    y = tone(1.0, f0=200.0)
    plain = smile_lld(y, SR, deltas=False)
    both = smile_lld(y, SR, deltas=True)
    np.testing.assert_allclose(both[:65], plain)
    np.testing.assert_allclose(both[65:], np.gradient(plain, axis=1), atol=1e-5)
    assert smile_lld(y, SR, "eGeMAPSv02").shape[0] == 50


def test_config_picks_the_front_end_and_cache_keeps_them_apart(tmp_path):
    lld = front_end_from({"kind": "smile_lld", "feature_set": "ComParE_2016", "deltas": True, "sr": SR,
                          "min_duration": 0.25, "max_duration": 30.0})
    assert isinstance(lld, SmileLLD) and lld.sr == SR
    mel = front_end_from({"kind": "mel", "sr": SR, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "fmin": 0.0,
                          "fmax": None, "top_db": 80.0, "ref": "max", "min_duration": 0.25, "max_duration": 30.0})
    assert isinstance(mel, LogMel)
    with pytest.raises(ConfigError, match="features.kind='wav2vec' is not a valid choice; choose one of: mel, smile_lld"):
        front_end_from({"kind": "wav2vec", "min_duration": 0.25, "max_duration": 30.0})
    wav = write_wav(tmp_path / "a.wav", tone(1.0))
    a, _ = FeatureCache(tmp_path / "cache", lld).get_many([str(wav)])
    b, _ = FeatureCache(tmp_path / "cache", mel).get_many([str(wav)])
    assert a[str(wav)].shape[0] == 130 and b[str(wav)].shape[0] == 128
    assert len(list((tmp_path / "cache").glob("*/front_end.json"))) == 2
    again, _ = FeatureCache(tmp_path / "cache", lld).get_many([str(wav)])
    np.testing.assert_array_equal(again[str(wav)], a[str(wav)])


def test_unusable_clips_are_reported_not_fatal(tmp_path):
    front = SmileLLD()
    short = write_wav(tmp_path / "short.wav", tone(0.1))
    with pytest.raises(BadAudio, match="shorter"):
        front.compute(str(short))
    good = write_wav(tmp_path / "good.wav", tone(1.0))
    feats, skipped = FeatureCache(tmp_path / "cache", front).get_many([str(short), str(good)])
    assert list(feats) == [str(good)] and skipped[0]["path"] == str(short)


@pytest.mark.slow
def test_train_and_predict_with_lld_features(tmp_path, cache_dir):
    out = tmp_path / "run"
    train(*TINY, "features=compare_lld", f"paths.cache_dir={cache_dir}", output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["config"]["features"]["kind"] == "smile_lld" and r["n_test"] == 12
    assert 0.0 <= r["metrics"]["ua"] <= 1.0
    spec = json.loads((out / "model" / "model.json").read_text())
    assert spec["front_end"]["kind"] == "smile_lld"
    from ser import Predictor

    long = write_wav(tmp_path / "new.wav", np.tile(tone(1.0, f0=180.0), 3))
    row = Predictor(out).predict([long], window=1.0)[0]
    assert row["label"] in r["emotions"] and sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(row["windows"]) == 3


@pytest.mark.slow
def test_what_only_suits_log_mels_refuses_other_features(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="log-mel front end"):
        generate("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "features=compare_lld",
                 f"paths.cache_dir={cache_dir}", "mode=train", output_dir=tmp_path / "gen")
    with pytest.raises(ConfigError, match="normalization=none only suits log-mel"):
        train(*TINY, "features=compare_lld", "model.input.normalization=none", f"paths.cache_dir={cache_dir}",
              output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="log-mel front end"):
        train(*TINY, "features=compare_lld", "aug=ddpm", f"paths.cache_dir={cache_dir}", output_dir=tmp_path / "syn")


def test_a_missing_opensmile_stops_the_run_naming_the_install_command(tmp_path, monkeypatch):
    # Not one clip's fault: the cache must not skip every clip with the same reason.
    import sys

    from ser.errors import MissingDependency, SerError
    from ser.features.cache import FeatureCache
    from ser.features.smile import SmileLLD

    monkeypatch.setitem(sys.modules, "opensmile", None)  # `import opensmile` now raises ImportError
    clip = write_wav(tmp_path / "a.wav")
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[classical\]'") as err:
        FeatureCache(tmp_path / "cache", SmileLLD()).get_many([str(clip)])
    assert isinstance(err.value, SerError) and isinstance(err.value, ImportError)
