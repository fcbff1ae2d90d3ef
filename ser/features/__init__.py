"""Audio -> per-clip features, cached on disk (cache.py): log-mel spectrograms (mel.py), openSMILE
descriptors or functionals (smile.py), a frozen speech encoder's hidden layers (encoder.py); robust
loading (audio.py), waveform augmentation (augment.py) and the transforms the models see (transforms.py)."""
