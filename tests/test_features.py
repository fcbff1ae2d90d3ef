import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, tone, write_wav
from ser.errors import BadAudio
from ser.features.audio import load_audio
from ser.features.cache import FeatureCache, file_digest
from ser.features.mel import LogMel, MelParams, log_mel, mel_to_audio
from ser.features.transforms import FeatureNormalizer, crop_or_pad, resize, spec_augment


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_bit_depths_decode_to_the_same_signal(tmp_path, subtype):
    y = tone(0.5)
    path = write_wav(tmp_path / f"{subtype}.wav", y, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and len(out) == len(y)
    assert np.max(np.abs(out - y)) < 0.02  # 8-bit quantisation is the coarsest


def test_stereo_other_rates_and_formats(tmp_path):
    stereo = np.stack([tone(1.0, 44100), tone(1.0, 44100, f0=330)], axis=1)
    out = load_audio(write_wav(tmp_path / "st.wav", stereo, sr=44100))
    assert out.ndim == 1 and abs(len(out) - SR) <= 1
    out8k = load_audio(write_wav(tmp_path / "lo.flac", tone(1.0, 8000), sr=8000, subtype="PCM_16"))
    assert abs(len(out8k) - SR) <= 1
    ogg = tmp_path / "c.ogg"
    sf.write(ogg, tone(1.0), SR, format="OGG", subtype="VORBIS")
    assert abs(len(load_audio(ogg)) - SR) < 200


def test_unusable_inputs_are_named_with_a_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    good = write_wav(tmp_path / "good.wav")
    (tmp_path / "corrupt.wav").write_bytes(good.read_bytes()[:40] + os.urandom(2000))
    write_wav(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    write_wav(tmp_path / "short.wav", tone(0.1))
    expected = {"empty.wav": "empty", "text.wav": "cannot decode", "silent.wav": "silent", "short.wav": "shorter"}
    for name, reason in expected.items():
        with pytest.raises(BadAudio, match=reason) as err:
            load_audio(tmp_path / name)
        assert err.value.path.endswith(name)
    try:  # a corrupt body either fails to decode or decodes to noise; it must not crash
        load_audio(tmp_path / "corrupt.wav")
    except BadAudio:
        pass


def test_ten_minute_clip_is_truncated_not_loaded_whole(tmp_path):
    y = np.tile(tone(1.0, 8000), 600)  # 10 minutes at 8 kHz
    path = write_wav(tmp_path / "long.wav", y, sr=8000)
    out = load_audio(path, max_duration=30.0)
    assert abs(len(out) - 30 * SR) <= 2


def test_mp3_if_encoder_available(tmp_path):
    path = tmp_path / "x.mp3"
    try:
        sf.write(path, tone(1.0), SR, format="MP3")
    except Exception:
        pytest.skip("this libsndfile has no MP3 encoder")
    assert abs(len(load_audio(path)) - SR) < 2000


def test_log_mel_reference_front_end_and_inverse():
    p = MelParams()
    db = log_mel(tone(2.0), p)
    assert db.shape == (128, 1 + 2 * SR // 512)
    assert db.max() == 0.0 and db.min() >= -80.0
    y = mel_to_audio(db, p, n_iter=8)
    assert abs(len(y) - 2 * SR) < 512 and np.abs(y).max() > 0.1
    # Griffin-Lim's random starting phases are seeded: one spectrogram, one waveform.
    assert np.array_equal(mel_to_audio(db, p, n_iter=8), y) and not np.array_equal(mel_to_audio(db, p, n_iter=8, seed=1), y)


def test_cache_is_keyed_by_content_and_writes_atomically(tmp_path):
    a = write_wav(tmp_path / "a.wav", tone(1.0, f0=200))
    b = write_wav(tmp_path / "b.wav", tone(1.0, f0=200))  # same bytes, other name
    c = write_wav(tmp_path / "c.wav", tone(1.0, f0=300))
    (tmp_path / "bad.wav").write_text("nope")
    cache = FeatureCache(tmp_path / "cache", LogMel())
    feats, skipped = cache.get_many([str(a), str(b), str(c), str(tmp_path / "bad.wav")])
    assert file_digest(a) == file_digest(b) != file_digest(c)
    assert np.array_equal(feats[str(a)], feats[str(b)])
    assert [s["path"] for s in skipped] == [str(tmp_path / "bad.wav")]
    entries = sorted(cache.dir.rglob("*.safetensors"))
    assert len(entries) == 2 and not list(cache.dir.rglob("*.tmp"))
    # A killed writer leaves only a temp file, which is never read as an entry; the rerun recomputes.
    entries[0].unlink()
    (entries[0].parent / f".{entries[0].name}.999.tmp").write_bytes(b"half")
    again, _ = cache.get_many([str(a), str(c)])
    assert np.array_equal(again[str(a)], feats[str(a)]) and np.array_equal(again[str(c)], feats[str(c)])
    # Other parameters, other cache folder.
    other = FeatureCache(tmp_path / "cache", LogMel(mel=MelParams(n_mels=64)))
    assert other.dir != cache.dir and other.get_many([str(a)])[0][str(a)].shape[0] == 64


def test_parallel_extraction_matches_serial(tmp_path):
    paths = [str(write_wav(tmp_path / f"{i}.wav", tone(0.6, f0=150 + 20 * i, seed=i))) for i in range(10)]
    serial, _ = FeatureCache(tmp_path / "s", LogMel()).get_many(paths, workers=0)
    parallel, _ = FeatureCache(tmp_path / "p", LogMel()).get_many(paths, workers=2)
    assert all(np.array_equal(serial[p], parallel[p]) for p in paths)


def test_cache_survives_a_killed_extraction(tmp_path):
    """Kill a process mid-way through filling the cache; every entry left behind is complete."""
    paths = [str(write_wav(tmp_path / f"{i}.wav", tone(3.0, f0=120 + i, seed=i))) for i in range(40)]
    script = (f"from ser.features.cache import FeatureCache; from ser.features.mel import LogMel; "
              f"FeatureCache({str(tmp_path / 'c')!r}, LogMel()).get_many({paths!r})")
    proc = subprocess.Popen(["python", "-c", script])
    import time
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "c").rglob("*.safetensors"))) < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    from safetensors.numpy import load_file
    for entry in (tmp_path / "c").rglob("*.safetensors"):
        assert load_file(str(entry))["features"].shape[0] == 128
    feats, skipped = FeatureCache(tmp_path / "c", LogMel()).get_many(paths)
    assert len(feats) == 40 and not skipped


def test_transforms():
    import torch

    mel = torch.randn(1, 128, 87) * 10 - 40
    norm = FeatureNormalizer("speaker").fit([mel, mel + 5], ["s1", "s2"])
    z = norm(mel + 5, "s2")
    assert abs(float(z.mean())) < 0.05
    with pytest.raises(KeyError):
        norm(mel, "unseen")
    assert crop_or_pad(mel, 128, random=False).shape == (1, 128, 128)
    assert crop_or_pad(mel, 40, random=True).shape == (1, 128, 40)
    assert resize(mel, (224, 224)).shape == (1, 224, 224)
    masked = spec_augment(torch.ones(1, 128, 100), freq_width=20, time_width=0.2, generator=torch.Generator().manual_seed(0))
    assert 0 < float((masked == 0).float().mean()) < 0.6


def test_repeat_padding_keeps_clip_statistics():
    import torch

    mel = torch.randn(1, 128, 30)
    padded = crop_or_pad(mel, 128, random=False, pad="repeat")
    assert padded.shape == (1, 128, 128) and torch.equal(padded[..., 30:60], mel)
    assert abs(float(padded.mean() - mel.mean())) < 0.05


SLOW_FILL = """
import sys, time
import numpy as np
from ser.features.cache import FeatureCache

class Slow:  # a front end that takes 0.2 s a clip and counts its computations in a shared file
    kind = "slow"
    def fingerprint(self): return "v1"
    def describe(self): return {{}}
    def compute(self, path):
        with open({count!r}, "a") as f: f.write(path + "\\n")
        time.sleep(0.2)
        return np.zeros((4, 3), np.float32)

print("start", flush=True)
feats, skipped = FeatureCache({root!r}, Slow()).get_many({paths!r})
assert len(feats) == {n} and not skipped, (len(feats), skipped)
"""


def test_concurrent_jobs_extract_a_corpus_once(tmp_path):
    """Jobs of a sweep start together: one fills the cache, the others wait and read it."""
    paths = [str(write_wav(tmp_path / f"{i}.wav", tone(0.3, f0=150 + 10 * i, seed=i))) for i in range(8)]
    count = tmp_path / "computed.txt"
    script = SLOW_FILL.format(count=str(count), root=str(tmp_path / "c"), paths=paths, n=len(paths))
    procs = [subprocess.Popen(["python", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    computed = count.read_text().split()
    assert sorted(computed) == sorted(paths)  # each clip once: 8 computations, not 24
