"""The jobs the entry points run: train.py -> train.py here, generate.py -> generate.py,
evaluate.py -> evaluate.py; resume.py lets a sweep rerun into its folder skip complete runs.

A job reads a composed config and orchestrates the layers below it (models, diffusion, data,
features, evaluation helpers); nothing below a job imports a job.
"""
