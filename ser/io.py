"""Atomic writes: every file and folder ser writes appears whole under its final name or not at all.

Writers write to a temporary name beside the target and rename it into place (a rename within
one filesystem is atomic), so a killed run never leaves a half-written cache entry, result,
model or generator that a later run would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; when the block ends without error, rename it to `path`.

    The temporary name ends in `.tmp`, so no glob for finished files (`*.safetensors`) ever matches
    a half-written one; writers that pick a format from the name (matplotlib, soundfile) must be
    given it. On error the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj, indent: int = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


@contextmanager
def atomic_dir(path: str | Path, replace: bool = True):
    """Yield a temporary folder beside `path`; when the block ends without error, it becomes `path`.

    An existing `path` is replaced (`replace=True`) or kept (`replace=False`: another process that
    built the same thing first wins, and this copy is discarded).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists() and not replace:
            return
        try:
            os.replace(tmp, path)  # succeeds when `path` is absent (or an empty folder)
        except OSError:
            if not path.exists():
                raise
            if not replace:
                return  # another process built the same thing first
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
