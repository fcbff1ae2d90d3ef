"""Aggregate runs into mean +- std, 95% CIs and paired tests against a baseline arm.

    python evaluate.py                                  # the latest sweep
    python evaluate.py runs=[outputs/multirun/2026-11-24_17-00-00] baselines=[{aug:none}]
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from ser.evaluation.report import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
