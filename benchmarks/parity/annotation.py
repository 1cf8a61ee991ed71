"""The classifier annotation (per-image σ_min from P(corrupted) curves) against the release's functions, on
synthetic curves (no network): the same probability curves and the same σ grid go into both.

Release: ``apply_ema`` (pixel-diffusion/training/training_loop.py: pandas ``ewm(span=32, adjust=False)``) and
``analyze_classifier_trajectory`` (ambient_utils.classifier: first index where 0.5 − p + ε > 0, else the grid's
last σ), both imported from the user's checkouts; the loop's inline glue (mean over the 4 trials, the grid read
back as float32 from sigmas.txt) is restated here. Ours: ``ambient_bench.annotation.sigma_min`` (``causal_ema``,
``first_crossing``; ε 0.05, span 32, 2048 levels). The grid is ours (log-normal quantiles): the release's is a
sorted seeded random draw, which is an annotator option, not part of this algorithm.

    python benchmarks/parity/annotation.py --ambient-omni PATH
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import (ambient_utils_package, failed_row, parse_peers, peer_import, print_rows, row,
                                     stub_modules)

NEEDS = ("ambient_omni",)
M, TRIALS, EPSILON, SPAN, GRID = 300, 4, 0.05, 32, 2048


def synthetic_curves(sigmas: np.ndarray, seed: int = 0) -> np.ndarray:
    """M × K × T noisy P(corrupted) curves: logistic drops at random σ and slopes, some never dropping,
    some dipping below the threshold early and rising again (non-monotone)."""
    rng = np.random.default_rng(seed)
    log_s = np.log(sigmas)[None, :, None]
    cross = rng.uniform(np.log(0.01), np.log(30.0), (M, 1, 1))
    slope = rng.uniform(1.0, 8.0, (M, 1, 1))
    curves = 1 / (1 + np.exp(-slope * (cross - log_s)))
    never = rng.random(M) < 0.1
    curves[never] = 0.9
    dip = rng.random(M) < 0.1
    curves[dip] = curves[dip] * (1 - 0.6 * np.exp(-((log_s + 2.0) ** 2) / 0.05))
    return np.clip(curves + rng.normal(0, 0.15, (M, len(sigmas), TRIALS)), 0, 1)


def run(peers: dict[str, Path]) -> list[dict]:
    from ambient_bench.annotation.sigma_min import causal_ema, first_crossing, lognormal_grid

    rows = []
    try:
        ambient_utils_package()
        analyze = __import__("ambient_utils.classifier", fromlist=["x"]).analyze_classifier_trajectory
        stub_modules("wandb", "psutil")
        apply_ema = peer_import(peers["ambient_omni"] / "pixel-diffusion", "training.training_loop").apply_ema
        sigmas = lognormal_grid(GRID)
        probs = synthetic_curves(sigmas)
        grid32 = torch.tensor(sigmas.tolist())  # the loop reads sigmas.txt into a float32 tensor
        theirs = np.array([float(analyze(torch.tensor(apply_ema(p.mean(axis=-1), window=SPAN)), grid32,
                                         epsilon=EPSILON)["first_confusion"]) for p in probs])
        ours = first_crossing(causal_ema(probs.mean(axis=-1), SPAN), sigmas, 0.5 + EPSILON)
        crossed = np.isfinite(ours)
        index_theirs = np.abs(np.log(theirs)[:, None] - np.log(sigmas)[None, :]).argmin(1)
        index_ours = np.where(crossed, np.searchsorted(sigmas, np.where(crossed, ours, 0)), -1)
        differ = float((index_theirs[crossed] != index_ours[crossed]).mean())
        rows.append(row("annotation σ_min, curves that cross: fraction on a different grid level", differ, 0.0,
                        f"{int(crossed.sum())} of {M} synthetic curves (×{TRIALS} trials, {GRID} levels) cross"))
        delta = float(np.abs(theirs[crossed] - ours[crossed]).max()) if crossed.any() else 0.0
        rows.append(row("annotation σ_min, curves that cross: max |Δσ_min|", delta, 1e-6 * float(sigmas.max()),
                        "the release's grid is float32 (sigmas.txt read into torch.tensor)"))
        top = theirs[~crossed]
        rows.append(row("annotation, curves that never cross (release: grid top; ours: dropped)",
                        f"{int((~crossed).sum())} curves", None,
                        f"release σ_min {np.unique(top.round(4)).tolist() or '–'} (grid max {sigmas.max():.4g}) "
                        "= trained only above it; ours drops them (inf) unless never_crossed: top") | {
                            "ok": bool(np.all(np.abs(top - sigmas.max()) <= 1e-6 * sigmas.max()))})
    except Exception as error:
        rows.append(failed_row("annotation", error))
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
