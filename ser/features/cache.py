"""A disk cache of log-mel tensors, keyed by file content + front-end parameters.

Every run of a sweep reads the same cache, so features are computed once per corpus. Entries
are safetensors files (no pickle), written to a temporary name and renamed into place, so a
killed run never leaves a half-written entry; a rerun computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ser.features.audio import BadAudio, load_audio
from ser.features.mel import MelParams, log_mel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontEnd:
    """Everything that determines a cached spectrogram, apart from the audio bytes."""

    mel: MelParams = MelParams()
    min_duration: float = 0.25
    max_duration: float = 30.0
    version: int = 1  # bump when the feature code changes meaning
    kind: str = "mel"

    def describe(self) -> dict:
        return {"mel": self.mel.as_dict(), "min_duration": self.min_duration,
                "max_duration": self.max_duration, "version": self.version}

    def fingerprint(self) -> str:
        blob = json.dumps({"mel": self.mel.as_dict(), "min": self.min_duration,
                           "max": self.max_duration, "v": self.version}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def sr(self) -> int:
        return self.mel.sr

    def from_signal(self, y: np.ndarray) -> np.ndarray:
        return log_mel(y, self.mel)

    def compute(self, path: str) -> np.ndarray:
        y = load_audio(path, sr=self.mel.sr, min_duration=self.min_duration, max_duration=self.max_duration)
        return self.from_signal(y)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """`front_end` is anything with `kind`, `fingerprint()`, `describe()` and `compute(path) -> array`
    (FrontEnd here; SmileLLD and SmileFunctionals in ser.features.smile)."""

    def __init__(self, root: str | Path, front_end=FrontEnd()):
        self.front_end = front_end
        self.dir = Path(root) / f"{front_end.kind}-{front_end.fingerprint()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "front_end.json"
        if not meta.exists():
            _atomic_write_text(meta, json.dumps(front_end.describe(), indent=1))

    def entry(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.safetensors"

    def load(self, digest: str) -> np.ndarray | None:
        path = self.entry(digest)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["features"]
        except Exception:  # unreadable entry (disk trouble): recompute rather than fail
            log.warning("cache entry %s unreadable; recomputing", path)
            return None

    def store(self, digest: str, mel: np.ndarray, source: str) -> None:
        path = self.entry(digest)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"features": np.ascontiguousarray(mel)}, str(tmp), metadata={"source": source})
        os.replace(tmp, path)

    def get_many(self, paths: list[str], workers: int = 0) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Spectrograms for `paths` (computing missing ones, in parallel) and the files skipped, with reasons."""
        features, skipped, todo = {}, [], []
        for path in paths:
            try:
                digest = file_digest(path)
            except OSError as err:
                skipped.append({"path": path, "reason": f"cannot read file: {err}"})
                continue
            mel = self.load(digest)
            if mel is None:
                todo.append((path, digest))
            else:
                features[path] = mel
        if todo:
            log.info("computing %d %s features (%d cached) with %d worker(s)", len(todo), self.front_end.kind, len(features), max(workers, 1))
            jobs = [(self, path, digest) for path, digest in todo]
            if workers > 1 and len(todo) > 8:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    results = list(pool.map(_compute_and_store, jobs, chunksize=8))
            else:
                results = [_compute_and_store(job) for job in jobs]
            for (path, digest), error in zip(todo, results):
                if error is not None:
                    skipped.append({"path": path, "reason": error})
                    continue
                features[path] = self.load(digest)
        return features, skipped


def _compute_and_store(job) -> str | None:
    cache, path, digest = job
    try:
        mel = cache.front_end.compute(path)
    except BadAudio as err:
        return err.reason
    except Exception as err:  # a decoder crash on one odd file must not stop the corpus
        return f"feature extraction failed ({type(err).__name__}: {err})"
    cache.store(digest, mel, source=path)
    return None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
