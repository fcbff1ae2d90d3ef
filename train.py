"""Train and test one speech-emotion classifier; `-m` sweeps make ablation grids.

    python train.py                                        # built-in synthetic corpus, CPU, minutes
    python train.py dataset=emodb paths.data_root=/data    # a real corpus (LOSO fold 0)
    python train.py -m +experiment=emodb_cpu               # every EmoDB fold, CPU-sized model
    python evaluate.py                                     # aggregate the latest sweep
"""

import sys

import hydra
from omegaconf import DictConfig

from ser.experiment import arm_of, require_cluster_launcher
from ser.jobs.train import run_experiment


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run_experiment(cfg, arm=arm_of(cfg))
    return None if results is None else results["metrics"]["ua"]


if __name__ == "__main__":
    require_cluster_launcher(sys.argv[1:])
    main()
