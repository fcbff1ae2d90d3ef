"""Diffusion augmentation: a DDPM over log-mel spectrograms (diffusers UNet2DModel + schedulers)."""
