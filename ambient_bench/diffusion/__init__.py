"""EDM-style diffusion: network, preconditioning, the ambient loss and the Heun sampler."""
