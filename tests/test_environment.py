"""Provenance: which code and libraries produced a result (results.json, generator metadata,
evaluate.py's summary)."""

import json
import subprocess

import pytest
import torch

from ser.environment import code_revision, describe_environment
from ser.evaluation.aggregate import aggregate


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_code_revision_names_the_commit_and_sees_uncommitted_changes(tmp_path):
    code_revision.cache_clear()
    assert code_revision(tmp_path) == {"commit": None, "dirty": None, "changed": None}  # not a checkout (e.g. a wheel)
    _git(tmp_path, "init", "-q")
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text("figures\n")
    (tmp_path / "README.md").write_text("read me\n")
    _git(tmp_path, "add", "model.py", "docs", "README.md")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    code_revision.cache_clear()
    assert code_revision(tmp_path) == {"commit": head, "dirty": False, "changed": []}
    (tmp_path / "outputs.txt").write_text("a run's output\n")  # untracked files do not change the code
    # Nor does documentation edited while a sweep runs.
    (tmp_path / "docs" / "benchmarks.md").write_text("more figures\n")
    (tmp_path / "README.md").write_text("read me twice\n")
    code_revision.cache_clear()
    assert code_revision(tmp_path)["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    code_revision.cache_clear()
    assert code_revision(tmp_path) == {"commit": head, "dirty": True, "changed": ["model.py"]}
    code_revision.cache_clear()


def test_environment_records_library_versions():
    env = describe_environment()
    assert torch.__version__.startswith(env["versions"]["torch"]) and env["versions"]["ser"]
    assert set(env["code"]) == {"commit", "dirty", "changed"} and env["host_cpus"] >= 1


def _run(root, k, commit, dirty=False):
    d = root / str(k)
    d.mkdir(parents=True)
    r = {"fold": k, "seed": 0, "arm": {"aug": "none"}, "emotions": ["a", "b"], "protocol": "loso",
         "speaker_independent": True, "test_clips": [f"c{k}{i}" for i in range(4)], "test_labels": [0, 0, 1, 1],
         "test_predictions": [0, 1, 1, 1], "metrics": {}, "wall_time_s": 1.0}
    if commit != "old":  # runs made before ser recorded its code have no "environment.code"
        r["environment"] = {"code": {"commit": commit, "dirty": dirty}}
    (d / "results.json").write_text(json.dumps(r))


@pytest.mark.parametrize("several", [False, True])
def test_evaluate_says_which_code_made_the_runs(tmp_path, several):
    _run(tmp_path, 0, "a" * 40)
    _run(tmp_path, 1, "a" * 40, dirty=True)
    _run(tmp_path, 2, ("b" if several else "a") * 40)
    _run(tmp_path, 3, "old")
    summary = aggregate([tmp_path], tmp_path / "summary")
    expected = {"a" * 40: 2, "b" * 40: 1} if several else {"a" * 40: 3}
    assert summary["code"] == {"commits": expected, "dirty": 1, "unrecorded": 1}
    md = (tmp_path / "summary" / "summary.md").read_text()
    assert "aaaaaaaaaa (" in md and "1 runs without a recorded commit" in md and "uncommitted changes" in md
    assert ("Several commits" in md) == several
