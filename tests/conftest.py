"""Shared fixtures: tiny audio made in the test, a shared cache, offline trackers and hubs, and
configs composed in-process exactly as the entry points compose them (then the jobs run in this
process: no interpreter start-up per run; subprocesses only where the process itself is tested)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# Nothing in the suite may wait on a network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared" / "datasets"
SR = 22050


def tone(seconds: float = 1.0, sr: int = SR, f0: float = 220.0, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = amp * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def write_wav(path: Path, y=None, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone() if y is None else y, sr, subtype=subtype)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One feature cache (and synthetic corpus) for the whole session, as a sweep would share it."""
    return tmp_path_factory.mktemp("cache")


# Overrides that make any train.py run tiny: 4 synthetic speakers, 3 clips each, 2 epochs.
TINY_TRAINING = [
    "model.epochs=2", "model.backbone.channels=16", "model.backbone.layers=2",
    "hardware.progress_bar=false", "evaluation.n_bootstrap=50", "features.workers=1",
]
TINY = ["dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", *TINY_TRAINING]
# A generator recipe that trains in seconds: the 32x32 pixel recipe shrunk to 16x16 and two levels.
# Named explicitly, since the default recipe (cpu_latent) has an autoencoder stage these keys do not
# shrink (tests/test_latent_diffusion.py has its own tiny latent recipe).
TINY_RECIPE = [
    "diffusion=cpu", "diffusion.epochs=2", "diffusion.image_size=16", "diffusion.unet.block_out_channels=[16,32]",
    "diffusion.unet.norm_num_groups=8", "diffusion.unet.down_block_types=[DownBlock2D,DownBlock2D]",
    "diffusion.unet.up_block_types=[UpBlock2D,UpBlock2D]",
]


def compose_config(config_name: str, *overrides: str, output_dir: Path | None = None) -> DictConfig:
    """`config_name` (train, generate, evaluate) with `overrides`, as `python <config_name>.py
    overrides...` composes it, with its run dir at `output_dir`. Hydra's runtime is set too, so
    `${hydra:...}` resolves and the run's arm (ser.experiment.arm_of) is what the CLI would record."""
    with _hydra_app():
        return _compose_as_app(config_name, *overrides, output_dir=output_dir)


@contextlib.contextmanager
def _hydra_app():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _compose_as_app(config_name: str, *overrides: str, output_dir: Path | None = None) -> DictConfig:
    paths = [] if config_name == "evaluate" else [f"paths.root_dir={ROOT}", f"paths.output_dir={output_dir}"]
    cfg = compose(config_name, overrides=[*overrides, *paths], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a running app: the task's config without Hydra's own node
    return cfg


def train(*overrides: str, output_dir: Path) -> dict:
    """train.py in-process: compose, then run the job with the arm the CLI would record (worked out,
    as in the CLI, while Hydra is live)."""
    from ser.experiment import arm_of
    from ser.jobs.train import run_experiment

    with _hydra_app():
        cfg = _compose_as_app("train", *overrides, output_dir=output_dir)
        arm = arm_of(cfg)
    return run_experiment(cfg, arm=arm)


def generate(*overrides: str, output_dir: Path) -> dict:
    from ser.jobs.generate import run_generate

    return run_generate(compose_config("generate", *overrides, output_dir=output_dir))


def sweep(base: list[str], grid: list[list[str]], sweep_dir: Path, job=None) -> list:
    """A -m sweep in-process, as Hydra's basic launcher runs it: each combination in <sweep_dir>/<k>."""
    import itertools

    job = job or train
    return [job(*base, *combo, output_dir=sweep_dir / str(k)) for k, combo in enumerate(itertools.product(*grid))]


def run_script(script: str, *args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
