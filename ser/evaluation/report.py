"""What a reader gets from evaluate.py: summary.md (the tables), summary.json, and the figures
(each arm's UA, confusion matrices, learning curves, the synthetic sets' real-vs-generated grids).
The numbers come from ser/evaluation/aggregate.py; this module only presents them."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

from ser.evaluation.plots import plot_arms, plot_confusion, plot_learning_curves
from ser.io import atomic_path, write_json, write_text


def write_report(summary: dict, by_arm: dict[str, list[dict]], out: Path) -> None:
    """Write summary.md, summary.json and the figures for `summary` (from aggregate) into `out`;
    each arm row gets its short display name, and the summary the figures' paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summary["arms"]
    names, _ = short_labels(rows)
    plot_arms(rows, out / "summary.png", summary["metric"], names)
    for i, row in enumerate(rows):
        row["name"] = names[row["arm"]]
        plot_confusion(row["confusion"], row["emotions"], out / f"confusion_arm{i}.png", title=names[row["arm"]])
    summary["figures"] = collect_figures(by_arm, names, out)
    write_text(out / "summary.md", markdown_table(rows) + _cross_corpus_markdown(rows, names)
               + _figures_markdown(summary["figures"]) + _code_markdown(summary["code"]))
    write_json(out / "summary.json", summary)


def _code_markdown(code: dict) -> str:
    parts = [f"{commit[:10]} ({n} runs)" for commit, n in code["commits"].items()]
    if code["dirty"]:
        parts.append(f"{code['dirty']} of them from a tree with uncommitted changes")
    if code["unrecorded"]:
        parts.append(f"{code['unrecorded']} runs without a recorded commit (not a git checkout, or made before ser recorded it)")
    warn = " **Several commits: check that no change between them affects these numbers.**" if len(code["commits"]) > 1 else ""
    return f"\nCode: {'; '.join(parts)}.{warn}\n"


def epoch_curves(run_dir: str | Path) -> dict[str, list[float]]:
    """Per-epoch training loss and validation UA from a run's CSV log ({} without one)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    per_epoch: dict[str, dict[int, float]] = defaultdict(dict)
    with path.open() as f:
        for row in csv.DictReader(f):
            for key in ("train/loss", "val/ua"):
                if row.get(key):
                    per_epoch[key][int(row["epoch"])] = float(row[key])  # the epoch's last logged value
    return {key: [v for _, v in sorted(d.items())] for key, d in per_epoch.items()}


def collect_figures(by_arm: dict[str, list[dict]], names: dict[str, str], out: Path) -> dict:
    """Learning curves of every arm, and real-vs-generated grids and quality reports of the
    synthetic sets the arms trained on (written by generate.py mode=quality)."""
    figures: dict = {"learning_curves": None, "synthetic_sets": []}
    curves = {names[a]: defaultdict(list) for a in by_arm}
    for arm, runs in by_arm.items():
        for r in runs:
            for key, values in epoch_curves(r["_dir"]).items():
                curves[names[arm]][key].append(values)
    if any(c for c in curves.values()):
        figures["learning_curves"] = str(plot_learning_curves({a: dict(c) for a, c in curves.items() if c},
                                                              out / "learning_curves.png"))
    seen = set()
    for arm, runs in by_arm.items():
        for r in runs:
            syn = (r.get("synthetic") or {}).get("path")
            kind = (r.get("synthetic") or {}).get("kind") or ("sdedit" if "strength" in (r.get("synthetic") or {}) else "pool")
            if not syn or syn in seen or kind != "pool":  # quality.json measures a pool, not SDEdit variants
                continue
            seen.add(syn)
            syn_dir = Path(syn).parent
            # A fold has one generator per seed, so the seed names a set together with the fold.
            seed = r["synthetic"].get("generator_seed")
            entry = {"arm": names[arm], "fold": r["fold"], "generator_seed": seed, "path": syn, "grid": None,
                     "quality": None}
            grid = syn_dir / "real_vs_generated.png"
            if grid.is_file():
                copy = out / f"real_vs_generated_f{r['fold']}_s{seed}_{len(seen)}.png"
                with atomic_path(copy) as tmp:
                    shutil.copyfile(grid, tmp)
                entry["grid"] = str(copy)
            if (syn_dir / "quality.json").is_file():
                entry["quality"] = json.loads((syn_dir / "quality.json").read_text())
            figures["synthetic_sets"].append(entry)
    return figures


def _cross_corpus_markdown(rows: list[dict], names: dict[str, str]) -> str:
    lines = []
    for row in rows:
        if "cross_corpus" not in row:
            continue
        folds = "; ".join(f"{f['train']} -> {f['test']}: UA {f['ua']:.3f}" for f in row["cross_corpus"]["folds"])
        mapping = "; ".join(f"{c}: " + ", ".join(f"{k}={v}" for k, v in m.items())
                            for c, m in row["cross_corpus"]["mapping"].items())
        lines += [f"- {names[row['arm']]}: {folds} (shared emotions: {', '.join(row['emotions'])}; labels: {mapping})"]
    return ("\nCross-corpus (UA over the shared emotions):\n\n" + "\n".join(lines) + "\n") if lines else ""


def _figures_markdown(figures: dict) -> str:
    lines = []
    if figures["learning_curves"]:
        lines += ["", f"Learning curves (mean +- std over each arm's runs): {Path(figures['learning_curves']).name}"]
    sets = figures["synthetic_sets"]
    if sets:
        lines += ["", "Synthetic sets used (quality from generate.py mode=quality; held-out real = speakers neither "
                      "the generator nor the yardstick classifier trained on):", "",
                  "| fold | generator seed | KID syn-vs-train (held-out real) | KID / held-out KID (the image size's ceiling) | "
                  "precision / recall (held-out real) | close-copy rate | real classifier UA on synthetic (on held-out real) "
                  "| grid |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in sets:
            qr = e["quality"]
            if qr is None:
                lines.append(f"| {e['fold']} | {e['generator_seed']} | not measured: run generate.py mode=quality | | | | | "
                             f"{Path(e['grid']).name if e['grid'] else '-'} |")
                continue
            kid, pr = qr["embedding"]["kid"], qr["embedding"]["precision_recall"]
            ratio = qr["embedding"].get("kid_ratio")
            if not ratio:  # quality.json files before the ceiling lack it
                ratio = "-"
            elif ratio["synthetic"] is None:
                ratio = "undefined (held-out KID <= 0)"
            else:
                ratio = f"{ratio['synthetic']:.1f}x ({ratio['squeezed']:.1f}x)"
            lines.append(
                f"| {e['fold']} | {e['generator_seed']} | {kid['synthetic_vs_train']['mean']:.4f} ({kid['heldout_vs_train']['mean']:.4f}) | {ratio} | "
                f"{pr['synthetic']['precision']:.2f} / {pr['synthetic']['recall']:.2f} "
                f"({pr['heldout']['precision']:.2f} / {pr['heldout']['recall']:.2f}) | "
                f"{qr['image']['memorization']['close_rate']:.2f} | "
                f"{qr['real_classifier_on_synthetic']['ua']:.3f} ({qr['real_classifier_on_heldout']['ua']:.3f}) | "
                f"{Path(e['grid']).name if e['grid'] else '-'} |")
    return "\n".join(lines) + ("\n" if lines else "")


def short_labels(rows: list[dict]) -> tuple[dict[str, str], str]:
    """Name arms by what differs between them; return those names and what they all share."""
    specs = [r["arm_spec"] for r in rows]
    keys = sorted({k for s in specs for k in s})
    varying = [k for k in keys if len({s.get(k) for s in specs}) > 1]
    common = [k for k in keys if k not in varying]
    names = {r["arm"]: (",".join(f"{k}={r['arm_spec'][k]}" for k in varying if k in r["arm_spec"]) or r["arm"])
             for r in rows}
    shared = ",".join(f"{k}={specs[0][k]}" for k in common)
    return names, shared


def markdown_table(rows: list[dict]) -> str:
    names, shared = short_labels(rows)
    lines = [f"Common to all arms: {shared or '-'}", "",
             "| arm | runs (folds x seeds) | UA mean +- std (over folds) | UA 95% CI | WA | macro-F1 | pooled UA [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = "" if r["speaker_independent"] else " **(speaker-dependent)**"
        lines.append(
            f"| {names[r['arm']]}{flag} | {r['n_runs']} ({len(r['folds'])} x {len(r['seeds'])}) | "
            f"{r['ua']['mean']:.3f} +- {r['ua']['std']:.3f} | {r['ua']['ci95'][0]:.3f}-{r['ua']['ci95'][1]:.3f} | "
            f"{r['wa']['mean']:.3f} | {r['macro_f1']['mean']:.3f} | "
            f"{r['pooled_ua']:.3f} [{r['pooled_ua_ci95'][0]:.3f}, {r['pooled_ua_ci95'][1]:.3f}] |")
    cmp_lines = []
    for r in rows:
        against = list(r["comparisons"].items())
        if r.get("vs_best_classical"):
            c = r["vs_best_classical"]
            against.append((c["arm"], c))
        for base, c in against:
            p = lambda x: "n/a" if x is None else f"{x:.3g}"  # noqa: E731
            tag = " (best classical)" if c["family"].endswith("classical augmentation") else ""
            cmp_lines.append(
                f"| {names[r['arm']]} | {names.get(base, base)}{tag} | {c.get('n_folds', c['n_pairs'])} ({c['n_pairs']}) | {c['delta_mean']:+.3f} | "
                f"{c['delta_ci95'][0]:+.3f} to {c['delta_ci95'][1]:+.3f} | {c['wins']}/{c['losses']}/{c['ties']} | "
                f"{p(c['p_ttest'])} | {p(c.get('p_holm'))} ({c.get('family_size', 1)}) | {p(c['p_wilcoxon'])} |"
                + (f" {', '.join(f'{e} {d:+.3f}' for e, d in c['per_class_delta'].items() if d is not None)} |"))
    if cmp_lines:
        lines += ["", "Paired comparisons (same folds and seeds; the seeds of a fold are averaged first, so the tests and "
                      "wins/losses count folds; Holm: corrected within each family of comparisons, family size in brackets; "
                      "per-class: recall deltas):", "",
                  "| arm | vs baseline | folds (runs) | delta UA | 95% CI | wins/losses/ties | p (paired t) | p (Holm) | "
                  "p (Wilcoxon) | per-class delta |",
                  "|---|---|---|---|---|---|---|---|---|---|", *cmp_lines]
    aug_lines = []
    for r in rows:
        a = r.get("augmentation")
        if not a:
            continue
        syn, audio = a.get("synthetic"), a.get("audio")
        fmt = lambda x, f="{:.0f}": "-" if x is None else f.format(x)  # noqa: E731
        aug_lines.append(
            f"| {names[r['arm']]} | {fmt(syn and syn['n_used'])} ({fmt(syn and syn['n_unique'])} distinct) | "
            f"{fmt(syn and syn['kept_fraction'], '{:.2f}')} | {', '.join(syn['sampler']) if syn else '-'} | "
            f"{fmt(syn and syn['strength'], '{:.2f}')} | {fmt(syn and syn['generation_time_s'])} | "
            f"{fmt(audio and audio['n_used'])} | {_seen_cell(syn)} |")
    if aug_lines:
        lines += ["", "What the augmentation arms trained on (means per run; generation time summed over runs that "
                      "made a generator, pool or edits):", "",
                  "| arm | synthetic clips per run | filter kept | sampler | SDEdit strength | generation s | "
                  "waveform copies per run | as the classifier sees them: Frechet ratio to held-out speakers, "
                  "recall (held-out), real-only classifier's UA on them (ratio to held-out), close-copy rate |",
                  "|---|---|---|---|---|---|---|---|", *aug_lines]
    return "\n".join(lines) + "\n"


def _seen_cell(syn: dict | None) -> str:
    seen = (syn or {}).get("in_classifier_space")
    if not seen:
        return "-"
    return (f"{seen['frechet_ratio']:.1f}, {seen['recall']:.2f} ({seen['heldout_recall']:.2f}), "
            f"{seen['real_classifier_ua']:.3f} ({seen['ua_ratio']:.2f}), {_maybe(seen.get('close_rate'))}; "
            f"{seen['n_runs']} runs")


def _maybe(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
