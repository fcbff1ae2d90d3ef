"""A disk cache of per-clip features (log-mels, openSMILE descriptors or functionals), keyed by file
content + front-end parameters.

Every run of a sweep reads the same cache, so features are computed once per corpus. Entries
are safetensors files (no pickle), written to a temporary name and renamed into place, so a
killed run never leaves a half-written entry; a rerun computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from safetensors.numpy import load_file, save_file

from ser.errors import BadAudio, MissingDependency
from ser.io import atomic_path, write_text

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    """`front_end` is anything with `kind`, `fingerprint()`, `describe()` and `compute(path) -> array`
    (LogMel in ser.features.mel; SmileLLD and SmileFunctionals in ser.features.smile)."""

    def __init__(self, root: str | Path, front_end):
        self.front_end = front_end
        self.dir = Path(root) / f"{front_end.kind}-{front_end.fingerprint()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "front_end.json"
        if not meta.exists():
            write_text(meta, json.dumps(front_end.describe(), indent=1))

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

    def store(self, digest: str, features: np.ndarray, source: str) -> None:
        with atomic_path(self.entry(digest)) as tmp:
            save_file({"features": np.ascontiguousarray(features)}, str(tmp), metadata={"source": source})

    def get_many(self, paths: list[str], workers: int = 0) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Features for `paths` (computing missing ones, in parallel) and the files skipped, with reasons."""
        features, skipped, todo = {}, [], []
        for path in paths:
            try:
                digest = file_digest(path)
            except OSError as err:
                skipped.append({"path": path, "reason": f"cannot read file: {err}"})
                continue
            cached = self.load(digest)
            if cached is None:
                todo.append((path, digest))
            else:
                features[path] = cached
        if todo:
            with self._filling():
                # Another process may have filled these while this one waited for the lock.
                still = []
                for path, digest in todo:
                    cached = self.load(digest)
                    if cached is None:
                        still.append((path, digest))
                    else:
                        features[path] = cached
                todo = still
                self._compute(todo, features, skipped, workers)
        return features, skipped

    @contextmanager
    def _filling(self):
        """One process fills a cache at a time: the jobs of a sweep (a local multirun with a parallel
        launcher, a Slurm array) start together, and each would otherwise extract the whole corpus
        itself. The others wait, then read what it stored. The OS frees the lock if its holder dies,
        and the next one computes what is still missing."""
        lock = FileLock(self.dir / ".filling.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another process is filling %s; waiting for it", self.dir)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _compute(self, todo: list[tuple[str, str]], features: dict, skipped: list, workers: int) -> None:
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


def _compute_and_store(job) -> str | None:
    cache, path, digest = job
    try:
        features = cache.front_end.compute(path)
    except BadAudio as err:
        return err.reason
    except MissingDependency:  # not the file's fault: every clip would fail the same way
        raise
    except Exception as err:  # a decoder crash on one odd file must not stop the corpus
        return f"feature extraction failed ({type(err).__name__}: {err})"
    cache.store(digest, features, source=path)
    return None
