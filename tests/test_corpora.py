from pathlib import Path

import pytest

from conftest import SHARED, write_wav
from ser.data.corpora import combine, load_emodb, load_folder, load_manifest, load_ravdess
from ser.emotions import EMOTIONS, canonical
from ser.errors import DataError, UnknownEmotion


def test_ravdess_codes_speakers_and_exclusions(tmp_path):
    root = tmp_path / "ravdess"
    write_wav(root / "Actor_01" / "03-01-05-01-01-01-01.wav")  # angry speech, actor 1
    write_wav(root / "Actor_02" / "03-01-02-02-01-02-02.wav")  # calm speech, actor 2
    write_wav(root / "Actor_02" / "03-02-03-01-01-01-02.wav")  # song: not speech, left out
    write_wav(root / "Actor_02" / "01-01-03-01-01-01-02.wav")  # audio-visual: left out
    write_wav(root / "Actor_03" / "03-01-09-01-01-01-03.wav")  # emotion 09 does not exist
    write_wav(root / "Actor_03" / "notes.wav")
    corpus = load_ravdess(root)
    assert [(c.emotion, c.speaker) for c in corpus.clips] == [("angry", "ravdess:01"), ("calm", "ravdess:02")]
    reasons = {Path(s["path"]).name: s["reason"] for s in corpus.skipped}
    assert "emotion code 09" in reasons["03-01-09-01-01-01-03.wav"]
    assert "not a RAVDESS code" in reasons["notes.wav"]


def test_emodb_codes(tmp_path):
    for name in ["03a01Wa.wav", "08b02Lb.wav", "16a05Tc.wav", "10a01Xa.wav", "readme.wav"]:
        write_wav(tmp_path / "wav" / name)
    corpus = load_emodb(tmp_path)
    assert [(c.emotion, c.speaker) for c in corpus.clips] == [
        ("angry", "emodb:03"), ("boredom", "emodb:08"), ("sad", "emodb:16")]
    assert len(corpus.skipped) == 2


@pytest.mark.skipif(not (SHARED / "emodb").is_dir(), reason="../shared/datasets/emodb not present")
def test_real_emodb_layout_matches_its_readme():
    corpus = load_emodb(SHARED / "emodb")
    assert len(corpus.clips) == 535 and not corpus.skipped
    assert len(corpus.speakers) == 10
    counts = {e: sum(c.emotion == e for c in corpus.clips) for e in corpus.emotions}
    assert counts == {"angry": 127, "boredom": 81, "neutral": 79, "happy": 71, "fearful": 69, "sad": 62, "disgust": 46}


def test_folder_tree_with_speaker_subfolders_and_unknown_label(tmp_path):
    write_wav(tmp_path / "Happy" / "alice" / "a.wav")
    write_wav(tmp_path / "ang" / "bob" / "b.flac")
    write_wav(tmp_path / "sarcasm" / "bob" / "c.wav")
    corpus = load_folder(tmp_path, name="mine")
    assert sorted((c.emotion, c.speaker) for c in corpus.clips) == [("angry", "mine:bob"), ("happy", "mine:alice")]
    assert "unknown emotion label 'sarcasm'" in corpus.skipped[0]["reason"]


def test_folder_speaker_regex(tmp_path):
    write_wav(tmp_path / "sad" / "spk7_001.wav")
    write_wav(tmp_path / "sad" / "nospeaker.wav")
    corpus = load_folder(tmp_path, speaker_regex=r"^(spk\d+)_")
    assert [c.speaker for c in corpus.clips] == ["folder:spk7"]
    assert "speaker_regex" in corpus.skipped[0]["reason"]


def test_manifest(tmp_path):
    write_wav(tmp_path / "clips" / "x.wav")
    write_wav(tmp_path / "clips" / "y.wav")
    (tmp_path / "m.csv").write_text("path,label,speaker\nclips/x.wav,fear,s1\nclips/y.wav,meh,s2\nclips/z.wav,sad,s3\n")
    corpus = load_manifest(tmp_path / "m.csv")
    assert [(c.emotion, c.speaker) for c in corpus.clips] == [("fearful", "manifest:s1")]
    assert {s["reason"].split(" ")[0] for s in corpus.skipped} == {"unknown", "file"}
    (tmp_path / "bad.csv").write_text("file,emotion\n")
    with pytest.raises(DataError, match="lacks column"):
        load_manifest(tmp_path / "bad.csv")


def test_unified_vocabulary_and_combination(tmp_path):
    assert canonical("Anger") == "angry" and canonical("happiness") == "happy" and "boredom" in EMOTIONS
    with pytest.raises(UnknownEmotion):
        canonical("sarcasm")
    write_wav(tmp_path / "ravdess" / "Actor_01" / "03-01-02-01-01-01-01.wav")  # calm: RAVDESS only
    write_wav(tmp_path / "ravdess" / "Actor_01" / "03-01-04-01-01-01-01.wav")  # sad
    write_wav(tmp_path / "emodb" / "wav" / "03a01Lb.wav")  # boredom: EmoDB only
    write_wav(tmp_path / "emodb" / "wav" / "03a01Tb.wav")  # sad
    both = combine([load_ravdess(tmp_path / "ravdess"), load_emodb(tmp_path / "emodb")], shared_only=True)
    assert [c.emotion for c in both.clips] == ["sad", "sad"]
    assert {c.speaker for c in both.clips} == {"ravdess:01", "emodb:03"}


def test_missing_corpus_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="paths.data_root"):
        load_emodb(tmp_path / "nope")
