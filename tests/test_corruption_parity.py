"""Parity and behaviour of the jpeg, motion blur, noise, mask and resampling corruptions.

Tolerances: 0 for JPEG (same uint8 codec path), 1e-6 for float re-implementations,
a few percent for statistics of random draws (thousands of samples).
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ambient_bench import CORRUPTIONS
from ambient_bench.corruptions.motion_blur import SEVERITIES, motion_blur_images
from ambient_bench.seeding import numpy_rng

OURS = ["jpeg", "motion_blur", "gaussian_noise", "pixel_mask", "box_mask", "pixelate", "downsample"]


def rngs(n: int, seed: int = 0) -> list[np.random.Generator]:
    return [numpy_rng("parity", seed, i) for i in range(n)]


def quantised(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random images that came from uint8, as the harness feeds corruptions."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g).float() / 255


def smooth_images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random images with structure at all scales (a blurred noise field plus fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, c, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    return (0.8 * coarse + 0.2 * torch.rand(n, c, size, size, generator=g)).clamp(0, 1)


# ---------------------------------------------------------------- jpeg

def pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("quality", [15, 90])
def test_jpeg_equals_direct_pil_roundtrip(channels, quality):
    x = smooth_images(3, channels, 32)
    out = CORRUPTIONS.build({"name": "jpeg", "quality": quality}).apply(x, rngs(3))
    pixels = np.floor(x.numpy() * 255 + 0.5).astype(np.uint8)
    for n in range(3):
        image = pixels[n].transpose(1, 2, 0) if channels == 3 else pixels[n, 0]  # RGB or mode "L"
        expected = pil_jpeg(image, quality).reshape(32, 32, channels).transpose(2, 0, 1) / 255.0
        np.testing.assert_array_equal(out[n].numpy(), expected.astype(np.float32))


def test_jpeg_lower_quality_is_further_from_input():
    x = smooth_images(4, 3, 32, seed=1)
    error = {q: (CORRUPTIONS.build({"name": "jpeg", "quality": q}).apply(x, rngs(4)) - x).pow(2).mean().item()
             for q in (15, 90)}
    assert error[15] > 3 * error[90] > 0


# ---------------------------------------------------------------- motion blur

def edge_shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """imagecorruptions' shift(): content moves by (+dy, +dx); the vacated border repeats the edge."""
    h, w = image.shape
    padded = np.pad(image, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    return padded[abs(dy) - dy:abs(dy) - dy + h, abs(dx) - dx:abs(dx) - dx + w]


def reference_motion_blur(image: np.ndarray, angle: float, radius: int, sigma: float) -> np.ndarray:
    """imagecorruptions' _motion_blur on one H×W plane, tap by tap, in float64."""
    width = 2 * radius + 1
    g = np.array([math.exp(-i * i / (2 * sigma * sigma)) for i in range(width)])
    g /= g.sum()
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(width):
        # the package shifts the image by minus the rounded offset along the angle
        dy = -math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        dx = -math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        if abs(dy) >= image.shape[0] or abs(dx) >= image.shape[1]:
            break  # the package stops once the motion leaves the image, without renormalising
        out += g[i] * edge_shift(image.astype(np.float64), dx, dy)
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("severity,size", [(3, 32), (1, 20), (5, 24)])
def test_motion_blur_matches_reference(severity, size):
    x = quantised(3, 3, size, size + 3, seed=severity)
    blur = CORRUPTIONS.build({"name": "motion_blur", "severity": severity})
    out = blur.apply(x, rngs(3))
    radius, sigma = SEVERITIES[severity - 1]
    for n in range(3):
        angle = rngs(3)[n].uniform(-45, 45)  # one draw per image from its own generator
        for c in range(3):
            expected = reference_motion_blur(x[n, c].numpy(), angle, radius, sigma)
            np.testing.assert_allclose(out[n, c].numpy(), expected, rtol=0, atol=1e-6)


def test_motion_blur_sign_convention():
    # θ = 0: out[x] = Σ g(i) in[x + i], so a point at column 30 leaves its trail to the left
    radius, sigma = SEVERITIES[0]
    g = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    x = torch.zeros(1, 1, 5, 40)
    x[0, 0, 2, 30] = 1
    out = motion_blur_images(x, [0.0], radius, sigma)[0, 0]
    np.testing.assert_allclose(out[2, 30 - 2 * radius:31].numpy(), g[::-1], atol=1e-7)
    assert out.sum() == pytest.approx(1.0, abs=1e-6) and out[2, 31:].abs().max() == 0
    # θ = ±30°: the trail runs left and up (θ > 0, smaller rows) or down (θ < 0)
    x = torch.zeros(2, 1, 40, 40)
    x[:, 0, 20, 30] = 1
    out = motion_blur_images(x, [30.0, -30.0], radius, sigma)[:, 0]
    for image, (top, bottom) in zip(out, [(10, 20), (20, 30)]):  # round(20 · sin 30°) = 10
        rows, cols = torch.nonzero(image, as_tuple=True)
        assert (rows.min(), rows.max()) == (top, bottom)
        assert (cols.min(), cols.max()) == (30 - round(20 * math.cos(math.radians(30))), 30)
        assert image.sum() == pytest.approx(1.0, abs=1e-6)


def test_motion_blur_tap_chunks_agree(monkeypatch):
    x = quantised(2, 3, 16, 16)
    blur = CORRUPTIONS.build({"name": "motion_blur", "severity": 2})
    whole = blur.apply(x, rngs(2))
    monkeypatch.setattr("ambient_bench.corruptions.motion_blur.GATHER_BUDGET", 1)  # one tap at a time
    torch.testing.assert_close(blur.apply(x, rngs(2)), whole, rtol=0, atol=1e-6)


def test_motion_blur_severity_increases_blur():
    x = smooth_images(4, 1, 48, seed=3)

    def high_frequency_energy(y):
        return (y.diff(dim=-1).pow(2).mean() + y.diff(dim=-2).pow(2).mean()).item()

    energies = [high_frequency_energy(CORRUPTIONS.build({"name": "motion_blur", "severity": s}).apply(x, rngs(4)))
                for s in range(1, 6)]
    assert high_frequency_energy(x) > energies[0]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_motion_blur_angle_per_image():
    blur = CORRUPTIONS.build({"name": "motion_blur", "severity": 2})
    angles = blur.angles(rngs(8), 8)
    assert len(set(angles)) == 8 and all(-45 <= a <= 45 for a in angles)
    same = quantised(1, 3, 32, 32).expand(2, 3, 32, 32).contiguous()
    out = blur.apply(same, rngs(2))
    assert not torch.allclose(out[0], out[1])  # same content, different angle


# ---------------------------------------------------------------- noise

def test_gaussian_noise_std_and_draw():
    x = torch.full((4, 3, 64, 64), 0.5)
    out = CORRUPTIONS.build({"name": "gaussian_noise", "sigma": 0.1}).apply(x, rngs(4))
    assert (out - x).std().item() == pytest.approx(0.1, rel=0.03)
    assert abs((out - x).mean().item()) < 0.005
    expected = 0.5 + 0.1 * rngs(4)[2].standard_normal((3, 64, 64))
    np.testing.assert_allclose(out[2].numpy(), np.clip(expected, 0, 1), atol=1e-6)


# ---------------------------------------------------------------- masks

def test_pixel_mask_fraction_and_shared_channels():
    x = torch.full((8, 3, 32, 32), 0.7)
    out = CORRUPTIONS.build({"name": "pixel_mask", "fraction": 0.3}).apply(x, rngs(8))
    dropped = out == 0
    assert torch.equal(dropped[:, 0], dropped[:, 1]) and torch.equal(dropped[:, 0], dropped[:, 2])
    assert dropped[:, 0].float().mean().item() == pytest.approx(0.3, abs=0.02)  # std of the share ≈ 0.005
    assert (out[~dropped] == 0.7).all()
    filled = CORRUPTIONS.build({"name": "pixel_mask", "fraction": 0.3, "fill": 0.25}).apply(x, rngs(8))
    assert torch.equal(filled == 0.25, dropped)


def test_box_mask_area_and_placement():
    x = torch.full((6, 3, 32, 32), 0.6)
    out = CORRUPTIONS.build({"name": "box_mask", "size": 0.25}).apply(x, rngs(6))
    corners = set()
    for image in out:
        hole = image == 0
        assert torch.equal(hole[0], hole[1]) and torch.equal(hole[0], hole[2])
        rows, cols = torch.nonzero(hole[0], as_tuple=True)
        assert len(rows) == 0.25 ** 2 * 32 * 32  # exactly an 8×8 square
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        corners.add((rows.min().item(), cols.min().item()))
    assert len(corners) > 1
    wide = CORRUPTIONS.build({"name": "box_mask", "size": 0.5}).apply(torch.ones(20, 1, 12, 20), rngs(20))
    assert ((wide == 0).flatten(1).sum(1) == 36).all()  # side 0.5 × 12, always fully inside


# ---------------------------------------------------------------- resampling

def test_pixelate_constant_blocks_equal_area_mean():
    x = quantised(2, 3, 32, 32)
    out = CORRUPTIONS.build({"name": "pixelate", "factor": 4}).apply(x, [])
    expected = F.avg_pool2d(x, 4).repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_pixelate_partial_blocks_average_what_they_cover():
    x = quantised(1, 1, 10, 7, seed=4)
    out = CORRUPTIONS.build({"name": "pixelate", "factor": 4}).apply(x, [])[0, 0].numpy()
    image = x[0, 0].numpy()
    for top in range(0, 10, 4):
        for left in range(0, 7, 4):
            block = out[top:top + 4, left:left + 4]
            np.testing.assert_allclose(block, image[top:top + 4, left:left + 4].mean(), atol=1e-6)


def high_frequency_share(y: torch.Tensor, factor: float) -> float:
    """Spectral energy above the Nyquist frequency of the image downsampled by ``factor``."""
    power = np.abs(np.fft.fft2(y.numpy())) ** 2
    k = np.abs(np.fft.fftfreq(y.shape[-1]))
    above = (k[:, None] > 0.5 / factor) | (k[None, :] > 0.5 / factor)
    return float(power[..., above].sum())


def test_downsample_removes_detail_above_new_nyquist():
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    for factor in (2.0, 4.0):
        low = CORRUPTIONS.build({"name": "downsample", "factor": factor}).apply(x, [])
        blocky = CORRUPTIONS.build({"name": "pixelate", "factor": int(factor)}).apply(x, [])
        assert high_frequency_share(low, factor) < 0.02 * high_frequency_share(x, factor)
        assert high_frequency_share(blocky, factor) > 5 * high_frequency_share(low, factor)


def test_downsample_keeps_low_frequencies_and_flattens_fine_texture():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    wave = (0.5 + 0.3 * torch.sin(2 * math.pi * xx / 32) * torch.cos(2 * math.pi * yy / 64))[None, None]
    checker = ((xx + yy) % 2)[None, None]
    down = CORRUPTIONS.build({"name": "downsample", "factor": 4.0})
    assert (down.apply(wave, []) - wave)[..., 8:-8, 8:-8].abs().max() < 0.02  # 8 px period at 16 px
    assert (down.apply(checker, []) - 0.5).abs().max() < 0.01
    odd = down.apply(quantised(1, 3, 30, 30), [])  # 30 / 4 = 7.5 → 8 px
    assert odd.shape == (1, 3, 30, 30)


# ---------------------------------------------------------------- all of them

@pytest.mark.parametrize("name", OURS)
def test_single_channel_and_defaults(name):
    corruption = CORRUPTIONS.build({"name": name})
    x = quantised(3, 1, 24, 24)
    out = corruption.apply(x, rngs(3))
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, x)
    assert 3 <= len(type(corruption).gallery) <= 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", OURS)
def test_same_result_on_cuda(name):
    corruption = CORRUPTIONS.build({"name": name})
    x = quantised(3, 3, 32, 32)
    out = corruption.apply(x.cuda(), rngs(3))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), corruption.apply(x, rngs(3)), rtol=0, atol=1e-5)
