"""Corpus adapters: turn a folder of audio in a corpus's own layout into labelled clips.

Every adapter returns a `Corpus`: the usable clips (path, canonical emotion, speaker) and the
files it had to skip, each with the reason. Nothing here reads audio; that is ser.features.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ser.emotions import canonical, ordered
from ser.errors import DataError, NotFound, UnknownEmotion

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class Clip:
    path: str
    emotion: str
    speaker: str
    corpus: str


@dataclass
class Corpus:
    name: str
    clips: list[Clip]
    skipped: list[dict] = field(default_factory=list)

    @property
    def emotions(self) -> list[str]:
        return ordered(c.emotion for c in self.clips)

    @property
    def speakers(self) -> list[str]:
        return sorted({c.speaker for c in self.clips})

    def restrict(self, emotions) -> "Corpus":
        """Keep only clips of the given emotions (e.g. the classes two corpora share)."""
        keep = set(emotions)
        return Corpus(self.name, [c for c in self.clips if c.emotion in keep], list(self.skipped))


def _audio_files(root: Path):
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _require_dir(root: Path, what: str) -> Path:
    if not root.is_dir():
        raise NotFound(
            f"{what} not found at {root}. Point paths.data_root at the folder that holds it "
            f"(e.g. python train.py paths.data_root=/data/corpora) or fetch it with ser-download."
        )
    return root


# --- RAVDESS -------------------------------------------------------------------------------
# File name: MM-VV-EE-II-SS-RR-AA. Modality 03 = audio-only; vocal channel 01 = speech (02 = song).
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def load_ravdess(root: str | Path) -> Corpus:
    """RAVDESS speech: `<root>/Actor_XX/03-01-EE-II-SS-RR-AA.wav`; the actor is the speaker.

    Song (vocal channel 02) and video files are not speech-audio and are left out by design;
    anything else that does not parse is reported in `skipped`.
    """
    root = _require_dir(Path(root), "RAVDESS")
    clips, skipped = [], []
    for path in _audio_files(root):
        m = _RAVDESS_NAME.match(path.stem)
        if not m:
            skipped.append({"path": str(path), "reason": "name is not a RAVDESS code MM-VV-EE-II-SS-RR-AA"})
            continue
        modality, channel, emotion, _intensity, _statement, _rep, actor = m.groups()
        if modality != "03" or channel != "01":
            continue  # audio-visual/video or song: not part of the speech-audio corpus
        if emotion not in RAVDESS_EMOTIONS:
            skipped.append({"path": str(path), "reason": f"unknown RAVDESS emotion code {emotion}"})
            continue
        clips.append(Clip(str(path), RAVDESS_EMOTIONS[emotion], f"ravdess:{actor}", "ravdess"))
    return Corpus("ravdess", clips, skipped)


# --- EmoDB ---------------------------------------------------------------------------------
# File name: SSTTTEV = speaker (2 digits), text (a01..b10), emotion letter (German), version.
EMODB_EMOTIONS = {
    "W": "angry", "L": "boredom", "E": "disgust", "A": "fearful",
    "F": "happy", "T": "sad", "N": "neutral",
}
_EMODB_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def load_emodb(root: str | Path) -> Corpus:
    """EmoDB: `<root>/wav/SSTTTEV.wav` (or the wavs directly under root)."""
    root = _require_dir(Path(root), "EmoDB")
    wav_dir = root / "wav" if (root / "wav").is_dir() else root
    clips, skipped = [], []
    for path in _audio_files(wav_dir):
        m = _EMODB_NAME.match(path.stem)
        if not m:
            skipped.append({"path": str(path), "reason": "name is not an EmoDB code SSTTTEV"})
            continue
        speaker, _text, letter, _version = m.groups()
        if letter not in EMODB_EMOTIONS:
            skipped.append({"path": str(path), "reason": f"unknown EmoDB emotion letter {letter}"})
            continue
        clips.append(Clip(str(path), EMODB_EMOTIONS[letter], f"emodb:{speaker}", "emodb"))
    return Corpus("emodb", clips, skipped)


# --- Generic layouts -----------------------------------------------------------------------
def load_folder(root: str | Path, speaker_regex: str | None = None, name: str = "folder") -> Corpus:
    """A folder per label: `<root>/<emotion>/[<speaker>/]file.wav`.

    The speaker is the sub-folder under the emotion folder, or the first group of
    `speaker_regex` matched against the file name. Without either, every clip gets speaker
    "unknown" and only `split=random` (speaker-dependent) can use the corpus.
    """
    root = _require_dir(Path(root), f"corpus folder {name}")
    pattern = re.compile(speaker_regex) if speaker_regex else None
    clips, skipped = [], []
    for path in _audio_files(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            skipped.append({"path": str(path), "reason": "file is not inside an emotion folder"})
            continue
        try:
            emotion = canonical(parts[0])
        except UnknownEmotion as err:
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        speaker = "unknown"
        if pattern is not None:
            m = pattern.search(path.name)
            if not m:
                skipped.append({"path": str(path), "reason": f"file name does not match speaker_regex {speaker_regex!r}"})
                continue
            speaker = m.group(1)
        elif len(parts) >= 3:
            speaker = parts[1]
        clips.append(Clip(str(path), emotion, f"{name}:{speaker}", name))
    return Corpus(name, clips, skipped)


def load_manifest(csv_path: str | Path, name: str = "manifest") -> Corpus:
    """A CSV manifest with a header `path,label[,speaker]`; relative paths are relative to the CSV."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise NotFound(f"manifest {csv_path} not found")
    clips, skipped = [], []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"manifest {csv_path} lacks column(s) {sorted(missing)}; expected path,label[,speaker]")
        for row in reader:
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            try:
                emotion = canonical(row["label"])
            except UnknownEmotion as err:
                skipped.append({"path": str(path), "reason": str(err)})
                continue
            if not path.is_file():
                skipped.append({"path": str(path), "reason": "file listed in manifest does not exist"})
                continue
            speaker = (row.get("speaker") or "unknown").strip() or "unknown"
            clips.append(Clip(str(path), emotion, f"{name}:{speaker}", name))
    return Corpus(name, clips, skipped)


def label_mapping(corpora: list[str], emotions: list[str]) -> dict[str, dict[str, str]]:
    """{corpus: {its own label code: the shared emotion}} for the emotions a run uses: what a
    cross-corpus result compares. Corpora without codes of their own (folders, manifests) are
    labelled with the canonical names themselves."""
    codes = {"emodb": EMODB_EMOTIONS, "ravdess": RAVDESS_EMOTIONS}
    return {c: {code: e for code, e in codes.get(c, {e: e for e in emotions}).items() if e in emotions}
            for c in sorted(corpora)}


def combine(corpora: list[Corpus], shared_only: bool = False, name: str = "combined") -> Corpus:
    """Merge corpora under the unified vocabulary; `shared_only` keeps the emotions all of them have."""
    clips = [c for corpus in corpora for c in corpus.clips]
    skipped = [s for corpus in corpora for s in corpus.skipped]
    merged = Corpus(name, clips, skipped)
    if shared_only:
        shared = set.intersection(*(set(c.emotions) for c in corpora))
        merged = merged.restrict(shared)
    return merged
