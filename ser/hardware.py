"""The `hardware` config group (conf/hardware/*.yaml) meets Lightning here, and only here: the
Trainer for train.py's classifiers and generate.py's generators alike, and the device for work
outside Lightning's loops (test-set scoring, sampling)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def build_trainer(trainer: DictConfig, hardware: DictConfig, **runtime) -> pl.Trainer:
    """`trainer`: a `_target_` Trainer config (conf/trainer/*.yaml) with the loop's settings;
    `hardware` adds where it runs; `runtime` what only the run knows (callbacks, loggers, ...)."""
    ddp_on_gpus = str(hardware.strategy).startswith("ddp") and hardware.accelerator in ("gpu", "cuda")
    return instantiate(
        trainer, accelerator=hardware.accelerator, devices=hardware.devices, strategy=hardware.strategy,
        num_nodes=hardware.num_nodes, precision=hardware.precision,
        # SyncBatchNorm exists for GPUs only; DDP on CPU (tests, gloo) keeps per-process statistics.
        sync_batchnorm=bool(hardware.sync_batchnorm) and ddp_on_gpus,
        enable_progress_bar=hardware.progress_bar, **runtime,
    )


def inference_device(hardware: DictConfig) -> str:
    """Where work outside Lightning's loops runs: the GPU the config asked for, if there is one."""
    return "cuda" if torch.cuda.is_available() and hardware.accelerator in ("gpu", "cuda", "auto") else "cpu"
