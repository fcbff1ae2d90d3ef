"""What the entry points need from Hydra beyond the config: a run's "arm" (every choice except
fold and seed; evaluate.py pairs runs of different arms that share a fold and a seed), and a
clear message when an optional launcher is missing."""

from __future__ import annotations

import importlib.util
import sys

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

# Overrides that vary *within* an arm (replicates) or do not change what is measured.
NOT_ARM = ("split.fold", "seed", "generator.seed", "hydra", "paths", "logger", "callbacks", "hardware", "resume",
           "features.workers", "evaluation")
# A preset sets values of its own (e.g. emodb_cpu's ensemble size), so it is part of the arm. The
# generator recipe (`diffusion`) is not listed: every run composes one, but only aug=ddpm runs use
# it, so it joins the arm only when set on the command line (then for every run of the sweep alike,
# and aug=none runs still pair with aug=ddpm runs).
ARM_GROUPS = ("experiment", "dataset", "model", "aug", "split")


def arm_of(cfg) -> dict:
    """The run's config-group choices plus any other override that is not a fold or a seed and
    changes the config: an override that restates what the run would have without it (e.g.
    `dataset.train_fraction=1.0`, the default, in a sweep over 1.0,0.25) is left out, so those runs
    pair with runs that never named it. `cfg`: the run's composed config (called inside the app)."""
    hc = HydraConfig.get()
    arm = {g: hc.runtime.choices.get(g) for g in ARM_GROUPS if hc.runtime.choices.get(g)}
    candidates = {}
    for override in hc.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key in ARM_GROUPS or key.split(".")[0].split("/")[0] in NOT_ARM or key in NOT_ARM:
            continue
        candidates[key] = (override, value)
    restated = _restating_defaults(hc, cfg, candidates)
    arm.update({key: value for key, (_, value) in candidates.items() if key not in restated})
    return arm


def _restating_defaults(hc, cfg, candidates: dict) -> set[str]:
    """The keys among `candidates` ({key: (override, value)}) whose override leaves the run's config
    `cfg` as it would be without it. Composes the config again without them (Hydra's compose API,
    live inside a running app: half a second, so only once); where that is not possible every
    override stays."""
    if not candidates or not GlobalHydra.instance().is_initialized():
        return set()
    task = list(hc.overrides.task)
    dropped = {o for o, _ in candidates.values()}
    try:
        without = compose(hc.job.config_name, overrides=[o for o in task if o not in dropped])
    except Exception:  # e.g. a key that exists only through its own `+` override
        return set()
    return {key for key in candidates if _value(cfg, key) == _value(without, key) != _MISSING}


_MISSING = object()


def _value(cfg, key: str):
    try:
        node = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False)
    except Exception:
        return _MISSING
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


CLUSTER_LAUNCHER = "hydra_plugins.hydra_submitit_launcher"


def require_cluster_launcher(argv: list[str]) -> None:
    """`hardware=cluster` launches through Hydra's submitit plugin, an optional extra. Without it
    Hydra would only say that a config is missing; say what to install instead."""
    wants = any(a.lstrip("+").startswith("hardware=cluster") or "submitit" in a for a in argv)
    if wants and not _importable(CLUSTER_LAUNCHER):
        sys.exit("hardware=cluster needs the Slurm launcher (hydra-submitit-launcher), an optional extra: "
                 "pip install -e '.[cluster]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
