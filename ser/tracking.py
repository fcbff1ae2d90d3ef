"""What a run or a report sends to its experiment trackers (the loggers of the `logger` group):
test metrics and figures at the end of training, quality reports, evaluate's summary table."""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import Logger, WandbLogger

os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banner would drown the run's own log


def log_test_results(loggers: list[Logger], results: dict, confusion_png: Path | None) -> None:
    flat = {f"test/{k}": v for k, v in results["metrics"].items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(flat)
        if isinstance(logger, WandbLogger) and confusion_png is not None:
            logger.log_image("test/confusion_matrix", [str(confusion_png)])
        logger.save()


def log_report(loggers: list[Logger], prefix: str, report: dict, images: dict[str, Path] | None = None,
               tables: dict[str, tuple[list[str], list[list]]] | None = None) -> None:
    """Every number of a nested `report` as `<prefix>/<path>`, plus images and tables where the
    tracker shows them (W&B)."""
    flat = {f"{prefix}/{k}": v for k, v in flatten(report).items()}
    for logger in loggers:
        logger.log_metrics(flat)
        if isinstance(logger, WandbLogger):
            for key, path in (images or {}).items():
                logger.log_image(f"{prefix}/{key}", [str(path)])
            for key, (columns, rows) in (tables or {}).items():
                logger.log_table(f"{prefix}/{key}", columns=columns, data=rows)
        logger.save()


def finish(loggers: list[Logger]) -> None:
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            import wandb  # heavy to import, and only needed to close a W&B run

            wandb.finish()


def flatten(tree: dict, prefix: str = "") -> dict:
    """Numbers of a nested dict, keyed by their path: {"a": {"b": 1}} -> {"a/b": 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out

