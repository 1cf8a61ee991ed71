"""Augmentation parity: our AugmentPipe against EDM's training/augment.py on the same batches and seeds.

    PYTHONPATH=$PWD python benchmarks/parity/augmentation.py --edm PATH [--ambient-omni PATH]

PATH is a checkout of https://github.com/NVlabs/edm (imported from there at run time, never copied here);
with --ambient-omni, the official release's copy (pixel-diffusion/training/augment.py, which computes 2^x
as exp(x ln 2)) is compared too. Everything runs on CPU in about half a minute. Rows:
- labels and images of EDM's train.py recipe and of every geometric transform EDM has, same seed: EDM's
  pipe after torch.manual_seed(s), ours with torch.Generator().manual_seed(s); the random stream after the
  call must be the same too (same calls in the same order and amounts);
- images EDM resamples although nothing moved them (its identity round trip; we leave them as they are);
- the recipe's statistics at p = 0.12 over 20k draws against their analytic values;
- the RMS error of a 30° rotation of a band-limited image against the rotated function, both pipes.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from benchmarks.parity.peers import parse_peers, peer_import, print_rows

NEEDS = ("edm",)
# EDM's train.py recipe; xflip=1e8 makes the x-flip coin always land: every image draws a fair flip
RECIPE = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
EVERYTHING = dict(xflip=1, yflip=1, rotate_int=1, translate_int=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
P = 0.12
DRAWS = 20_000
# a sum of sinusoids up to 0.32 cycles/pixel: (amplitude, cycles/pixel in x, in y, phase)
WAVES = ((0.5, 0.10, 0.05, 0.0), (0.3, -0.20, 0.12, 1.0), (0.2, 0.25, -0.20, 0.5))


def _row(check: str, value: float | str, bound: float | None, note: str, ok: bool | None = None) -> dict:
    if ok is None:
        ok = bound is None or (isinstance(value, float) and value <= bound)
    return {"check": check, "value": value, "bound": bound, "ok": ok, "note": note}


def _both(theirs_cls, kwargs: dict, p: float, x: torch.Tensor, seed: int):
    """(their images, labels, next draws), (ours), from the same seed."""
    from ambient_bench.diffusion.augment import AugmentPipe

    torch.manual_seed(seed)
    y_t, l_t = theirs_cls(p=p, **kwargs)(x)
    after_t = torch.rand(16)
    g = torch.Generator().manual_seed(seed)
    y_o, l_o = AugmentPipe(p, **kwargs)(x, g)
    return (y_t, l_t, after_t), (y_o, l_o, torch.rand(16, generator=g))


def _same_draws(theirs_cls, kwargs: dict, p: float, x: torch.Tensor, what: str, bound: float = 1e-5,
                why: str = "") -> list[dict]:
    (y_t, l_t, after_t), (y_o, l_o, after_o) = _both(theirs_cls, kwargs, p, x, seed=7)
    n = f"{len(x)}×{x.shape[1]}×{x.shape[2]}×{x.shape[3]}, p {p:g}, seed 7"
    rows = [_row(f"{what}: max |Δlabels|", float((l_t - l_o).abs().max()), 0.0, f"{n}; {l_o.shape[1]} labels"),
            _row(f"{what}: random stream after the call", "same" if torch.equal(after_t, after_o) else "differs",
                 None, "the next 16 uniforms", ok=torch.equal(after_t, after_o))]
    geometric = [k for k in ("scale", "rotate_frac", "aniso", "translate_frac") if kwargs.get(k, 0) > 0]
    moved = torch.zeros(len(x), dtype=torch.bool)
    if geometric:  # the continuous transforms' labels come last: 1 + 2 + 2 + 2 of them
        width = sum({"scale": 1}.get(k, 2) for k in geometric)
        moved = l_o[:, -width:].ne(0).any(1)
    delta = (y_t - y_o).abs().amax((1, 2, 3))
    rows.append(_row(f"{what}: max |Δimages|, images both resample", float(delta[moved].max()) if moved.any() else 0.0,
                     bound, f"{int(moved.sum())} images{why}"))
    if geometric:
        rows.append(_row(f"{what}: max |Δimages|, no continuous transform drawn", float(delta[~moved].max()), None,
                         f"{int((~moved).sum())} images: EDM's identity round trip (it resamples them; we do not)"))
    else:
        rows.append(_row(f"{what}: max |Δimages|", float(delta.max()), 0.0, "exact index operations only"))
    return rows


def _statistics(theirs_cls) -> list[dict]:
    x = torch.randn(DRAWS, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    (_, l_t, _), (_, l_o, _) = _both(theirs_cls, RECIPE, P, x, seed=2)
    expected = {"mirrored": (0.5, 0.01), "y-flipped": (P / 2, 0.01),
                "all-zero labels": (0.5 * (1 - P / 2) * (1 - P) ** 4, 0.02)}
    rows = []
    for name, (value, tol) in expected.items():
        measure = {"mirrored": lambda lab: lab[:, 0] == 1, "y-flipped": lambda lab: lab[:, 1] == 1,
                   "all-zero labels": lambda lab: ~lab.ne(0).any(1)}[name]
        ours, theirs = (float(measure(lab).float().mean()) for lab in (l_o, l_t))
        rows.append(_row(f"recipe p {P:g}: {name} fraction, |ours − analytic|", abs(ours - value), tol,
                         f"ours {ours:.4f}, EDM {theirs:.4f}, analytic {value:.4f}; {DRAWS} draws, seed 2"))
    return rows


def _rotation_seed(target: float) -> tuple[int, float]:
    """A seed whose first uniform gives a rotate_frac angle nearest ``target`` (rotation the only transform)."""
    best = (0, math.inf)
    for seed in range(40_000):
        angle = float((torch.rand(1, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * math.pi)
        if abs(angle - target) < abs(best[1] - target):
            best = (seed, angle)
    return best


def _rotation_error(theirs_cls) -> list[dict]:
    size, radius = 64, 24
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    py, px = torch.meshgrid(c, c, indexing="ij")

    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(a * torch.cos(2 * math.pi * (fx * x + fy * y) + ph) for a, fx, fy, ph in WAVES)

    seed, angle = _rotation_seed(math.radians(30))
    (y_t, l_t, _), (y_o, l_o, _) = _both(theirs_cls, {"rotate_frac": 1}, 1.0, f(px, py).float()[None, None], seed)
    # EDM: output(p) = input(R(a) p), R(a) = [[cos, -sin], [sin, cos]] in pixels about the centre (y down)
    expected = f(math.cos(angle) * px - math.sin(angle) * py, math.sin(angle) * px + math.cos(angle) * py)
    disc = px ** 2 + py ** 2 <= radius ** 2
    rows = []
    for who, y, lab in (("ours", y_o, l_o), ("EDM", y_t, l_t)):
        assert math.isclose(float(lab[0, 1]), math.sin(angle), abs_tol=1e-6)
        rms = float((y[0, 0].double() - expected)[disc].pow(2).mean().sqrt())
        rows.append(_row(f"rotation {math.degrees(angle):.2f}°, band-limited 64×64: RMS error ({who})", rms, 0.05,
                         f"against the rotated function in the central disc (radius {radius}); signal RMS "
                         f"{float(expected[disc].pow(2).mean().sqrt()):.2f}; seed {seed}"))
    return rows


def run(peers: dict[str, Path]) -> list[dict]:
    edm = peer_import(peers["edm"], "training.augment").AugmentPipe
    x = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = _same_draws(edm, RECIPE, P, x, "EDM recipe")
    rows += _same_draws(edm, EVERYTHING, 0.5, x, "every geometric transform")
    rows += _statistics(edm)
    rows += _rotation_error(edm)
    if "ambient_omni" in peers:
        release = peer_import(peers["ambient_omni"] / "pixel-diffusion", "training.augment").AugmentPipe
        rows += _same_draws(release, RECIPE, P, x, "release's copy, recipe", 1e-4,
                            "; it computes 2^x as exp(x ln 2): scale factors an ulp apart move the sampling grid")
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
