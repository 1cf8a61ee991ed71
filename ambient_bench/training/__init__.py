"""Diffusion training: the sigma-first sample stream and the resumable training loop."""
