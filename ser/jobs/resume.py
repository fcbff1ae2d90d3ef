"""Resumable sweeps (issue 11 item 7): a sweep rerun into the same folder skips the runs whose
results are complete, and two live processes never write one run's folder.

A finished run is recognised by its results.json, written last and atomically, and counts as this
run only if its config measured the same thing (EXECUTION_KEYS may differ). Lightning's `last`
checkpoint resumes an unfinished run's training (ser/jobs/train.py)."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from ser.errors import ConfigError

log = logging.getLogger(__name__)


@contextmanager
def sole_writer(run_dir: Path):
    """Refuse a run dir that another live process is running in. Two sweeps started into one folder
    at the same moment (hydra.sweep.dir given twice) would otherwise both pass the resume check and
    overwrite each other's checkpoints and results.json without a word. The OS releases the lock
    when its process dies, so a killed run never leaves its folder locked. DDP ranks other than 0
    run in their rank-0 process's folder and take no lock."""
    if rank_zero_only.rank != 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / ".run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{run_dir} is in use by another running process (two sweeps into one folder?). "
                          "Give each its own hydra.sweep.dir, or rerun into this one once the other has finished "
                          "(it will skip the runs that are complete)") from None
    try:
        yield
    finally:
        lock.release()


# Settings that change how a run is executed or logged, not what it measures: a finished run
# still counts as this run when only these differ (another machine, more workers, W&B on).
EXECUTION_KEYS = ("hardware", "logger", "callbacks", "resume", "paths", "features.workers")


def _measured(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
    for dotted in (k for k in EXECUTION_KEYS if "." in k):
        group, key = dotted.split(".", 1)
        if isinstance(out.get(group), dict) and key in out[group]:
            out[group] = {k: v for k, v in out[group].items() if k != key}
    return out


def completed_results(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The results of this exact run if `run_dir` already holds them (a rerun of a sweep into the
    same folder after a crash, a kill or a preempted cluster job), else None. results.json is
    written last and atomically, so its presence means the run finished. A run dir that holds a
    *different* run's results is refused: silently mixing two sweeps would corrupt both."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s is unreadable; rerunning the run", path)
        return None
    then, now = _measured(done.get("config", {})), _measured(OmegaConf.to_container(cfg, resolve=True))
    if then != now:
        differ = ", ".join(_differences(then, now)[:8])
        raise ConfigError(f"{run_dir} already holds the results of a different run (its config differs in: {differ}). "
                          "Sweep into a new folder (hydra.sweep.dir=...), or set resume=false to overwrite it")
    return done


def _differences(then: dict, now: dict, prefix: str = "") -> list[str]:
    """The dotted keys where two configs differ, each as `key=old->new`. A key the old run lacks
    (added to ser since) shows as `key=(absent)->value`: the user can judge whether it changes
    what the old run measured."""
    out = []
    for key in sorted(set(then) | set(now)):
        a, b = then.get(key, "(absent)"), now.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}={a}->{b}")
    return out
