"""The evaluate.py job: find runs, aggregate, write summary files, optionally log to W&B."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ser.evaluation.aggregate import aggregate, latest_sweep

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    runs = cfg.runs
    if runs is None:
        runs = [str(latest_sweep())]
    elif isinstance(runs, str):
        runs = [runs]
    runs = [str(r) for r in runs]
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(runs[0]) / "summary"
    baselines = OmegaConf.to_container(cfg.baselines) if cfg.baselines else []
    summary = aggregate(runs, out_dir, baselines=baselines, metric=cfg.metric)
    print((out_dir / "summary.md").read_text())
    print(f"wrote {out_dir}/summary.json, summary.md, summary.png")
    if cfg.wandb:
        _log_to_wandb(summary, out_dir)
    return summary


def _log_to_wandb(summary: dict, out_dir: Path) -> None:
    import os

    import wandb

    run = wandb.init(project="ser", job_type="evaluate", dir=str(out_dir),
                     mode=os.environ.get("WANDB_MODE", "offline"))
    columns = ["arm", "runs", "ua_mean", "ua_std", "ua_ci_lo", "ua_ci_hi", "wa_mean", "macro_f1_mean", "pooled_ua"]
    table = wandb.Table(columns=columns, data=[
        [r["arm"], r["n_runs"], r["ua"]["mean"], r["ua"]["std"], *r["ua"]["ci95"], r["wa"]["mean"],
         r["macro_f1"]["mean"], r["pooled_ua"]] for r in summary["arms"]])
    images = {"summary_plot": wandb.Image(str(out_dir / "summary.png"))}
    figures = summary.get("figures") or {}
    if figures.get("learning_curves"):
        images["learning_curves"] = wandb.Image(figures["learning_curves"])
    for e in figures.get("synthetic_sets", []):
        if e["grid"]:
            images[f"real_vs_generated/fold{e['fold']}"] = wandb.Image(e["grid"])
    run.log({"summary": table, **images})
    run.finish()
