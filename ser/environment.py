"""What produced a result: the code (ser's version and, in a git checkout, its commit and whether
the tree had uncommitted changes), the libraries that compute it, and the machine. Every
results.json and every generator records it, so a figure can be traced to the code that made it
and a rerun on other code is visible.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

# The libraries whose versions can change a number ser reports.
LIBRARIES = ("ser", "torch", "pytorch-lightning", "transformers", "diffusers", "timm", "librosa",
             "scikit-learn", "numpy", "scipy", "audiomentations", "opensmile")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# Tracked files that cannot change a result (git pathspecs).
DOCUMENTATION = (":(exclude,glob)**/*.md", ":(exclude)docs")
MAX_CHANGED = 20  # files named in results.json; `dirty` counts them all


@lru_cache(maxsize=1)
def code_revision(root: str | Path | None = None) -> dict:
    """The git commit of the checkout ser runs from, whether it had uncommitted changes to tracked
    files that can change a result, and which ({"commit": None, ...} when ser is not run from a git
    checkout, e.g. a wheel, or git is missing). Cached: one lookup per process."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None, "changed": None}
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        # Untracked files (outputs, caches) do not change the code; modified tracked files do,
        # except documentation: editing docs/benchmarks.md while a sweep runs changes no result.
        changed = sorted(git("diff", "--name-only", "HEAD", "--", ".", *DOCUMENTATION).splitlines())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "changed": None}
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:MAX_CHANGED]}


def describe_environment() -> dict:
    """The code, library versions and machine, for results.json and generator metadata."""
    return {"code": code_revision(), "versions": {name: _version(name) for name in LIBRARIES},
            "torch": torch.__version__, "python": platform.python_version(), "host_cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
