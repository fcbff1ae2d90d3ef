"""Diffusion augmentation: a fold's generator of log-mel spectrograms (diffusers UNet2DModel and
schedulers; in a latent recipe, over an AutoencoderKL's latents) and what runs do with it.

Where things are, in pipeline order:
- image_space.py: log-mel dB <-> the [-1, 1] images a generator models.
- autoencoder.py, ddpm.py, callbacks.py, training.py: train a fold's generator (Lightning),
  resumably, on that fold's training speakers only; provenance.py: what it records about itself
  and the fold-safety checks; generator.py: the trained generator on disk (save/load, sample, edit).
- sampling.py, synthetic_set.py, listen.py: sample a synthetic set or SDEdit real clips, its file
  format, and Griffin-Lim WAVs to listen to.
- pool.py: a fold's generator and sample pool made on demand for train.py (file-locked).
- mixing.py, selection.py, sdedit.py: synthetic or edited spectrograms as extra training data for the
  log-mel networks (aug=ddpm, the filter, aug=sdedit); encoded.py, encoder_mixing.py: the same for
  the linear probes on a frozen speech encoder (voiced or on Whisper's own input, then encoded).
- assess.py, assess_encoded.py: generate.py mode=quality, how a synthetic set measures against real
  clips (KID, Frechet distance, precision/recall, a real classifier's UA on it).
"""
