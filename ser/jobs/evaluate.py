"""The evaluate.py job: find runs, aggregate them into arms with CIs and paired tests, write the
summary files, and log the table and figures to the configured trackers (logger=wandb)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ser.config import check_evaluate_config
from ser.evaluation.aggregate import aggregate, latest_sweep
from ser.instantiators import instantiate_loggers
from ser.tracking import finish, log_report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    check_evaluate_config(cfg)
    runs = cfg.runs
    if runs is None:
        runs = [str(latest_sweep())]
    elif isinstance(runs, str):
        runs = [runs]
    runs = [str(r) for r in runs]
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(runs[0]) / "summary"
    baselines = OmegaConf.to_container(cfg.baselines) if cfg.baselines else []
    summary = aggregate(runs, out_dir, baselines=baselines, metric=cfg.metric,
                        classical=list(cfg.classical_augmentations or []))
    print((out_dir / "summary.md").read_text())
    print(f"wrote {out_dir}/summary.json, summary.md, summary.png")
    loggers = instantiate_loggers(cfg.logger, csv={"save_dir": str(out_dir)},
                                  wandb={"save_dir": str(out_dir), "job_type": "evaluate"})
    if loggers:
        _log_summary(loggers, summary, out_dir)
    return summary


def _log_summary(loggers: list, summary: dict, out_dir: Path) -> None:
    columns = ["arm", "runs", "ua_mean", "ua_std", "ua_ci_lo", "ua_ci_hi", "wa_mean", "macro_f1_mean", "pooled_ua"]
    rows = [[r["arm"], r["n_runs"], r["ua"]["mean"], r["ua"]["std"], *r["ua"]["ci95"], r["wa"]["mean"],
             r["macro_f1"]["mean"], r["pooled_ua"]] for r in summary["arms"]]
    images = {"summary_plot": out_dir / "summary.png"}
    figures = summary["figures"]
    if figures["learning_curves"]:
        images["learning_curves"] = Path(figures["learning_curves"])
    for e in figures["synthetic_sets"]:
        if e["grid"]:
            images[f"real_vs_generated/fold{e['fold']}_seed{e['generator_seed']}"] = Path(e["grid"])
    log_report(loggers, "summary", {}, images=images, tables={"arms": (columns, rows)})
    finish(loggers)
