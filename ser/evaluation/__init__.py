"""Metrics and bootstrap CIs on one test set (metrics.py), many runs compared with paired tests
(aggregate.py), distances between sets of embeddings for synthetic data (quality.py), the figures
(plots.py) and evaluate.py's written report (report.py)."""
