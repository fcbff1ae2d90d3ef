"""One emotion vocabulary shared by every corpus, so corpora can be combined or compared."""

from __future__ import annotations

from ser.errors import UnknownEmotion

# Canonical names, in a fixed order. A dataset uses the subset it has, in this order,
# so class indices are stable across runs and corpora.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)

# Spellings seen in folder names and manifests -> canonical name.
ALIASES: dict[str, str] = {
    "neu": "neutral", "neutral": "neutral", "n": "neutral",
    "calm": "calm",
    "hap": "happy", "happy": "happy", "happiness": "happy", "joy": "happy", "exc": "happy",
    "sad": "sad", "sadness": "sad",
    "ang": "angry", "anger": "angry", "angry": "angry",
    "fea": "fearful", "fear": "fearful", "fearful": "fearful", "anxiety": "fearful",
    "dis": "disgust", "disgust": "disgust", "disgusted": "disgust",
    "sur": "surprised", "surprise": "surprised", "surprised": "surprised",
    "bor": "boredom", "boredom": "boredom", "bored": "boredom",
}


def canonical(label: str) -> str:
    """Map any known spelling of an emotion to its canonical name."""
    key = label.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    raise UnknownEmotion(f"unknown emotion label {label!r}; known: {sorted(set(ALIASES.values()))}")


def ordered(labels) -> list[str]:
    """The given canonical labels in vocabulary order (stable class indices)."""
    present = set(labels)
    return [e for e in EMOTIONS if e in present]
