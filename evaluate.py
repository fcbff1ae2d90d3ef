"""Aggregate runs into mean +- std, 95% CIs and paired tests against a baseline arm.

    python evaluate.py                                  # the latest sweep
    python evaluate.py runs=[outputs/multirun/2026-11-24_17-00-00] baselines=[{aug:none}]
    python evaluate.py logger=wandb                     # also log the table and figures to W&B (offline)
"""

import hydra
from omegaconf import DictConfig

from ser.jobs.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
