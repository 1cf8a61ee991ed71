"""The training losses per sample against the peers' code on the same batch, σ draws and noise.

- The release's ``AmbientEDMLoss`` (pixel-diffusion/training/loss.py) against our ``ambient`` objective
  (the paper's loss, σ_tn = σ_min above σ_min) with the same σ_tn given to both.
- The release as shipped: its training loop passes σ_tn = min(σ_min, σ_max) = 0 for every sample (its
  annotators write σ_max = 0; notes §5.2), i.e. EDM's loss toward the stored (corrupted) image. Ours for
  that variant is the ``ambient_release`` objective where this checkout has it, else ``edm`` (the same loss).
- EDM's ``EDMLoss`` (training/loss.py) against our ``edm`` objective, σ drawn by EDM's code.

The release's loss draws its noise with ``torch.randn_like``; we seed torch's generator before it and draw
ours with the same seed. Its loop builds x_tn = x0 + σ_tn·Z (training_loop.py:287) inline: we build x_tn that
way for it. One shared network: EDM's DDPM++ at a CPU size (random weights), called by both.

    python benchmarks/parity/loss.py --edm PATH --ambient-omni PATH
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import ambient_utils_package, failed_row, parse_peers, peer_import, print_rows, row

NEEDS = ("edm", "ambient_omni")
BOUND = 1e-6
N = 16


def _batch(seed: int = 7):
    from benchmarks.parity._shared import SMALL_RES

    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(N, 3, SMALL_RES, SMALL_RES, generator=g) * 2 - 1)
    z = torch.randn(x0.shape, generator=g)
    sigma = (torch.randn(N, generator=g, dtype=torch.float64) * 1.2 - 1.2).exp()
    sigma_min = torch.where(torch.arange(N) % 2 == 0, torch.zeros(N, dtype=torch.float64),
                            sigma * (0.2 + 0.75 * torch.rand(N, generator=g, dtype=torch.float64)))
    return x0, z, sigma, sigma_min


def _relative(theirs: torch.Tensor, ours: torch.Tensor) -> float:
    return float(((theirs.double() - ours.double()).abs() / theirs.double().abs()).max())


def _objective(name: str):
    from ambient_bench.registry import OBJECTIVES

    return OBJECTIVES.get(name).build_from({})


def run(peers: dict[str, Path]) -> list[dict]:
    from ambient_bench.components import TrainBatch
    from ambient_bench.diffusion.loss import annotation_noise
    from ambient_bench.registry import OBJECTIVES

    from benchmarks.parity._shared import small_ddpmpp_pair
    from benchmarks.parity.peers import stub_modules

    rows = []
    theirs_net, _ = small_ddpmpp_pair(peers["edm"])
    denoiser = lambda x, s: theirs_net(x, s)  # noqa: E731  (ours calls D(x, σ[N]); the release D(x, σ[N,1,1,1], labels))
    x0, z, sigma, sigma_min = _batch()
    try:
        ambient_utils_package()
        stub_modules("wandb", "psutil")
        release = peer_import(peers["ambient_omni"] / "pixel-diffusion", "training.loss")
        release_loss = release.AmbientEDMLoss()
        names = OBJECTIVES.names()
        variants = [("paper: σ_tn = σ_min above σ_min", annotation_noise(sigma, sigma_min), "ambient"),
                    ("release as shipped: σ_tn = 0", torch.zeros(N, dtype=torch.float64),
                     "ambient_release" if "ambient_release" in names else "edm")]
        for what, sigma_tn, ours_name in variants:
            sn = sigma_tn.float()
            torch.manual_seed(11)
            with torch.no_grad():
                loss_theirs, *_ = release_loss(theirs_net, x0 + sn.reshape(-1, 1, 1, 1) * z, sn, sigma.float())
            torch.manual_seed(11)
            eps = torch.randn_like(x0)
            batch = TrainBatch(x0=x0, z=z, sigma=sigma, sigma_min=sigma_min if "paper" in what
                               else torch.zeros(N, dtype=torch.float64), eps=eps)
            with torch.no_grad():
                loss_ours = _objective(ours_name).loss(denoiser, batch)
            rows.append(row(f"ambient loss per sample, {what}: release AmbientEDMLoss vs our '{ours_name}'",
                            _relative(loss_theirs.flatten(1).sum(1), loss_ours), BOUND,
                            f"max relative difference over {N} samples (half clean, σ_min 0.2-0.95·σ), float32"))
    except Exception as error:
        rows.append(failed_row("ambient loss (release)", error))
    try:
        edm_loss = peer_import(peers["edm"], "training.loss").EDMLoss()
        torch.manual_seed(13)
        with torch.no_grad():
            loss_theirs = edm_loss(theirs_net, x0)
        torch.manual_seed(13)  # EDMLoss draws σ's normal first, then the noise
        sigma_edm = (torch.randn(N, 1, 1, 1) * 1.2 - 1.2).exp().flatten().double()
        eps = torch.randn_like(x0)
        batch = TrainBatch(x0=x0, z=z, sigma=sigma_edm, sigma_min=torch.zeros(N, dtype=torch.float64), eps=eps)
        with torch.no_grad():
            loss_ours = _objective("edm").loss(denoiser, batch)
        rows.append(row("EDM loss per sample: EDM's EDMLoss vs our 'edm'", _relative(loss_theirs.flatten(1).sum(1),
                        loss_ours), BOUND, f"max relative difference over {N} samples, σ and noise drawn by EDM"))
    except Exception as error:
        rows.append(failed_row("EDM loss", error))
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
