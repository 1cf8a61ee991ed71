"""Procedural image generators, used as out-of-distribution data: no files, no download.

Each image i is a pure function of ``numpy_rng("<generator>", i)`` and the parameters, so
image i does not depend on `count`. Scenes live in continuous [0, 1]² coordinates and are
sampled at pixel centres: `resolution` changes the sampling, not what is drawn (dead leaves
also stops drawing when every pixel is covered, so the disk count depends on it).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ambient_bench.components import Dataset, ImageSet
from ambient_bench.data.images import REC601, to_uint8
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset
from ambient_bench.seeding import numpy_rng



def _common_params() -> dict[str, Param]:
    return {
        "resolution": Param(32, "image size in pixels (square)", kind=int, ge=8),
        "count": Param(2000, "number of images", kind=int, ge=1),
        "channels": Param(3, "3 = RGB, 1 = greyscale (luma of the RGB image)", kind=int, choices=(1, 3)),
    }


def _pixel_centres(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(resolution) + 0.5) / resolution
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return x, y


def _to_image_set(images: list[np.ndarray], channels: int) -> ImageSet:
    """float H×W×3 in [0, 1] per image → uint8 N×C×H×W (greyscale through Rec. 601 luma)."""
    x = np.stack(images)
    if channels == 1:
        x = (x @ np.array(REC601))[..., None]
    return ImageSet(images=to_uint8(torch.from_numpy(x).permute(0, 3, 1, 2).float().clamp(0, 1)))


def dead_leaves_image(rng: np.random.Generator, resolution: int, rmin: float, rmax: float,
                      max_disks: int) -> np.ndarray:
    """One dead-leaves image, float H×W×3 in [0, 1].

    Disks are drawn front to back: each pixel takes the colour of the first disk that covers
    it, and only still-uncovered pixels are tested against later disks. That is the same
    picture as infinitely many disks stacked back to front, but it stops as soon as the image
    is covered, and the work shrinks with the uncovered area. Disks come in chunks (64, 128,
    ...) so that numpy tests many disks against many pixels in one operation.
    """
    x, y = _pixel_centres(resolution)
    px, py = x.ravel(), y.ravel()
    colour = np.zeros((px.size, 3))
    todo = np.arange(px.size)  # pixels no disk has covered yet
    # Radii with density ∝ r^-3 on [rmin, rmax] by inverting the CDF (a^-2 - r^-2)/(a^-2 - b^-2).
    a2, b2 = rmin ** -2, rmax ** -2
    drawn, chunk = 0, 64
    while todo.size and drawn < max_disks:
        n = min(chunk, max_disks - drawn)
        centre = rng.random((n, 2))
        radius = (a2 - rng.random(n) * (a2 - b2)) ** -0.5
        colours = rng.random((n, 3))
        dx = px[todo][None, :] - centre[:, :1]
        dy = py[todo][None, :] - centre[:, 1:]
        hit = dx * dx + dy * dy <= (radius * radius)[:, None]  # disks × uncovered pixels
        covered = hit.any(axis=0)
        colour[todo[covered]] = colours[hit[:, covered].argmax(axis=0)]  # argmax: first (front) hit
        todo = todo[~covered]
        drawn, chunk = drawn + n, min(2 * chunk, 4096)
    if todo.size:  # only with a tiny rmin: the pixels no disk reached show a background colour
        colour[todo] = rng.random(3)
    return colour.reshape(resolution, resolution, 3)


@register_dataset("dead_leaves")
class DeadLeaves(Dataset):
    """Dead-leaves images: occluding disks of random colour, radii ∝ r^-3, until covered.

    The r^-3 size density is scale invariant, which gives these images the power-law
    spectrum of natural images without their content (a classic stand-in for natural
    statistics). Disk centres are uniform over the image; radii lie in [rmin, rmax] in units
    of the image side; colours are uniform in the RGB cube. At most `max_disks` disks per
    image (pixels still uncovered then get one background colour). Image i comes from
    ``numpy_rng("dead-leaves", i)``. No labels.
    """

    version = 1
    needs_files = False
    params = {
        **_common_params(),
        "rmin": Param(0.03, "smallest disk radius, as a fraction of the image side", gt=0),
        "rmax": Param(0.5, "largest disk radius, as a fraction of the image side", gt=0),
        "max_disks": Param(100_000, "cap on disks per image", kind=int, ge=1),
    }
    test_params = {"resolution": 16, "count": 8}

    def check(self) -> None:
        if self.p.rmin >= self.p.rmax:
            raise UserError(f"dead_leaves: rmin ({self.p.rmin}) must be smaller than rmax ({self.p.rmax})")

    def count(self) -> int | None:
        self.check()
        return self.p.count

    def load(self) -> ImageSet:
        self.check()
        images = [dead_leaves_image(numpy_rng("dead-leaves", i), self.p.resolution, self.p.rmin, self.p.rmax,
                                    self.p.max_disks) for i in range(self.p.count)]
        return _to_image_set(images, self.p.channels)


def _sinusoids(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, count: int,
               low: float, high: float) -> np.ndarray:
    """Sum of ``count`` plane waves, random directions, frequencies log-uniform in
    [low, high] cycles per image side, random phases; normalised to [-1, 1]."""
    angle = rng.uniform(0, 2 * math.pi, count)
    freq = np.exp(rng.uniform(math.log(low), math.log(high), count))
    phase = rng.uniform(0, 2 * math.pi, count)
    weight = rng.uniform(0.5, 1.0, count)
    kx, ky = (2 * math.pi * freq * np.cos(angle)), (2 * math.pi * freq * np.sin(angle))
    waves = np.sin(x[..., None] * kx + y[..., None] * ky + phase)
    return (waves * weight).sum(-1) / weight.sum()


def procedural_texture_image(rng: np.random.Generator, resolution: int) -> np.ndarray:
    """One shader-like texture, float H×W×3 in [0, 1]: warped sinusoids through a cosine palette."""
    x, y = _pixel_centres(resolution)
    # Domain warping: displace the coordinates by smooth random fields before the main pattern,
    # which bends straight stripes into marbled, swirling bands.
    strength = rng.uniform(0.05, 0.3)
    wx = x + strength * _sinusoids(rng, x, y, 3, 0.5, 3.0)
    wy = y + strength * _sinusoids(rng, x, y, 3, 0.5, 3.0)
    t = 0.5 + 0.5 * _sinusoids(rng, wx, wy, 4, 1.0, 6.0)
    # Cosine palette (as in shader art): colour(t) = a + b·cos(2π(c·t + d)) per channel.
    a = rng.uniform(0.3, 0.7, 3)
    b = rng.uniform(0.2, 0.5, 3)
    c = rng.uniform(0.5, 1.5, 3)
    d = rng.uniform(0.0, 1.0, 3)
    return np.clip(a + b * np.cos(2 * math.pi * (c * t[..., None] + d)), 0.0, 1.0)


@register_dataset("procedural_texture")
class ProceduralTexture(Dataset):
    """Shader-like textures: domain-warped sums of sinusoids coloured by a cosine palette.

    Smooth, periodic-looking bands in saturated colours: clearly not natural images. Image i
    comes from ``numpy_rng("procedural-texture", i)``: warp strength 0.05..0.3 of the side,
    3 + 3 warp waves at 0.5..3 cycles, 4 pattern waves at 1..6 cycles per side, palette
    a ∈ [0.3, 0.7], b ∈ [0.2, 0.5], c ∈ [0.5, 1.5], d ∈ [0, 1] per channel. No labels.
    """

    version = 1
    needs_files = False
    params = _common_params()
    test_params = {"resolution": 16, "count": 8}

    def count(self) -> int | None:
        return self.p.count

    def load(self) -> ImageSet:
        images = [procedural_texture_image(numpy_rng("procedural-texture", i), self.p.resolution)
                  for i in range(self.p.count)]
        return _to_image_set(images, self.p.channels)
