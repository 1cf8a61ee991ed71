"""EDM's Heun sampler (generate.py ``edm_sampler``, 18 steps, deterministic: S_churn 0) against ours
(``ambient_bench.diffusion.sampler.heun_sample``) from the same initial noise: max |Δx| of the samples.

Three pairings: one closed-form denoiser (Gaussian data, σ_data 0.5) in both samplers; EDM's DDPM++ network
(CPU size, random weights) in both samplers; and end to end, EDM's sampler with EDM's network against ours
with ours (the same weights, transferred).

    python benchmarks/parity/sampler.py --edm PATH
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import failed_row, parse_peers, peer_import, print_rows, row

NEEDS = ("edm",)
BOUND = 1e-5


class GaussianDenoiser(torch.nn.Module):
    """E[x0 | x] for x0 ~ N(0, σ_data² I): x·σ_data²/(σ² + σ_data²), with the attributes EDM's sampler reads."""

    sigma_min, sigma_max, label_dim = 0.0, float("inf"), 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels=None, **_) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return (x * 0.25 / (sigma ** 2 + 0.25)).to(torch.float32)

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


def run(peers: dict[str, Path]) -> list[dict]:
    from ambient_bench.diffusion.sampler import heun_sample

    from benchmarks.parity._shared import SMALL_RES, small_ddpmpp_pair

    rows = []
    try:
        generate = peer_import(peers["edm"], "generate")
        theirs, ours = small_ddpmpp_pair(peers["edm"])
        latents = torch.randn(4, 3, SMALL_RES, SMALL_RES, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            for what, net_theirs, net_ours in (
                    ("closed-form Gaussian denoiser in both", GaussianDenoiser(), GaussianDenoiser()),
                    ("EDM's DDPM++ (CPU size) in both", theirs, theirs),
                    ("end to end: EDM sampler+network vs ours+ours (weights transferred)", theirs, ours)):
                x_theirs = generate.edm_sampler(net_theirs, latents, num_steps=18)
                x_ours = heun_sample(lambda x, s, net=net_ours: net(x, s), latents, num_steps=18)
                diff = float((x_theirs.float() - x_ours.float()).abs().max())
                rows.append(row(f"Heun 18 steps (35 NFE), {what}: max |Δx|", diff, BOUND,
                                f"4 samples 3×{SMALL_RES}²; sample range ±{float(x_theirs.abs().max()):.2g}"))
    except Exception as error:
        rows.append(failed_row("Heun sampler", error))
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
