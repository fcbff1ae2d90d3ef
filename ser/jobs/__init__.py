"""The jobs the entry points run: train.py -> train, generate.py -> generate, evaluate.py -> evaluate.

A job reads a composed config and orchestrates the layers below it (models, diffusion, data,
features, evaluation helpers); nothing below a job imports a job.
"""
