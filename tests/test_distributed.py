"""The multi-GPU (DDP) and cluster (submitit) paths, exercised on CPU in real processes."""

import json

import pytest

from conftest import TINY, run_script

pytestmark = pytest.mark.slow


def test_ddp_two_cpu_processes_gloo(tmp_path, cache_dir):
    out = tmp_path / "ddp"
    proc = run_script("train.py", *TINY, "hardware=multi_gpu", "hardware.accelerator=cpu", "hardware.devices=2",
                      "hardware.precision=32-true", "hardware.num_workers=0", f"paths.cache_dir={cache_dir}",
                      f"hydra.run.dir={out}")
    log = proc.stdout + proc.stderr
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    r = json.loads((out / "results.json").read_text())  # written once, by rank 0
    assert r["config"]["hardware"]["strategy"] == "ddp" and r["n_test"] == 12


def test_cluster_path_with_submitit_local_launcher(tmp_path, cache_dir):
    sweep = tmp_path / "cluster"
    run_script("train.py", "-m", *TINY, "hardware=cluster", "hydra/launcher=submitit_local",
               "hardware.accelerator=cpu", "hardware.devices=1", "hardware.strategy=auto", "hardware.precision=32-true",
               "hydra.launcher.timeout_min=10", "hardware.num_workers=0",
               "split.fold=0,1", f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}", "logger=none")
    results = sorted(sweep.rglob("results.json"))
    assert len(results) == 2
    assert list(sweep.rglob(".submitit"))  # the jobs really went through submitit
