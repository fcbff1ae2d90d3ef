"""A synthetic emotional-speech corpus, generated in code: the built-in default for demos and tests.

Each clip is a string of voiced "syllables" from a harmonic source with a pitch contour,
shaped by vowel formants. Emotions move the prosodic cues that real emotional speech moves
(pitch level and range, speaking rate, loudness, spectral tilt, breathiness, jitter); speakers
move pitch, vocal-tract length and rate. Clip-to-clip variation is wide enough that the classes
overlap: a good speaker-independent model lands well above chance and clearly below 100%.
Deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.errors import ConfigError
from ser.io import atomic_dir

SR = 22050

# Per emotion: pitch factor, pitch range (fraction), syllables/s, tilt dB/octave, level dB,
# breathiness (noise fraction), jitter (fraction).
EMOTION_PROSODY = {
    "neutral": dict(pitch=1.00, range=0.10, rate=4.0, tilt=-12.0, level=0.0, breath=0.05, jitter=0.005),
    "happy": dict(pitch=1.22, range=0.28, rate=4.6, tilt=-9.0, level=2.5, breath=0.04, jitter=0.008),
    "sad": dict(pitch=0.92, range=0.06, rate=3.0, tilt=-15.0, level=-4.0, breath=0.12, jitter=0.010),
    "angry": dict(pitch=1.15, range=0.20, rate=5.0, tilt=-6.5, level=5.0, breath=0.03, jitter=0.015),
    "fearful": dict(pitch=1.30, range=0.14, rate=5.4, tilt=-10.0, level=0.5, breath=0.10, jitter=0.030),
}
# How much each cue varies from clip to clip (std, in the cue's own units); this is what makes
# the task hard.
CLIP_SPREAD = dict(pitch=0.10, range=0.06, rate=0.7, tilt=2.5, level=3.0, breath=0.03, jitter=0.006)

VOWEL_FORMANTS = np.array(  # F1, F2, F3 in Hz for an adult male vocal tract
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]]
)
FORMANT_BANDWIDTH = np.array([90.0, 110.0, 170.0])


def _speaker_traits(index: int, rng: np.random.Generator) -> dict:
    female = index % 2 == 1
    return dict(
        f0=(200.0 if female else 115.0) * rng.uniform(0.85, 1.15),
        tract=(1.17 if female else 1.0) * rng.uniform(0.95, 1.05),  # formant scale
        rate=rng.uniform(0.85, 1.15),
        level=rng.uniform(-3.0, 3.0),
    )


def synthesize_clip(emotion: str, speaker: dict, rng: np.random.Generator, duration: float) -> np.ndarray:
    """One clip of emotional pseudo-speech, float32 in [-1, 1], at 22050 Hz."""
    base = EMOTION_PROSODY[emotion]
    cue = {k: base[k] + CLIP_SPREAD[k] * rng.standard_normal() for k in base}
    cue["range"] = max(cue["range"], 0.01)
    cue["breath"] = float(np.clip(cue["breath"], 0.0, 0.4))
    cue["jitter"] = max(cue["jitter"], 0.0)
    rate = max(1.5, cue["rate"] * speaker["rate"])
    f0_mean = speaker["f0"] * max(cue["pitch"], 0.6)

    n = int(duration * SR)
    out = np.zeros(n, dtype=np.float64)
    t = 0.02 * rng.uniform(1, 5)
    while t < duration - 0.1:
        syl = rng.uniform(0.55, 0.95) / rate
        start, stop = int(t * SR), min(n, int((t + syl) * SR))
        m = stop - start
        if m < 64:
            break
        tt = np.arange(m) / SR
        # Pitch: a rise-fall per syllable, a random accent, declination over the clip, jitter.
        accent = rng.uniform(-1, 1)
        contour = 1 + cue["range"] * (accent * np.sin(np.pi * tt / syl) - 0.3 * t / duration)
        f0 = f0_mean * contour * (1 + cue["jitter"] * rng.standard_normal(m))
        f0 = np.clip(f0, 50, 600)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        formants = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] * speaker["tract"]
        n_harm = int(8000 // f0.max())
        k = np.arange(1, n_harm + 1)[:, None]
        freqs = k * f0[None, :]
        # Source spectrum: `tilt` dB per octave; filter: sum of formant resonances.
        gain = 10 ** (cue["tilt"] * np.log2(k) / 20)
        env = sum(1.0 / (1 + ((freqs - fc) / bw) ** 2) for fc, bw in zip(formants, FORMANT_BANDWIDTH))
        voiced = np.sum(gain * (0.05 + env) * np.sin(k * phase[None, :]), axis=0)
        voiced /= np.max(np.abs(voiced)) + 1e-9
        noise = rng.standard_normal(m)
        seg = (1 - cue["breath"]) * voiced + cue["breath"] * noise
        window = np.hanning(m) ** 0.5
        out[start:stop] += seg * window
        t += syl + rng.uniform(0.03, 0.25) / rate * 2
    level_db = cue["level"] + speaker["level"] - 12.0
    out = out / (np.max(np.abs(out)) + 1e-9) * 10 ** (level_db / 20)
    out += 10 ** (-55 / 20) * rng.standard_normal(n)  # room noise floor
    return np.clip(out, -1, 1).astype(np.float32)


def make_synthetic_corpus(
    out_dir: str | Path,
    emotions=("neutral", "happy", "sad", "angry"),
    n_speakers: int = 6,
    clips_per_speaker_emotion: int = 10,
    duration: tuple[float, float] = (1.2, 2.0),
    seed: int = 0,
) -> Path:
    """Write the corpus as `<out_dir>/<emotion>/<speaker>/<file>.wav` (the folder-per-label layout).

    The corpus lands in a sub-folder named by a hash of the arguments, so different settings
    never mix, and it is built in a temporary folder and renamed into place, so an interrupted
    build never leaves a half corpus behind. Returns the corpus folder.
    """
    unknown = set(emotions) - set(EMOTION_PROSODY)
    if unknown:
        raise ConfigError(f"synthetic corpus has no prosody for {sorted(unknown)}; choose from {sorted(EMOTION_PROSODY)}")
    params = dict(emotions=list(emotions), n_speakers=n_speakers, clips=clips_per_speaker_emotion,
                  duration=list(duration), seed=seed, version=1)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    final = Path(out_dir) / f"synthetic-{key}"
    if (final / "params.json").is_file():
        return final
    # Another process building the same corpus at the same time: the first one renamed in wins.
    with atomic_dir(final, replace=False) as tmp:
        for s in range(n_speakers):
            speaker = _speaker_traits(s, np.random.default_rng([seed, s]))
            for e_idx, emotion in enumerate(emotions):
                folder = tmp / emotion / f"spk{s:02d}"
                folder.mkdir(parents=True)
                for i in range(clips_per_speaker_emotion):
                    rng = np.random.default_rng([seed, s, e_idx, i, 7])
                    clip = synthesize_clip(emotion, speaker, rng, rng.uniform(*duration))
                    sf.write(folder / f"spk{s:02d}_{emotion}_{i:02d}.wav", clip, SR, subtype="PCM_16")
        (tmp / "params.json").write_text(json.dumps(params, indent=1))
    return final
