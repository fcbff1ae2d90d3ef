"""Figures a person looks at: confusion matrices and per-arm comparisons (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(confusion, labels: list[str], path: str | Path, title: str = "") -> Path:
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_arms(rows: list[dict], path: str | Path, metric: str = "ua", names: dict | None = None) -> Path:
    """One point per arm (mean over folds x seeds) with its 95% CI, and the per-run values behind it."""
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(rows)))
    for i, row in enumerate(rows):
        values = row["values"][metric]
        ax.scatter(values, [i] * len(values), s=10, color="0.6", zorder=1)
        lo, hi = row[metric]["ci95"]
        ax.errorbar(row[metric]["mean"], i, xerr=[[row[metric]["mean"] - lo], [hi - row[metric]["mean"]]],
                    fmt="o", color="C0", capsize=3, zorder=2)
    if metric in ("ua", "wa") and rows:
        ax.axvline(1 / len(rows[0]["emotions"]), color="C3", ls="--", lw=1, label="chance")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(range(len(rows)), [(names or {}).get(r["arm"], r["arm"]) for r in rows], fontsize=8)
    ax.set_xlabel(f"{metric.upper()} (mean, 95% CI; grey: each fold x seed)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_learning_curves(curves: dict[str, dict[str, list]], path: str | Path) -> Path:
    """Per arm, the mean over its runs of training loss and validation UA per epoch (shaded: +- std).

    `curves`: {arm name: {"train/loss": [per-run list of per-epoch values], "val/ua": [...]}}.
    """
    panels = [("train/loss", "training loss"), ("val/ua", "validation UA")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (key, title), ax in zip(panels, axes):
        for i, (arm, series) in enumerate(curves.items()):
            runs = [np.asarray(r, dtype=float) for r in series.get(key, []) if len(r)]
            if not runs:
                continue
            n = min(len(r) for r in runs)  # runs of an arm share an epoch budget; resumed ones may differ
            stack = np.stack([r[:n] for r in runs])
            mean, std = np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)
            epochs = np.arange(1, n + 1)
            ax.plot(epochs, mean, color=f"C{i}", label=f"{arm} ({len(runs)} runs)")
            ax.fill_between(epochs, mean - std, mean + std, color=f"C{i}", alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
