"""Emotions of new audio files from a trained run.

    ser-predict --checkpoint outputs/runs/2026-11-24_17-00-00 a.wav b.flac
    ser-predict --checkpoint RUN_DIR --window 3 --hop 1.5 long_interview.wav
    ser-predict --checkpoint RUN_DIR --encoder /models/whisper-tiny.en clip.wav   # encoder runs, offline

One JSON line per file: path, label, probabilities (per emotion); with --window, also the
per-window scores (the file's scores are their mean). From Python:

    from ser import Predictor
    Predictor("outputs/runs/...").predict(["a.wav"])
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ser.data.build import DIGESTS, front_end_from, functionals_front_end, with_channels
from ser.errors import BadAudio, ConfigError, PretrainedWeightsUnavailable, SerError
from ser.features.audio import load_audio
from ser.features.smile import SmileFunctionals
from ser.models.classical import clip_views, input_names, standardize_per_speaker
from ser.models.export import eval_pipeline, load_classifier, load_functionals_normalizer, model_dir_of, predict_proba
from ser.models.linear_model import LinearModel


class Predictor:
    def __init__(self, run_dir: str | Path, device: str = "cpu", encoder: str | None = None):
        """`encoder`: where the run's speech encoder is (a hub id or local dir) when it is not where
        the run found it; its weights must be the ones the model was trained on."""
        model_dir = model_dir_of(run_dir)
        self.spec = json.loads((model_dir / "model.json").read_text())
        fe = self.spec["front_end"]
        # The features the model was trained on: log-mel, openSMILE LLDs, or a speech encoder's layers.
        self.front_end = _encoder_front_end(fe, encoder) if fe["kind"] in DIGESTS else front_end_from(fe)
        self.min_duration, self.max_duration = fe["min_duration"], fe["max_duration"]
        self.emotions, self.device = self.spec["emotions"], device
        if self.spec.get("kind") == "linear":  # the classical path: a linear classifier on clip vectors
            self.linear, _ = LinearModel.load(model_dir)
            m = self.spec["model"]
            self.functionals = (SmileFunctionals(m["feature_set"], fe["sr"], fe["min_duration"], fe["max_duration"])
                                if "functionals" in input_names(m["inputs"]) else None)
            return
        self.linear = None
        self.net, self.normalizer, self.spec = load_classifier(model_dir)
        self.functionals = functionals_front_end(fe)  # and per-clip functionals, for models that read them too
        self.functionals_normalizer = load_functionals_normalizer(model_dir, self.spec)
        self.pipeline = eval_pipeline(self.normalizer, self.spec)

    def _features(self, y: np.ndarray):
        frames = with_channels(torch.from_numpy(self.front_end.from_signal(y)))
        if self.functionals is None:
            return frames, None
        return frames, torch.from_numpy(np.nan_to_num(self.functionals.from_signal(y), nan=0.0, posinf=0.0, neginf=0.0))

    def _segments(self, path: str, window: float | None, hop: float | None):
        """(start s, end s, frames, functionals or None) per scored segment: the file, or its windows."""
        # Windowed scoring reads the whole file, however long.
        sr = self.front_end.sr
        y = load_audio(path, sr=sr, min_duration=self.min_duration, max_duration=None if window else self.max_duration)
        if not window:
            return [(0.0, len(y) / sr, *self._features(y))]
        size, step = int(window * sr), int((hop or window) * sr)
        starts = list(range(0, max(1, len(y) - size + 1), step))
        return [(s / sr, min(len(y), s + size) / sr, *self._features(y[s:s + size])) for s in starts]

    def _inputs(self, segs, speaker: str) -> list:
        frames = [self.pipeline(m, speaker, train=False) for _, _, m, _ in segs]
        if self.functionals_normalizer is None:
            return frames
        return [(x, self.functionals_normalizer(v, speaker)) for x, (_, _, _, v) in zip(frames, segs)]

    def predict(self, paths, window: float | None = None, hop: float | None = None, per_file_norm: bool = False) -> list[dict]:
        """One dict per path; unusable files get an `error` instead of a label."""
        decoded, results = {}, {}
        for p in map(str, paths):
            try:
                decoded[p] = self._segments(p, window, hop)
            except BadAudio as err:
                results[p] = {"path": p, "error": err.reason}
        if self.linear is not None:
            probs = self._linear_proba(decoded, per_file_norm)
        elif self.normalizer.mode == "speaker":
            # Speaker normalisation needs the speaker's statistics: the files scored together are
            # taken to be one speaker, unless per_file_norm treats each file as its own.
            groups = {p: [p] for p in decoded} if per_file_norm else {"*": list(decoded)}
            for key, members in groups.items():
                if members:
                    segs = [seg for p in members for seg in decoded[p]]
                    self.normalizer.add_speaker(key, [m for _, _, m, _ in segs])
                    if self.functionals_normalizer is not None:
                        self.functionals_normalizer.add_speaker(key, [v for _, _, _, v in segs])
        for p, segs in decoded.items():
            if self.linear is not None:
                probs_p = probs[p]
            else:
                speaker = p if per_file_norm else "*"
                probs_p = predict_proba(self.net, self._inputs(segs, speaker), device=self.device).numpy()
            mean = probs_p.mean(axis=0)
            out = {"path": p, "label": self.emotions[int(mean.argmax())],
                   "probabilities": {e: round(float(v), 4) for e, v in zip(self.emotions, mean)}}
            if window:
                out["windows"] = [{"start": round(a, 3), "end": round(b, 3), "label": self.emotions[int(q.argmax())],
                                   "probabilities": {e: round(float(v), 4) for e, v in zip(self.emotions, q)}}
                                  for (a, b, _, _), q in zip(segs, probs_p)]
            results[p] = out
        return [results[str(p)] for p in paths]


    def _linear_proba(self, decoded: dict, per_file_norm: bool) -> dict:
        """Per file, its segments' probabilities from the linear classifier. As for the networks,
        per-speaker standardisation takes the files scored together as one speaker (or, with
        per_file_norm, each file as its own), so score several clips of a speaker at once."""
        m, out = self.spec["model"], {}
        groups = [[p] for p in decoded] if per_file_norm else [list(decoded)]
        for members in filter(None, groups):
            segs = [seg for p in members for seg in decoded[p]]
            views = clip_views(m["inputs"], m["layers"], m["feature_set"], [f for _, _, f, _ in segs],
                               lambda: np.stack([v.numpy() for _, _, _, v in segs]).astype(np.float64))
            if m["speaker_norm"]:
                views = [(name, standardize_per_speaker(x, ["*"] * len(x))) for name, x in views]
            probs = self.linear.predict_proba(dict(views))
            start = 0
            for p in members:
                out[p], start = probs[start:start + len(decoded[p])], start + len(decoded[p])
        return out


def _encoder_front_end(fe: dict, override: str | None):
    """The run's speech-encoder front end (its hidden layers, or its own input for a fine-tuned
    encoder), from where the run found it or from `override`, refused unless it matches."""
    name, key = override or fe["encoder"]["name"], DIGESTS[fe["kind"]]
    front_end = front_end_from({**fe, "encoder": {**fe["encoder"], "name": name}})
    what = "layers" if fe["kind"] == "encoder" else "input"
    try:
        digest = front_end.digest
    except PretrainedWeightsUnavailable as err:
        raise PretrainedWeightsUnavailable(
            f"this model reads the {what} of the speech encoder {fe['encoder']['name']!r}, which cannot be loaded "
            f"here: {err}. Point to a copy with ser-predict --encoder <dir or hub id> (Predictor(..., encoder=...))."
        ) from None
    if digest != fe["encoder"][key]:
        raise ConfigError(f"the encoder at {name!r} has {key} {digest}, but this model was trained with "
                          f"{fe['encoder'][key]} ({fe['encoder']['name']!r}); pass that encoder")
    return front_end


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ser-predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a run directory of train.py (or its model/ folder)")
    ap.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    ap.add_argument("--window", type=float, default=None, help="score the file in windows of this many seconds")
    ap.add_argument("--hop", type=float, default=None, help="seconds between window starts (default: --window)")
    ap.add_argument("--per-file-norm", action="store_true",
                    help="with speaker-normalised models: treat each file as a different speaker")
    ap.add_argument("--encoder", default=None,
                    help="for runs on a speech encoder: where it is (hub id or local dir), if not where training found it")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    failed = 0
    try:
        predictor = Predictor(args.checkpoint, device=args.device, encoder=args.encoder)
        rows = predictor.predict(args.files, window=args.window, hop=args.hop, per_file_norm=args.per_file_norm)
    except SerError as err:  # no model there, or too few clips of a speaker for a speaker-normalised model
        print(f"ser-predict: {err}", file=sys.stderr)
        return 2
    for row in rows:
        failed += "error" in row
        print(json.dumps(row), flush=True)
    if failed:
        print(f"{failed} of {len(args.files)} file(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
