"""Callbacks and loggers from their config groups (conf/callbacks/, conf/logger/): every entry is a
`_target_` node that `hydra.utils.instantiate` builds, as in ashleve/lightning-hydra-template."""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

from ser.errors import ConfigError

log = logging.getLogger(__name__)


def _entries(group: DictConfig | None, name: str):
    for key, node in (group or {}).items():
        if node is None:  # `callbacks.x=null` switches an entry off
            continue
        if "_target_" not in node:
            raise ConfigError(f"{name}.{key} has no _target_; every entry of the {name} group is a _target_ node")
        yield key, node


def instantiate_callbacks(group: DictConfig | None) -> dict[str, Callback]:
    """{name: callback} for every entry of the `callbacks` group."""
    return {key: instantiate(node) for key, node in _entries(group, "callbacks")}


def instantiate_loggers(group: DictConfig | None, **per_logger: dict) -> list[Logger]:
    """One logger per entry of the `logger` group; `per_logger[name]` adds arguments only the run
    knows (e.g. wandb={"group": ...}). A run's config goes in with `logger.log_hyperparams`
    (`config` is the name of instantiate's own first argument)."""
    return [instantiate(node, **per_logger.get(key, {})) for key, node in _entries(group, "logger")]
