"""Metrics, confidence intervals, paired tests, aggregation of runs and plots."""
