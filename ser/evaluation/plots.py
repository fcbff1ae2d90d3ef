"""Figures a person looks at (matplotlib, no display): confusion matrices, per-arm comparisons,
learning curves, and the generators' figures (sample grids, real vs generated, SDEdit before/after,
convergence curves). Every figure is saved atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ser.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


def draw_spectrogram(ax, db, top_db: float = 80.0) -> None:
    """One log-mel spectrogram in dB (rows = mel bands, low frequencies at the bottom), on the
    fixed [-top_db, 0] scale, so real and generated spectrograms are drawn alike."""
    ax.imshow(np.asarray(db).reshape(np.shape(db)[-2], -1), origin="lower", aspect="auto", vmin=-top_db, vmax=0,
              cmap="magma")
    ax.axis("off")


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
    return _save(fig, path, dpi=120)


def plot_arms(rows: list[dict], path: str | Path, metric: str = "ua", names: dict | None = None) -> Path:
    """One point per arm (mean over folds x seeds) with its 95% CI, and the per-run values behind it."""
    labels = [(names or {}).get(r["arm"], r["arm"]) for r in rows]
    # Wide enough for the longest arm name beside the axis.
    fig, ax = plt.subplots(figsize=(7 + 0.06 * max(map(len, labels), default=0), 0.6 + 0.45 * len(rows)))
    for i, row in enumerate(rows):
        values = row["values"][metric]
        ax.scatter(values, [i] * len(values), s=10, color="0.6", zorder=1)
        lo, hi = row[metric]["ci95"]
        ax.errorbar(row[metric]["mean"], i, xerr=[[row[metric]["mean"] - lo], [hi - row[metric]["mean"]]],
                    fmt="o", color="C0", capsize=3, zorder=2)
    if metric in ("ua", "wa") and rows:
        ax.axvline(1 / len(rows[0]["emotions"]), color="C3", ls="--", lw=1, label="chance")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlabel(f"{metric.upper()} (mean, 95% CI; grey: each fold x seed)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


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
    for ax in axes[::-1]:  # the legend where there are curves (runs without validation have no val/ua)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
            break
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_layer_weights(weights: list[list[float]], path: str | Path, title: str = "") -> Path:
    """The weight an encoder probe gives each hidden layer (0 = the input embeddings), per member."""
    w = np.asarray(weights)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * w.shape[1], 3.0))
    width = 0.8 / len(w)
    for i, member in enumerate(w):
        ax.bar(np.arange(len(member)) + i * width - 0.4 + width / 2, member, width=width, label=f"member {i}")
    ax.axhline(1 / w.shape[1], color="0.5", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(w.shape[1]))
    ax.set_xlabel("encoder layer (0 = input embeddings)")
    ax.set_ylabel("softmax weight")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def plot_sample_grids(spectrograms, labels, emotions: list[str], out_dir: str | Path, per_emotion: int = 8) -> list[Path]:
    """`grid_<emotion>.png`: up to `per_emotion` generated spectrograms (dB) of each emotion."""
    labels, paths = np.asarray(labels), []
    for k, emotion in enumerate(emotions):
        picks = np.flatnonzero(labels == k)[:per_emotion]
        if not len(picks):
            continue
        fig, axes = plt.subplots(1, len(picks), figsize=(1.6 * len(picks), 2.0), squeeze=False)
        for ax, i in zip(axes[0], picks):
            draw_spectrogram(ax, spectrograms[i])
        fig.suptitle(f"generated: {emotion}", fontsize=9)
        paths.append(_save(fig, Path(out_dir) / f"grid_{emotion}.png", dpi=100))
    return paths


def plot_real_vs_generated(real, real_labels, synthetic, syn_labels, emotions: list[str], path: str | Path,
                           per_row: int = 4) -> Path:
    """One row per emotion: real training clips on the left, generated ones on the right."""
    fig, axes = plt.subplots(len(emotions), 2 * per_row, figsize=(1.3 * 2 * per_row, 1.1 * len(emotions) + 0.4),
                             squeeze=False)
    for row, emotion in enumerate(emotions):
        picks = [real[i] for i in np.flatnonzero(np.asarray(real_labels) == row)[:per_row]]
        picks += [None] * (per_row - len(picks))
        picks += [synthetic[i] for i in np.flatnonzero(np.asarray(syn_labels) == row)[:per_row]]
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(picks) and picks[col] is not None:
                draw_spectrogram(ax, picks[col])
        axes[row][0].set_title(emotion, fontsize=8, loc="left")
    fig.suptitle(f"left {per_row}: real training clips; right {per_row}: generated", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=90)


def plot_before_after(originals, edited, source_emotions: list[str], target: str, strength: float,
                      path: str | Path, n: int = 6) -> Path:
    """SDEdit: real clips (top) and the same clips moved toward `target` (bottom)."""
    n = min(len(originals), n)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.6), squeeze=False)
    for j in range(n):
        draw_spectrogram(axes[0][j], originals[j])
        draw_spectrogram(axes[1][j], edited[j])
        axes[0][j].set_title(source_emotions[j], fontsize=8)
    fig.suptitle(f"top: real clips; bottom: toward {target} (strength {strength})", fontsize=9)
    return _save(fig, path, dpi=100)


def plot_convergence(rows: list[dict], path: str | Path, title: str) -> Path:
    """A generator's denoising loss per epoch: training (random noise) and held-out speakers (fixed noise)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("train/loss", "training (random noise)"), ("val/loss", "held-out speakers (fixed noise)")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising MSE")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, dpi=100)
