"""Corpora (corpora.py, the built-in synthetic one in synthetic.py, download.py), speaker-independent
splits (splits.py), configs -> clips, features and split (build.py), and the DataModule (datamodule.py)."""
