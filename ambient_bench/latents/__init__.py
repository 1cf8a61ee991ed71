"""Latent space: images encoded once by a VAE (the Stable Diffusion VAE, as EDM2 trains on ImageNet-512),
stored in shards on disk and streamed to training; decoded back to pixels for sampling and evaluation."""
