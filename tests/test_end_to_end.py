"""The jobs as a user runs them, on tiny synthetic data (seconds per run): in-process, except
where the process itself is under test (evaluate.py's CLI, kill-and-resume)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, TINY, TINY_TRAINING, run_script, sweep, tone, train, write_wav
from ser.data.synthetic import make_synthetic_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run") / "run"
    train(*TINY, f"paths.cache_dir={cache_dir}", "logger=wandb", output_dir=out)
    return out


def test_default_run_writes_results_and_artifacts(trained_run):
    r = json.loads((trained_run / "results.json").read_text())
    for key in ("ua", "wa", "macro_f1", "ua_ci95", "confusion", "per_class_recall"):
        assert key in r["metrics"]
    assert 0.0 <= r["metrics"]["ua_ci95"][0] <= r["metrics"]["ua"] <= r["metrics"]["ua_ci95"][1] <= 1.0
    assert r["protocol"] == "loso" and r["speaker_independent"] and r["fold"] == 0
    assert not set(r["test_speakers"]) & set(r["train_speakers"] + r["val_speakers"])
    assert r["n_test"] == len(r["test_clips"]) == 4 * 3
    assert r["skipped"] == [] and r["weights"] == "none: trained from scratch"
    assert r["config"]["dataset"]["name"] == "synthetic"
    # Provenance: the code (commit and dirty flag in a git checkout, else None) and library versions.
    assert set(r["environment"]["code"]) == {"commit", "dirty", "changed"} and r["environment"]["versions"]["ser"]
    assert (trained_run / "confusion_matrix.png").stat().st_size > 1000
    assert (trained_run / "model" / "model.safetensors").is_file()
    assert (trained_run / "csv" / "metrics.csv").read_text().count("\n") > 2
    # W&B offline: a local run directory, no network.
    assert list((trained_run / "wandb").glob("offline-run-*"))


def test_predict_cli_and_python_api(trained_run, cache_dir, tmp_path):
    from ser import Predictor
    from ser.predict import main

    clips = sorted(Path(cache_dir, "corpora").rglob("*.wav"))[:2]
    (tmp_path / "bad.wav").write_text("not audio")
    rows = Predictor(trained_run).predict([*clips, tmp_path / "bad.wav"])
    assert rows[0]["label"] in rows[0]["probabilities"]
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "cannot decode" in rows[2]["error"]
    long = write_wav(tmp_path / "long.wav", np.tile(tone(1.0), 5))
    windowed = Predictor(trained_run).predict([long], window=2.0, hop=1.0)[0]
    assert len(windowed["windows"]) == 4 and windowed["windows"][-1]["end"] == pytest.approx(5.0)
    assert main(["--checkpoint", str(trained_run), str(clips[0])]) == 0


def test_bad_files_are_skipped_with_reasons_and_the_run_finishes(tmp_path, cache_dir):
    src = make_synthetic_corpus(tmp_path / "gen", n_speakers=4, clips_per_speaker_emotion=3)
    root = tmp_path / "corpus"
    shutil.copytree(src, root)
    bad = root / "angry" / "spk00"
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("hello")
    write_wav(bad / "silent.wav", np.zeros(SR, dtype=np.float32))
    write_wav(bad / "short.wav", tone(0.1))
    write_wav(bad / "stereo24.wav", np.stack([tone(1.0), tone(1.0)], 1), subtype="PCM_24")  # fine: used
    write_wav(root / "sarcasm" / "spk00" / "x.wav")
    out = tmp_path / "run"
    train(*TINY_TRAINING, "dataset=folder", f"dataset.root={root}", f"paths.cache_dir={cache_dir}", output_dir=out)
    r = json.loads((out / "results.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in r["skipped"]}
    assert set(reasons) == {"empty.wav", "text.wav", "silent.wav", "short.wav", "x.wav"}
    assert "empty" in reasons["empty.wav"] and "silent" in reasons["silent.wav"]
    assert "unknown emotion" in reasons["x.wav"]
    assert any(p.endswith("stereo24.wav") for p in r["test_clips"])  # spk00 is fold 0's test speaker


def test_classical_baseline_same_split(tmp_path, cache_dir):
    pytest.importorskip("opensmile")
    out = tmp_path / "svm"
    train("dataset.n_speakers=4", "dataset.clips_per_speaker_emotion=3", "model=egemaps_svm",
          f"paths.cache_dir={cache_dir}", output_dir=out)
    r = json.loads((out / "results.json").read_text())
    assert r["feature_set"] == "eGeMAPSv02" and r["n_features"] == 88 and r["transductive"] is True
    assert r["test_speakers"] == ["synthetic:spk00"] and 0 <= r["metrics"]["ua"] <= 1


def test_sweep_then_evaluate(tmp_path, cache_dir):
    runs = tmp_path / "sweep"
    sweep([*TINY, f"paths.cache_dir={cache_dir}", "logger=none"], [["aug=none", "aug=specaug"], ["split.fold=0", "split.fold=1"]],
          runs)
    assert len(list(runs.rglob("results.json"))) == 4
    run_script("evaluate.py", f"runs=[{runs}]", "baselines=[{aug:none}]", "logger=wandb")  # the CLI, as a user calls it
    assert list((runs / "summary" / "wandb").glob("offline-run-*"))  # the table, logged offline
    summary = json.loads((runs / "summary" / "summary.json").read_text())
    arms = {a["arm_spec"]["aug"]: a for a in summary["arms"]}
    assert len(arms) == 2 and arms["none"]["arm_spec"]["model.epochs"] == "2"  # overrides define the arm
    spec = arms["specaug"]
    assert spec["n_runs"] == 2 and spec["folds"] == [0, 1]
    assert spec["arm_spec"]["dataset"] == "synthetic" and spec["arm_spec"]["model"] == "mel_tdnn"
    assert list(spec["comparisons"]) == [arms["none"]["arm"]] and arms["none"]["comparisons"] == {}
    cmp = spec["comparisons"][arms["none"]["arm"]]
    assert cmp["n_pairs"] == 2 and set(cmp["per_class_delta"]) == {"neutral", "happy", "sad", "angry"}
    table = (runs / "summary" / "summary.md").read_text()
    assert "Paired comparisons" in table and "specaug" in table
    assert (runs / "summary" / "summary.png").stat().st_size > 1000


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, cache_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    out = tmp_path / "resume"
    args = [*TINY, "model.epochs=40", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={out}", "logger=none"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the power goes out mid-training
    proc.wait()
    assert last.exists() and not (out / "results.json").exists()
    log = run_script("train.py", *args)  # the same command again
    assert "resuming from" in log.stdout + log.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["epochs_trained"] == 40


def test_a_rerun_sweep_skips_complete_runs_and_redoes_the_rest(tmp_path, cache_dir):
    from ser.errors import ConfigError

    runs = tmp_path / "sweep"
    base = [*TINY, f"paths.cache_dir={cache_dir}", "logger=none"]
    grid = [["split.fold=0", "split.fold=1"]]
    first = sweep(base, grid, runs)
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("results.json")}
    (runs / "1" / "results.json").unlink()  # run 1 was killed before it finished
    second = sweep([*base, "features.workers=2"], grid, runs)  # execution settings may differ
    assert second[0] == first[0] and (runs / "0" / "results.json").stat().st_mtime_ns == stamps[runs / "0" / "results.json"]
    assert (runs / "1" / "results.json").is_file() and second[1]["fold"] == 1
    with pytest.raises(ConfigError, match=r"different run.*model\.epochs=2->3"):  # another sweep into the same folder
        train(*base, "split.fold=0", "model.epochs=3", output_dir=runs / "0")
    # A run from before a key existed: the error names the key, so the user can judge it.
    old = json.loads((runs / "0" / "results.json").read_text())
    del old["config"]["diffusion"]["space"]
    (runs / "0" / "results.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"diffusion\.space=\(absent\)->mel"):
        train(*base, "split.fold=0", output_dir=runs / "0")
    third = train(*base, "split.fold=0", "model.epochs=3", "resume=false", output_dir=runs / "0")
    assert third["config"]["model"]["epochs"] == 3


def test_a_run_dir_in_use_by_another_process_is_refused(tmp_path, cache_dir):
    # Two sweeps started into one folder at once both pass the resume check and would overwrite
    # each other's results (it happened on the GPU machine, 2026-11-27): the second is refused.
    import subprocess
    import sys

    from ser.errors import ConfigError

    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; from filelock import FileLock; "
                               f"lock = FileLock({str(out / '.run.lock')!r}); lock.acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="in use by another running process.*hydra.sweep.dir"):
            train(*TINY, f"paths.cache_dir={cache_dir}", "logger=none", output_dir=out)
        assert not (out / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder died: the OS released its lock, and the folder runs.
    assert train(*TINY, f"paths.cache_dir={cache_dir}", "logger=none", output_dir=out)["fold"] == 0
