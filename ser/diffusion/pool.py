"""A fold's generator and its pool of samples (or SDEdit variants), made on demand for train.py
(aug=ddpm and friends, aug=sdedit).

The first run of a fold that needs them trains the fold's generator (training speakers only) and
samples the pool; it grows the pool when a later run needs more unique samples (a larger ratio,
a stricter filter). Every other run of the fold waits on a file lock beside the generator, so
concurrent sweep jobs (local multirun, a Slurm array) train one generator instead of several and
never read a half-written one. Everything is written atomically; a pool being sampled is saved
every few minutes, so a killed job leaves the pool as last saved and the next run continues it
with the samples the killed one would have drawn.

    <generator.root>/.lock                         the fold's lock (filelock; works across machines on NFS)
    <generator.root>/generator/                    ser/diffusion/generator.py format
    <generator.root>/synthetic/synthetic.safetensors   the pool (ser/diffusion/synthetic_set.py format)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig

from ser.data.datamodule import LabelledClips
from ser.data.splits import Split
from ser.diffusion.generator import generator_metadata_at, load_generators
from ser.diffusion.sampling import SAMPLE_BATCH, pool_info, sample_spectrograms
from ser.diffusion.sdedit import edits_match, load_edits, make_edits
from ser.diffusion.synthetic_set import load_synthetic_set, save_synthetic_set
from ser.diffusion.provenance import assert_same_recipe, assert_same_training_clips, generator_metadata, sample_frames
from ser.diffusion.training import train_fold_generators
from ser.errors import ConfigError
from ser.hardware import inference_device

log = logging.getLogger(__name__)

# A filter that keeps few samples must not make a run sample forever: at most this many samples
# of an emotion per sample it needs, then the run takes what it has (and says so).
MAX_POOL_FACTOR = 8

# How often a growing pool is saved while it is sampled (seconds). Short enough that a GPU lease
# that ends mid-pool keeps most of it (two leases lost 2-3 minutes of pools to a 5-minute
# interval). Rewriting the largest pool made so far (RAVDESS, 6764 samples, 550 MB) takes 2-3 s
# on 2 busy CPU cores: at most a few percent of a minute, and a CPU batch takes longer anyway.
CHECKPOINT_EVERY_S = 60

# (mels, labels) -> boolean mask of the samples a run may use (aug.synthetic.filter)
Keep = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


@contextmanager
def fold_lock(root: str | Path, what: str):
    """Hold the fold's lock; say so when another job has it (it is training or sampling)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another job holds %s (it is making this fold's %s); waiting for it", root / ".lock", what)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _generator_exists(gen_dir: Path, emotions: list[str]) -> bool:
    return (gen_dir / "metadata.json").is_file() or all((gen_dir / e / "metadata.json").is_file() for e in emotions)


def provide_pool(cfg: DictConfig, data: LabelledClips, split: Split, needed: dict[int, int],
                 keep: Keep | None = None) -> dict:
    """Make sure the fold's generator exists and its pool holds at least `needed[k]` usable samples
    of each emotion k (usable: passing `keep`, when given); train and sample what is missing.
    Returns what was done here, with timings, for results.json."""
    g, pool_path = cfg.generator, Path(cfg.aug.synthetic.path)
    report = {"generator_trained_here": False, "generator_train_time_s": 0.0, "samples_drawn_here": 0,
              "sample_time_s": 0.0, "lock_wait_s": 0.0}
    asked = time.time()
    with fold_lock(g.root, "generator and samples"):
        report["lock_wait_s"] = round(time.time() - asked, 1)
        frames = sample_frames(data, split)
        _ensure_generator(cfg, data, split, frames, report)
        if cfg.aug.synthetic.reuse and pool_path.is_file():
            return report  # a pool exists, and the run may repeat its samples rather than grow it
        report["sample_time_s"], report["samples_drawn_here"] = _grow(cfg, data, pool_path, needed, keep, frames)
    return report


def _ensure_generator(cfg, data: LabelledClips, split: Split, frames: int, report: dict) -> None:
    """Train the fold's generator if it does not exist yet (the caller holds the fold's lock)."""
    g = cfg.generator
    gen_dir = Path(g.dir)
    if _generator_exists(gen_dir, data.emotions):
        saved = generator_metadata_at(gen_dir, data.emotions)
        assert_same_training_clips(saved, data, split, where=f"the generator {gen_dir}")
        # Only here, where train.py makes what is missing: with `generate: never` the run reads
        # whatever generate.py made, as its user asked.
        assert_same_recipe(saved, cfg.diffusion, where=f"the generator {gen_dir}",
                           use_as_is="to use it as it is, read what generate.py made: aug.synthetic.generate=never "
                                     "(aug.sdedit.generate=never for SDEdit)")
        return
    if int(cfg.hardware.devices) != 1 or int(cfg.hardware.num_nodes) != 1:
        raise ConfigError("this fold has no generator yet, and train.py trains one on demand only on one device; "
                          f"make it first: python generate.py dataset={cfg.dataset.name} split={split.protocol} "
                          f"split.fold={split.fold} diffusion={cfg.diffusion.name} seed={g.seed}")
    log.info("no generator for this fold at %s: training one on the %d training clips of speakers %s",
             gen_dir, len(split.train), split.train_speakers)
    started = time.time()
    train_fold_generators(cfg, data, split, generator_metadata(cfg, data, split, frames), g.trainer)
    report.update(generator_trained_here=True, generator_train_time_s=round(time.time() - started, 1))


def provide_edits(cfg: DictConfig, data: LabelledClips, split: Split, path: Path) -> dict:
    """aug=sdedit: make sure the fold's generator exists and `path` holds this run's SDEdit variants
    of its training clips (ser/diffusion/sdedit.py); make what is missing. Returns what was done."""
    report = {"generator_trained_here": False, "generator_train_time_s": 0.0, "edit_time_s": 0.0,
              "edited_here": False, "lock_wait_s": 0.0}
    asked = time.time()
    with fold_lock(cfg.generator.root, "generator and SDEdit variants"):
        report["lock_wait_s"] = round(time.time() - asked, 1)
        _ensure_generator(cfg, data, split, sample_frames(data, split), report)
        if not path.is_file() or not edits_match(load_edits(path)[1], cfg, data, split):
            started = time.time()
            make_edits(cfg, data, split, path)
            report.update(edited_here=True, edit_time_s=round(time.time() - started, 1))
    return report


def _grow(cfg, data: LabelledClips, pool_path: Path, needed: dict[int, int], keep: Keep | None,
          frames: int) -> tuple[float, int]:
    """Sample until the pool has `needed` usable samples per emotion (or MAX_POOL_FACTOR x that many
    in all). Returns (seconds spent sampling, samples added)."""
    s, emotions, device = cfg.generator.sampling, data.emotions, inference_device(cfg.hardware)
    spent, added, generators = 0.0, 0, None
    while True:
        if pool_path.is_file():
            mels, labels, info = load_synthetic_set(pool_path)
        else:
            mels, labels, info = torch.empty(0, 1, data.features[0].shape[-2], frames), torch.empty(0, dtype=torch.long), None
        mask = np.ones(len(labels), bool) if keep is None or not len(labels) else keep(mels, labels)
        have = {k: int((labels == k).sum()) for k in needed}
        usable = {k: int(((labels == k).numpy() & mask).sum()) for k in needed}
        todo = {}
        for k, n in needed.items():
            short = n - usable[k]
            room = MAX_POOL_FACTOR * n - have[k]
            if short <= 0 or room <= 0:
                continue
            rate = usable[k] / have[k] if have[k] else 1.0  # the filter's pass rate so far
            todo[k] = min(room, math.ceil(short / max(rate, 1.0 / MAX_POOL_FACTOR)))
        if not todo:
            return round(spent, 1), added
        if info is not None:
            _check_same_sampling(pool_path, info, s, cfg.generator.seed)
        if generators is None:
            generators = load_generators(cfg.generator.dir, emotions, device=device)
        log.info("sampling %d more synthetic spectrograms (%s) into %s", sum(todo.values()),
                 ", ".join(f"{emotions[k]} {n}" for k, n in todo.items()), pool_path)
        if info is None:
            info = pool_info(next(iter(generators.values()))[0], emotions, s.sampler, s.steps, s.guidance,
                             cfg.generator.seed, frames, cfg.generator.dir)
        # One batch at a time, saved every CHECKPOINT_EVERY_S: a big pool (a strict filter at full
        # data takes an hour of CPU) is not lost to a killed job; the next run starts where it stopped.
        batches = [(k, first, min(SAMPLE_BATCH, n - first)) for k, n in todo.items() for first in range(0, n, SAMPLE_BATCH)]
        new, new_labels, saved_at = [], [], time.time()
        for i, (k, first, b) in enumerate(batches):
            started = time.time()
            m, lab = sample_spectrograms(generators, {k: b}, mels.shape[-1], mels.shape[-2], s.sampler, s.steps,
                                         s.guidance, cfg.generator.seed, start={k: have[k] + first})
            spent += time.time() - started
            new.append(m)
            new_labels += lab
            if i == len(batches) - 1 or time.time() - saved_at >= CHECKPOINT_EVERY_S:
                mels, labels = torch.cat([mels, *new]), torch.cat([labels, torch.as_tensor(new_labels, dtype=torch.long)])
                added += len(new_labels)
                new, new_labels = [], []
                info["seconds_per_sample"] = round(spent / max(added, 1), 4)
                save_synthetic_set(pool_path, mels, labels, info)
                saved_at = time.time()


def _check_same_sampling(path: Path, info: dict, sampling: DictConfig, seed: int) -> None:
    """A pool is one sampler's output; growing it with another would mix two things under one name."""
    theirs = (info.get("sampler"), int(info.get("steps", -1)), float(info.get("guidance", -1)), info.get("seed", seed))
    ours = (sampling.sampler, int(sampling.steps), float(sampling.guidance), seed)
    if theirs != ours:
        raise ConfigError(f"the synthetic pool {path} was sampled with sampler={theirs[0]}, steps={theirs[1]}, "
                          f"guidance={theirs[2]}, seed={theirs[3]}, and this run would add samples with "
                          f"generator.sampling.sampler={ours[0]}, steps={ours[1]}, guidance={ours[2]}, seed={ours[3]}. "
                          "Set generator.sampling.* to match, or delete the pool to resample it")
