"""Corpora, splits and the DataModule that serves cached spectrograms."""
