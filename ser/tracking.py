"""Experiment trackers from the `logger` config: CSV always works; W&B offline needs no network."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, group: str) -> list:
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    loggers = []
    spec = cfg.get("logger") or {}
    if spec.get("csv"):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if spec.get("wandb"):
        w = spec.wandb
        # Offline runs are written under <run_dir>/wandb and can be pushed later with `wandb sync`.
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(
            project=w.project, entity=w.get("entity"), group=group, name=run_name, save_dir=str(run_dir),
            offline=w.mode == "offline", tags=list(w.get("tags") or []), job_type=w.get("job_type", "train"),
            config=OmegaConf.to_container(cfg, resolve=True),
        ))
    return loggers


def log_test_results(loggers: list, results: dict, confusion_png: Path | None) -> None:
    from pytorch_lightning.loggers import WandbLogger

    flat = {f"test/{k}": v for k, v in results["metrics"].items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(flat)
        if isinstance(logger, WandbLogger) and confusion_png is not None:
            logger.log_image("test/confusion_matrix", [str(confusion_png)])
        logger.save()


def finish(loggers: list) -> None:
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
