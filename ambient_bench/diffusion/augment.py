"""Non-leaky geometric augmentation with augmentation labels, as EDM's ``AugmentPipe`` (our own implementation).

EDM (Karras et al. 2022, after ADA, Karras et al. 2020) augments each training image and feeds the
transform's parameters to the denoiser as labels, so a network queried with all-zero labels models the
un-augmented data. This module reproduces the semantics of NVlabs/edm ``training/augment.py`` (checked side
by side by ``benchmarks/parity/augmentation.py``): the same transforms, probabilities, label encodings and
order, the same random draws in the same order, and the same resampling.

Each transform with weight > 0 draws its parameters for every image, then a coin ``rand < weight * p``
decides, image by image, whether they are used (otherwise they are zeroed). A transform with weight 0 draws
nothing and adds no labels. In order (labels in brackets, concatenated in this order):

    xflip          a fair coin i in {0, 1}: mirror left-right when 1                      [i]
    yflip          a fair coin i in {0, 1}: mirror top-bottom when 1                      [i]
    rotate_int     i in {0, 1, 2, 3} uniform: i quarter turns (exact index operations)   [i in (1,2), i in (2,3)]
    translate_int  integer shift of up to translate_int_max of the size, reflected       [tx, ty as fractions
                   at the borders; one coin for both axes                                  of that maximum]
    scale          s = 2^(scale_std * w), w ~ N(0, 1)                                      [w]
    rotate_frac    angle a ~ U(-pi, pi) * rotate_frac_max                                 [cos a - 1, sin a]
    aniso          stretch 2^(aniso_std * w) along the axis at angle r, squeeze across;   [w cos r, w sin r]
                   w ~ N(0, 1), r ~ U(-pi, pi) with probability aniso_rotate_prob, else 0
                   (axis-aligned)
    translate_frac shift by (w0 * W, w1 * H) * translate_frac_std pixels, w ~ N(0, 1);    [w0, w1]
                   one coin for both axes

So the x-flip coin decides whether a flip is *drawn*; the flip itself is a fair coin. EDM's train.py sets
xflip=1e8, which makes that coin land for any p > 0: every image draws a fair flip (half are mirrored).
``AugmentPipe.edm_recipe(p)`` builds that recipe. Its labels are 9 numbers (LABEL_DIM). EDM's anisotropy
labels are kept as they are, quirk included: (w, r) and (-w, r + pi) get the same labels, yet one stretches
along the axis at angle r and the other across it.

Geometry (EDM's conventions): pixel coordinates about the image centre, x to the right, y down. The
forward map is scale, then rotation by a (counter-clockwise on screen for a > 0, the content turning
towards the top), then anisotropy, then translation (positive w0 moves content right, positive w1 down;
translate_int's ty moves content *up*, as EDM's does). The four continuous transforms are composed into one
matrix per image and resampled once: reflect padding by the margin the transformed corners need, 2x
upsampling with the sym6 wavelet low-pass filter, bilinear sampling, filtering and 2x downsampling with the
same filter. Flips, quarter turns and integer shifts are exact index operations.

One deliberate difference: EDM resamples every image of the batch when any continuous transform has
weight > 0, including images whose continuous parameters are all zero; the round trip changes those by at
most 1.8e-5 (measured on N(0, 1) 32x32 images with EDM's code; 2e-6 RMS). We leave them unresampled, so an
image whose labels are all zero is returned bit-identical (and the resampling work shrinks by the fraction
of such images, 0.60 at p = 0.12).

EDM's colour transforms (brightness, contrast, lumaflip, hue, saturation) are not implemented: no recipe
of EDM, of the paper, or of this harness uses them.

Randomness: ``pipe(images, generator)`` draws on the generator's device (pass a CPU generator) in float32
with EDM's calls (randint, rand, randn) in EDM's order and amounts, then moves the parameters to the images'
device, so CPU and CUDA runs agree, and ``torch.Generator().manual_seed(s)`` here draws exactly what EDM's
pipe draws after ``torch.manual_seed(s)`` on CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Labels of EDM's train.py recipe (AugmentPipe.edm_recipe): xflip, yflip, scale, rotation (2), aniso (2),
# translation (2). EDM's train.py sets the network's augment_dim to this.
LABEL_DIM = 9
# Version of what the pipe produces; enters the key of every stage that trains with augmentation.
# 1: the first pipe (every image mirrored, bilinear resampling); 2: EDM's semantics and resampling.
VERSION = 2

# Low-pass (scaling) filter of the Daubechies symlet with 6 vanishing moments, "sym6": published constants,
# as PyWavelets lists them (pywt.Wavelet("sym6").dec_lo; Daubechies, Ten Lectures on Wavelets, 1992, §8.1).
# Orthonormal: the taps sum to sqrt(2), their squares to 1, and shifts by an even offset are orthogonal
# (tests/test_augment.py checks all three), so 2x upsampling followed by 2x downsampling is the identity.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


def _mat(rows: list[list[torch.Tensor | float]], n: int) -> torch.Tensor:
    """A batch [n, 3, 3] from rows of per-image tensors [n] or numbers."""
    full = [[e if isinstance(e, torch.Tensor) else torch.full((n,), float(e)) for e in row] for row in rows]
    return torch.stack([torch.stack(row, -1) for row in full], -2)


def _rotation(a: torch.Tensor) -> torch.Tensor:
    c, s = a.cos(), a.sin()
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], len(a))


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], len(sx))


def _shift(tx: float | torch.Tensor, ty: float | torch.Tensor, n: int = 1) -> torch.Tensor:
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n)


class _Draws:
    """EDM's random calls on ``generator``'s device: float32 uniforms and normals, int64 integers."""

    def __init__(self, generator: torch.Generator, n: int) -> None:
        self.generator, self.n = generator, n

    def rand(self, rows: int = 1) -> torch.Tensor:
        return torch.rand(rows, self.n, generator=self.generator, device=self.generator.device,
                          dtype=torch.float32).cpu().squeeze(0)

    def randn(self, rows: int = 1) -> torch.Tensor:
        return torch.randn(rows, self.n, generator=self.generator, device=self.generator.device,
                           dtype=torch.float32).cpu().squeeze(0)

    def randint(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.n,), generator=self.generator, device=self.generator.device).cpu()


class AugmentPipe:
    """``images, labels = pipe(images, generator)``, as EDM's AugmentPipe (see the module docstring).

    Every weight defaults to 0 (the transform off), as in EDM; ``edm_recipe`` builds EDM's training recipe.
    """

    def __init__(self, p: float, *, xflip: float = 0, yflip: float = 0, rotate_int: float = 0,
                 translate_int: float = 0, translate_int_max: float = 0.125, scale: float = 0,
                 rotate_frac: float = 0, aniso: float = 0, translate_frac: float = 0, scale_std: float = 0.2,
                 rotate_frac_max: float = 1, aniso_std: float = 0.2, aniso_rotate_prob: float = 0.5,
                 translate_frac_std: float = 0.125) -> None:
        self.p = float(p)
        self.xflip, self.yflip, self.rotate_int = float(xflip), float(yflip), float(rotate_int)
        self.translate_int, self.translate_int_max = float(translate_int), float(translate_int_max)
        self.scale, self.rotate_frac, self.aniso = float(scale), float(rotate_frac), float(aniso)
        self.translate_frac = float(translate_frac)
        self.scale_std, self.rotate_frac_max = float(scale_std), float(rotate_frac_max)
        self.aniso_std = float(aniso_std)
        self.aniso_rotate_prob, self.translate_frac_std = float(aniso_rotate_prob), float(translate_frac_std)

    @classmethod
    def edm_recipe(cls, p: float) -> "AugmentPipe":
        """EDM's train.py recipe (``--augment`` p: 0.12 for CIFAR-10, 0.15 at 64 px in EDM's and the paper's
        configurations), also what the ambient-omni release's train.py builds for diffusion models and
        noise classifiers."""
        # xflip=1e8: the x-flip coin (rand < xflip * p) always lands, so every image draws a fair flip
        # (half are mirrored); it does not mean "always mirror".
        return cls(p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)

    @property
    def label_dim(self) -> int:
        """How many labels a call returns (EDM: only transforms with weight > 0 add labels)."""
        weights = [(self.xflip, 1), (self.yflip, 1), (self.rotate_int, 2), (self.translate_int, 2),
                   (self.scale, 1), (self.rotate_frac, 2), (self.aniso, 2), (self.translate_frac, 2)]
        return sum(dim for weight, dim in weights if weight > 0)

    def _gate(self, value: torch.Tensor, weight: float, draws: _Draws) -> torch.Tensor:
        """``value`` where this image's coin lands (probability weight * p), else 0."""
        return torch.where(draws.rand() < weight * self.p, value, torch.zeros_like(value))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = images.shape
        draws, labels, out = _Draws(generator, n), [], images
        on = lambda mask: mask.to(images.device).view(n, 1, 1, 1)  # noqa: E731

        # Exact index operations: a flip or quarter turn is a fair draw inside its coin.
        if self.xflip > 0:
            i = draws.randint(2)
            i = self._gate(i, self.xflip, draws)
            out = torch.where(on(i == 1), out.flip(3), out)
            labels.append(i)
        if self.yflip > 0:
            i = draws.randint(2)
            i = self._gate(i, self.yflip, draws)
            out = torch.where(on(i == 1), out.flip(2), out)
            labels.append(i)
        if self.rotate_int > 0:
            if h != w:
                raise ValueError(f"rotate_int needs square images, got {h}x{w}")
            i = draws.randint(4)
            i = self._gate(i, self.rotate_int, draws)
            # i quarter turns: 1 = x-flip then transpose, 2 = both flips, 3 = y-flip then transpose
            out = torch.where(on((i == 1) | (i == 2)), out.flip(3), out)
            out = torch.where(on((i == 2) | (i == 3)), out.flip(2), out)
            out = torch.where(on((i == 1) | (i == 3)), out.transpose(2, 3), out)
            labels += [(i == 1) | (i == 2), (i == 2) | (i == 3)]
        if self.translate_int > 0:
            u = draws.rand(2) * 2 - 1
            u = torch.where(draws.rand() < self.translate_int * self.p, u, torch.zeros_like(u))
            tx = (u[0] * (w * self.translate_int_max)).round().long()
            ty = (u[1] * (h * self.translate_int_max)).round().long()
            out = _shift_reflected(out, tx.to(images.device), ty.to(images.device))
            labels += [tx / (w * self.translate_int_max), ty / (h * self.translate_int_max)]

        # Continuous transforms: one output -> input matrix per image, in pixels about the centre.
        to_input, moved = torch.eye(3).expand(n, 3, 3), torch.zeros(n, dtype=torch.bool)
        if self.scale > 0:
            z = draws.randn()
            z = self._gate(z, self.scale, draws)
            s = (z * self.scale_std).exp2()
            to_input, moved = to_input @ _scaling(1 / s, 1 / s), moved | (z != 0)
            labels.append(z)
        if self.rotate_frac > 0:
            a = (draws.rand() * 2 - 1) * (math.pi * self.rotate_frac_max)
            a = self._gate(a, self.rotate_frac, draws)
            to_input, moved = to_input @ _rotation(a), moved | (a != 0)
            labels += [a.cos() - 1, a.sin()]
        if self.aniso > 0:
            z, r = draws.randn(), (draws.rand() * 2 - 1) * math.pi
            z = self._gate(z, self.aniso, draws)
            r = torch.where(draws.rand() < self.aniso_rotate_prob, r, torch.zeros_like(r))
            s = (z * self.aniso_std).exp2()
            # 1 / (1 / s) rather than s, and every product below associated as EDM's, keep the sampling grid
            # equal to EDM's to the last bit (a 1-ulp change in the grid moves outputs by up to 3e-5)
            squeeze = _scaling(1 / s, 1 / (1 / s))
            to_input, moved = to_input @ _rotation(-r) @ squeeze @ _rotation(r), moved | (z != 0)
            labels += [z * r.cos(), z * r.sin()]
        if self.translate_frac > 0:
            z = draws.randn(2)
            z = torch.where(draws.rand() < self.translate_frac * self.p, z, torch.zeros_like(z))
            step = (z[0] * (w * self.translate_frac_std), z[1] * (h * self.translate_frac_std))  # pixels
            to_input = to_input @ _shift(-step[0], -step[1], n)
            moved = moved | (z != 0).any(0)
            labels += [z[0], z[1]]

        if self.scale > 0 or self.rotate_frac > 0 or self.aniso > 0 or self.translate_frac > 0:
            # images whose continuous parameters are all zero keep their pixels (see the module docstring)
            if bool(moved.any()):
                at = moved.nonzero().squeeze(1)
                out = out.clone()
                out[at.to(images.device)] = resample(out[at.to(images.device)], to_input[at])

        table = torch.stack([x.to(torch.float32) for x in labels], 1) if labels else torch.zeros(n, 0)
        return out, table.to(images.device)


def _shift_reflected(images: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Integer shift per image (content right by tx, up by ty), the borders mirrored (edge pixel not repeated)."""
    n, c, h, w = images.shape
    dev = images.device

    def mirrored(i: torch.Tensor, size: int) -> torch.Tensor:  # index folded into [0, size) by reflection
        return size - 1 - (size - 1 - i % (2 * size - 2)).abs()

    cols = mirrored(torch.arange(w, device=dev) - tx[:, None], w)  # [n, w]
    rows = mirrored(torch.arange(h, device=dev) + ty[:, None], h)  # [n, h]
    return images[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def resample(images: torch.Tensor, to_input: torch.Tensor) -> torch.Tensor:
    """``images`` [n, c, h, w] warped by the output -> input maps ``to_input`` [n, 3, 3] (pixel coordinates
    about the centre): reflect padding, 2x upsampling with the sym6 low-pass, bilinear sampling, sym6
    low-pass and 2x downsampling (EDM's scheme)."""
    n, c, h, w = images.shape
    work = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    taps = torch.tensor(SYM6, dtype=torch.float32)
    half = len(SYM6) // 4  # the filter's reach, in pixels at the original resolution
    cx, cy = (w - 1) / 2, (h - 1) / 2

    # Margin: how far beyond each side the sampled corners reach, plus twice the filter's reach.
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float32)
    xy = (to_input.float() @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [2, n * 4]
    reach = torch.cat([-xy, xy]).amax(1) + torch.tensor([2 * half - cx, 2 * half - cy] * 2)
    reach = torch.minimum(reach.clamp(min=0), torch.tensor([w - 1, h - 1] * 2, dtype=torch.float32))
    left, top, right, bottom = (int(v) for v in reach.ceil())
    x = F.pad(images.to(work), [left, right, top, bottom], mode="reflect")
    m = _shift((left - right) / 2, (top - bottom) / 2) @ to_input.float()  # centre of the padded image

    x = _upsample2x(x, taps.to(device=x.device, dtype=work))
    # in the upsampled image: coordinates doubled, and its centre sits half a (new) pixel from the old one
    m = _scaling(torch.tensor([2.0]), torch.tensor([2.0])) @ m @ _scaling(torch.tensor([0.5]), torch.tensor([0.5]))
    m = _shift(-0.5, -0.5) @ m @ _shift(0.5, 0.5)

    # affine_grid works in [-1, 1] units of each image's extent (align_corners=False)
    out_h, out_w = (h + 2 * half) * 2, (w + 2 * half) * 2
    in_h, in_w = x.shape[2], x.shape[3]
    m = _scaling(torch.tensor([2 / in_w]), torch.tensor([2 / in_h])) @ m
    m = m @ _scaling(1 / torch.tensor([2 / out_w]), 1 / torch.tensor([2 / out_h]))
    grid = F.affine_grid(m[:, :2, :].to(device=x.device, dtype=work), [n, c, out_h, out_w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    x = _downsample2x(x, taps.to(device=x.device, dtype=work))[:, :, half:-half, half:-half]
    return x.to(images.dtype)


def _filter(x: torch.Tensor, taps: torch.Tensor, dim: int, stride: int, pad: int) -> torch.Tensor:
    """Correlate every channel with ``taps`` along ``dim`` (2 = rows, 3 = columns)."""
    c = x.shape[1]
    shape = (c, 1, len(taps), 1) if dim == 2 else (c, 1, 1, len(taps))
    strides = (stride, 1) if dim == 2 else (1, stride)
    padding = (pad, 0) if dim == 2 else (0, pad)
    return F.conv2d(x, taps.reshape(1, 1, -1).expand(c, 1, -1).reshape(shape), stride=strides, padding=padding,
                    groups=c)


def _upsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Zeros between samples, then convolution with ``taps``: columns first, then rows."""
    for dim in (3, 2):
        x = torch.stack([x, torch.zeros_like(x)], dim + 1).flatten(dim, dim + 1)
        x = x.narrow(dim, 0, x.shape[dim] - 1)
        x = _filter(x, taps.flip(0), dim, 1, (len(taps) + 1) // 2)
    return x


def _downsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlation with ``taps`` keeping every second sample: columns first, then rows."""
    for dim in (3, 2):
        x = _filter(x, taps, dim, 2, (len(taps) - 1) // 2)
    return x
