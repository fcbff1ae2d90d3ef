"""Diffusion augmentation: a DDPM over log-mel spectrograms (a diffusers UNet2DModel or ser's MelWaveNet, diffusers schedulers)."""
