"""Aggregate many runs (a -m sweep) into a comparison a reviewer can trust.

Runs are grouped into arms (every choice except fold and seed). For each arm: mean +- std of
UA/WA/macro-F1, a 95% t-interval for the mean, and the pooled UA over all test clips. Each arm
is compared with its baseline arm (the same arm with e.g. aug=none) on the (fold, seed) pairs
both ran: mean paired difference, its 95% CI, paired t-test and Wilcoxon signed-rank p-values,
and per-class recall differences.

The unit of replication is the fold (its test speakers), not the run: the seeds of one fold are
tested on the same clips, so they are averaged within the fold before any std, interval or test.
Counting each (fold, seed) as independent would shrink every interval and p-value by about
sqrt(seeds) without any new speakers behind it. With one seed per fold nothing changes. Generative augmentation arms are also
compared with the best classical augmentation arm (specaug, audio, mixup), and p-values are
Holm-corrected within each family of comparisons.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from ser.errors import DataError, NotFound
from ser.evaluation.metrics import bootstrap_ci, classification_metrics, holm, t_interval, unweighted_accuracy
from ser.evaluation.report import write_report

log = logging.getLogger(__name__)
METRICS = ("ua", "wa", "macro_f1")


def find_runs(paths) -> list[dict]:
    """Load results.json from run dirs, or from every run below a sweep dir.

    Per-run metrics are recomputed from the stored test labels and predictions, so every table
    uses the current metric code, also for runs written before a metric fix.
    """
    runs = []
    for p in map(Path, paths):
        files = [p / "results.json"] if (p / "results.json").is_file() else sorted(p.rglob("results.json"))
        for f in files:
            r = json.loads(f.read_text())
            r["_dir"] = str(f.parent)
            if r.get("test_labels") is not None and r.get("test_predictions") is not None:
                r["metrics"].update(classification_metrics(r["test_labels"], r["test_predictions"], len(r["emotions"])))
            runs.append(r)
    if not runs:
        raise NotFound(f"no results.json under {[str(p) for p in paths]}")
    return runs


def arm_label(arm: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(arm.items())) or "default"


def summarize_arm(runs: list[dict]) -> dict:
    first = runs[0]
    values = {m: [r["metrics"][m] for r in runs] for m in METRICS}
    row = {"arm": arm_label(first["arm"]), "arm_spec": first["arm"], "n_runs": len(runs),
           "folds": sorted({r["fold"] for r in runs}), "seeds": sorted({r["seed"] for r in runs}),
           "protocol": first["protocol"], "speaker_independent": all(r["speaker_independent"] for r in runs),
           "emotions": first["emotions"], "values": values}
    row["n_folds"] = len(row["folds"])
    for m in METRICS:
        v = fold_means(runs, values[m])  # one value per fold: the seeds of a fold share its test clips
        row[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "ci95": list(t_interval(v))}
    # Pooled over every test clip of every run (each clip once per seed).
    y_true = np.concatenate([r["test_labels"] for r in runs])
    y_pred = np.concatenate([r["test_predictions"] for r in runs])
    row["pooled_ua"] = unweighted_accuracy(y_true, y_pred)
    clips = [c for r in runs for c in r["test_clips"]] if all(r.get("test_clips") for r in runs) else None
    row["pooled_ua_ci95"] = list(bootstrap_ci(y_true, y_pred, groups=clips))  # a clip's seeds resampled together
    row["confusion"] = np.sum([r["metrics"]["confusion"] for r in runs], axis=0).tolist()
    row["wall_time_s"] = float(sum(r.get("wall_time_s", 0.0) for r in runs))
    crossed = {(" + ".join(r["cross_corpus"]["train"]), " + ".join(r["cross_corpus"]["test"]), r["fold"],
                r["metrics"]["ua"]) for r in runs if r.get("cross_corpus")}
    if crossed:  # cross-corpus arms: which corpus taught and which was tested, fold by fold
        row["cross_corpus"] = {"folds": [{"train": a, "test": b, "fold": f, "ua": ua} for a, b, f, ua in sorted(crossed, key=lambda x: x[2])],
                               "mapping": next(r["cross_corpus"]["mapping"] for r in runs if r.get("cross_corpus"))}
    return row


def fold_means(runs: list[dict], values) -> np.ndarray:
    """`values` (one per run) averaged over the seeds of each fold, in fold order."""
    by_fold = defaultdict(list)
    for r, v in zip(runs, values):
        by_fold[r["fold"]].append(v)
    return np.array([np.mean(by_fold[f]) for f in sorted(by_fold)], dtype=float)


def paired_comparison(arm_runs: list[dict], base_runs: list[dict], metric: str = "ua") -> dict | None:
    """The arm against its baseline on the (fold, seed) pairs both ran; the test statistics are on
    the per-fold mean differences (seeds averaged within a fold), so n is the number of folds."""
    key = lambda r: (r["fold"], r["seed"])  # noqa: E731
    base = {key(r): r for r in base_runs}
    pairs = [(r, base[key(r)]) for r in arm_runs if key(r) in base]
    if not pairs:
        return None
    for r, b in pairs:
        if r["test_clips"] != b["test_clips"]:
            raise DataError(f"runs {r['_dir']} and {b['_dir']} share fold/seed but not test clips; not a paired comparison")
    mine = [r for r, _ in pairs]
    a, b = (fold_means(mine, [x["metrics"][metric] for x in side]) for side in zip(*pairs))
    d = a - b
    out = {"metric": metric, "n_pairs": len(pairs), "n_folds": len(d), "n_seeds": len({r["seed"] for r in mine}),
           "delta_mean": float(d.mean()), "delta_ci95": list(t_interval(d)),
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
    if len(d) >= 2 and np.any(d != d[0]):
        test = stats.ttest_rel(a, b)  # the paired t-test; its interval is the one for the mean difference
        out["delta_ci95"] = [float(x) for x in test.confidence_interval(0.95)]
        out["p_ttest"] = float(test.pvalue)
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    else:
        out["p_ttest"] = out["p_wilcoxon"] = None
    recalls = np.array([[np.nan if (x is None or y is None) else x - y
                         for x, y in zip(r["metrics"]["per_class_recall"], b["metrics"]["per_class_recall"])]
                        for r, b in pairs], dtype=float)
    out["per_class_delta"] = {e: (None if np.all(np.isnan(recalls[:, i])) else float(np.nanmean(recalls[:, i])))
                              for i, e in enumerate(pairs[0][0]["emotions"])}
    return out


def baseline_of(arm: dict, baseline: dict) -> dict:
    """The arm `arm` is compared with: its choices with `baseline`'s substituted; a `null` in
    `baseline` removes that key (an option the baseline arm does not have, e.g. model.layers).
    A group the baseline switches (`aug: none`) takes the arm's options of that group with it
    (`aug.synthetic.ratio=2` belongs to aug=ddpm, not to aug=none)."""
    switched = [k for k in baseline if "." not in k and baseline[k] is not None and arm.get(k) != str(baseline[k])]
    kept = {k: v for k, v in arm.items() if not any(k.startswith(g + ".") for g in switched)}
    merged = {**kept, **{k: str(v) for k, v in baseline.items() if v is not None}}
    return {k: v for k, v in merged.items() if baseline.get(k, "") is not None}


# Choices that only generative arms read: an arm without a generator is the same whatever they say.
GENERATOR_KEYS = ("diffusion", "generator")
# Overrides that say where a run's generator and samples live, or whether it may make them.
WHERE_NOT_WHAT = ("generator.root", "generator.dir", "generator.synthetic_dir", "aug.synthetic.path",
                  "aug.sdedit.path", "aug.synthetic.generate", "aug.sdedit.generate")


def merge_relocated(by_arm: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Arms that differ only in WHERE_NOT_WHAT and never ran the same fold and seed are one arm:
    each fold's generator kept in a folder of its own (`generator.root=<fold's folder>`, one command
    a fold). Arms that share a fold and seed stay apart, since there the folders can hold different
    generators (snapshots of one training, each its own arm)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label, runs in by_arm.items():
        core = {k: v for k, v in runs[0]["arm"].items() if k not in WHERE_NOT_WHAT}
        groups[arm_label(core)].append(label)
    merged: dict[str, list[dict]] = {}
    for core, labels in groups.items():
        keys = [{(r["fold"], r["seed"]) for r in by_arm[label]} for label in labels]
        if len(labels) > 1 and sum(map(len, keys)) == len(set().union(*keys)):
            runs = [r for label in labels for r in by_arm[label]]
            for r in runs:
                r["arm"] = {k: v for k, v in r["arm"].items() if k not in WHERE_NOT_WHAT}
            merged[core] = runs
        else:
            merged.update({label: by_arm[label] for label in labels})
    return merged


def without_generator(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k.split(".")[0].split("/")[0] not in GENERATOR_KEYS}


def best_classical_of(row: dict, rows: list[dict], classical: list[str], metric: str) -> dict | None:
    """The best-scoring classical-augmentation arm (e.g. aug=specaug, audio, mixup) that differs from
    `row` only in its augmentation: the bar a generative arm has to clear. None for classical arms
    themselves and where no such arm ran."""
    aug = row["arm_spec"].get("aug")
    if aug is None or aug in classical or aug == "none":
        return None
    candidates = [r for r in rows if r["arm_spec"].get("aug") in classical
                  and r["arm"] == arm_label(without_generator(baseline_of(row["arm_spec"], {"aug": r["arm_spec"]["aug"]})))]
    return max(candidates, key=lambda r: r[metric]["mean"], default=None)


def augmentation_summary(runs: list[dict]) -> dict | None:
    """What an augmentation arm trained on, averaged over its runs: synthetic or edited clips (how
    many, how many distinct, the filter's kept fraction, generation time) and waveform copies."""
    syn = [r["synthetic"] for r in runs if r.get("synthetic")]
    audio = [r["audio_augmentation"] for r in runs if r.get("audio_augmentation")]
    if not syn and not audio:
        return None
    mean = lambda xs: None if not xs else float(np.mean(xs))  # noqa: E731
    out = {}
    if syn:
        made = [s.get("provided") or {} for s in syn]
        kept = [s["filter"]["kept_fraction"] for s in syn if s.get("filter")]
        out["synthetic"] = {
            "n_used": mean([s["n_used"] for s in syn]), "n_unique": mean([s.get("n_unique", s["n_used"]) for s in syn]),
            "kept_fraction": mean(kept), "sampler": sorted({f"{s['sampler']}-{s['steps']}" for s in syn if "sampler" in s}),  # sdedit at strength 0: none
            "strength": mean([s["strength"] for s in syn if "strength" in s]),
            "generation_time_s": float(sum(m.get("generator_train_time_s", 0) + m.get("sample_time_s", 0)
                                           + m.get("edit_time_s", 0) for m in made))}
        # How the classifier saw them (encoder probes; ser/diffusion/assess_encoded.py), fold by fold.
        seen = [s["quality_in_classifier_space"] for s in syn if "frechet_ratio" in (s.get("quality_in_classifier_space") or {})]
        if seen:
            out["synthetic"]["in_classifier_space"] = {
                "n_runs": len(seen), "frechet_ratio": mean([x["frechet_ratio"] for x in seen]),
                "recall": mean([x["precision_recall"]["generated"]["recall"] for x in seen]),
                "heldout_recall": mean([x["precision_recall"]["heldout"]["recall"] for x in seen]),
                "real_classifier_ua": mean([x["real_classifier_on_generated"]["ua"] for x in seen]),
                "ua_ratio": mean([x["ua_ratio"] for x in seen if x["ua_ratio"] is not None]),
                # Runs made before the close-copy rate was recorded have none.
                "close_rate": mean([x["memorization"]["close_rate"] for x in seen if "memorization" in x])}
    if audio:
        out["audio"] = {"n_used": mean([a["n_used"] for a in audio]), "variants": audio[0]["variants"]}
    return out


def aggregate(paths, out_dir: str | Path, baselines: list[dict] | None = None, metric: str = "ua",
              classical: list[str] | None = None) -> dict:
    """`baselines`: each arm is compared with the same arm under each of these choices (the first
    is the reference). `classical`: the aug options that count as classical augmentation; each
    other augmentation arm is also compared with the best of them. p-values are Holm-corrected
    within each family (all comparisons with the same kind of reference)."""
    runs = find_runs(paths)
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        arm = {k: str(v) for k, v in r["arm"].items()}
        # A run that read no generator is the same arm whatever diffusion/generator settings it was given.
        r["arm"] = arm if r.get("synthetic") else without_generator(arm)
        by_arm[arm_label(r["arm"])].append(r)
    by_arm = merge_relocated(by_arm)
    rows = [summarize_arm(rs) for _, rs in sorted(by_arm.items())]
    for row in rows:
        row["comparisons"] = {}
        row["augmentation"] = augmentation_summary(by_arm[row["arm"]])
    # Baselines in the order given: the first is the reference (e.g. aug=none); a pair already
    # compared one way round is not repeated the other way.
    for base in baselines or []:
        for row in rows:
            base_spec = baseline_of(row["arm_spec"], base)
            if base_spec.get("aug") in {"none", *(classical or [])}:
                base_spec = without_generator(base_spec)  # aug=none ran without diffusion=..., and rightly so
            base_label = arm_label(base_spec)
            reverse_done = any(row["arm"] in r["comparisons"] for r in rows if r["arm"] == base_label)
            if base_label != row["arm"] and base_label in by_arm and not reverse_done:
                cmp = paired_comparison(by_arm[row["arm"]], by_arm[base_label], metric)
                if cmp:
                    row["comparisons"][base_label] = dict(cmp, family=f"vs {arm_label(base)}")
    for row in rows:
        best = best_classical_of(row, rows, classical or [], metric)
        cmp = best and paired_comparison(by_arm[row["arm"]], by_arm[best["arm"]], metric)
        row["vs_best_classical"] = dict(cmp, arm=best["arm"], family="vs the best classical augmentation") if cmp else None
    families = defaultdict(list)
    for row in rows:
        for c in [*row["comparisons"].values(), *([row["vs_best_classical"]] if row["vs_best_classical"] else [])]:
            families[c["family"]].append(c)
    for family in families.values():
        for c, adjusted in zip(family, holm([c["p_ttest"] for c in family])):
            c["p_holm"], c["family_size"] = adjusted, len(family)
    summary = {"metric": metric, "n_runs": len(runs), "arms": rows, "code": code_provenance(runs),
               "skipped_inputs": sorted({s["path"] + ": " + s["reason"] for r in runs for s in r.get("skipped", [])})}
    write_report(summary, by_arm, Path(out_dir))
    return summary


def code_provenance(runs: list[dict]) -> dict:
    """Which code produced the runs: runs per git commit, how many ran from a tree with
    uncommitted changes, and how many predate the record (results.json without it). Runs from
    several commits are legitimate (a resumed sweep) but a reader should see it."""
    commits, dirty, unrecorded = defaultdict(int), 0, 0
    for r in runs:
        code = r.get("environment", {}).get("code") or {}
        if code.get("commit") is None:
            unrecorded += 1
            continue
        commits[code["commit"]] += 1
        dirty += bool(code.get("dirty"))
    return {"commits": dict(sorted(commits.items(), key=lambda kv: -kv[1])), "dirty": dirty, "unrecorded": unrecorded}


def latest_sweep(root: str | Path = "outputs/multirun") -> Path:
    sweeps = sorted(p for p in Path(root).glob("*") if p.is_dir()) if Path(root).is_dir() else []
    if not sweeps:
        raise NotFound(f"no sweep under {root}; run `python train.py -m ...` first or pass runs=...")
    return sweeps[-1]
