"""Train a spectrogram generator on one fold's training speakers, sample it, and voice the samples.

    python generate.py                                   # synthetic corpus, LOSO fold 0, CPU recipe
    python generate.py dataset=emodb split.fold=3 paths.data_root=/data diffusion=ddpm_seed
    python generate.py -m dataset=emodb split.fold='range(10)' paths.data_root=/data
"""

import sys

import hydra
from omegaconf import DictConfig

from ser.experiment import require_cluster_launcher
from ser.jobs.generate import run_generate


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    run_generate(cfg)


if __name__ == "__main__":
    require_cluster_launcher(sys.argv[1:])
    main()
