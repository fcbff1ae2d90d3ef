"""What identifies a run inside a sweep: its run directory and its "arm" (every choice except fold and seed).

evaluate.py pairs runs of different arms that share a fold and a seed.
"""

from __future__ import annotations

from pathlib import Path

# Overrides that vary *within* an arm (replicates) or do not change what is measured.
NOT_ARM = ("split.fold", "seed", "hydra", "paths", "logger", "hardware", "resume", "features.workers", "evaluation")
# A preset sets values of its own (e.g. emodb_cpu's ensemble size), so it is part of the arm.
ARM_GROUPS = ("experiment", "dataset", "model", "aug", "split", "diffusion")


def run_dir_of() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def arm_of() -> dict:
    """The run's config-group choices plus any other override that is not a fold or a seed."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    arm = {g: hc.runtime.choices.get(g) for g in ARM_GROUPS if hc.runtime.choices.get(g)}
    for override in hc.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key in ARM_GROUPS or key.split(".")[0].split("/")[0] in NOT_ARM or key in NOT_ARM:
            continue
        arm[key] = value
    return arm
