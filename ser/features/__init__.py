"""Audio -> log-mel spectrograms, cached on disk, and the transforms the models see."""
