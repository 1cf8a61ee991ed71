"""Tests for the EDM-style non-leaky augmentation pipe."""
from __future__ import annotations

import pytest
import torch

from ambient_bench.diffusion.augment import LABEL_DIM, AugmentPipe

ONLY = dict(xflip=0.0, yflip=0.0, scale=0.0, rotate_frac=0.0, aniso=0.0, translate_frac=0.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 8, c: int = 3, h: int = 16, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=_gen(seed))


def test_p_zero_is_identity() -> None:
    x = _images()
    y, labels = AugmentPipe(p=0.0)(x, _gen(1))
    assert torch.equal(y, x)
    assert labels.shape == (8, LABEL_DIM) and not labels.any()


def test_deterministic_given_seed() -> None:
    x = _images()
    pipe = AugmentPipe(p=1.0)
    y1, l1 = pipe(x, _gen(5))
    y2, l2 = pipe(x, _gen(5))
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    y3, l3 = pipe(x, _gen(6))
    assert not torch.equal(l1, l3) and not torch.equal(y1, y3)


def test_xflip_only_is_exact() -> None:
    x = _images()
    y, labels = AugmentPipe(p=1.0, **{**ONLY, "xflip": 1.0})(x, _gen(2))
    assert torch.equal(y, x.flip(-1))
    assert torch.equal(labels[:, 0], torch.ones(8))
    assert not labels[:, 1:].any()


def test_yflip_only_is_exact() -> None:
    x = _images()
    y, labels = AugmentPipe(p=1.0, **{**ONLY, "yflip": 1.0})(x, _gen(2))
    assert torch.equal(y, x.flip(-2))
    assert torch.equal(labels[:, 1], torch.ones(8)) and not labels[:, [0, *range(2, 9)]].any()


def test_zero_label_images_bit_identical() -> None:
    x = _images(n=64)
    y, labels = AugmentPipe(p=0.1)(x, _gen(3))
    untouched = ~labels.ne(0).any(dim=1)
    assert 0 < int(untouched.sum()) < 64  # 0.9^6 ~ 0.53 of images untouched at p=0.1
    assert torch.equal(y[untouched], x[untouched])
    assert not torch.equal(y[~untouched], x[~untouched])


def test_scale_only_keeps_constant_image() -> None:
    x = torch.full((6, 3, 16, 16), 0.37)
    y, labels = AugmentPipe(p=1.0, **{**ONLY, "scale": 1.0})(x, _gen(4))
    assert labels[:, 2].ne(0).all()
    assert not labels[:, [0, 1, *range(3, 9)]].any()
    assert torch.allclose(y, x, atol=1e-6, rtol=0)


def test_every_geometric_transform_keeps_constant_image() -> None:
    x = torch.full((16, 1, 8, 8), -0.5)
    y, labels = AugmentPipe(p=1.0, yflip=0.0, xflip=0.0)(x, _gen(7))
    assert labels[:, 2:].ne(0).all()
    assert torch.allclose(y, x, atol=1e-6, rtol=0)


def test_translation_moves_ramp_by_label() -> None:
    # A horizontal ramp f(col) = col is reproduced exactly by bilinear sampling, so away from the
    # reflected border the output must be col - tx * W: checks sign and pixel units of the labels.
    n, h, w = 16, 8, 32
    x = torch.arange(w, dtype=torch.float64).expand(n, 1, h, w).clone()
    y, labels = AugmentPipe(p=1.0, **{**ONLY, "translate_frac": 1.0}, translate_std=0.05)(x, _gen(8))
    assert labels[:, 7:].ne(0).all() and not labels[:, :7].any()
    shift = labels[:, 7].double() * w
    col = torch.arange(w, dtype=torch.float64)
    for i in range(n):
        expected = col - shift[i]
        inside = (expected >= 0.5) & (expected <= w - 1.5)
        assert torch.allclose(y[i, 0, :, inside], expected[inside].expand(h, -1), atol=1e-4)


def test_labels_describe_rotation() -> None:
    _, labels = AugmentPipe(p=1.0, **{**ONLY, "rotate_frac": 1.0})(_images(n=32), _gen(9))
    sin, cos = labels[:, 3], labels[:, 4] + 1
    assert torch.allclose(sin ** 2 + cos ** 2, torch.ones(32), atol=1e-5)
    assert not labels[:, [0, 1, 2, 5, 6, 7, 8]].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_preserved(dtype: torch.dtype) -> None:
    x = _images(n=5, c=2, h=10, w=14).to(dtype)
    y, labels = AugmentPipe(p=0.7)(x, _gen(10))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert labels.shape == (5, LABEL_DIM) and labels.dtype == torch.float32 and labels.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_parameters() -> None:
    x = _images()
    pipe = AugmentPipe(p=0.5)
    y_cpu, l_cpu = pipe(x, _gen(11))
    y_gpu, l_gpu = pipe(x.cuda(), _gen(11))
    assert y_gpu.is_cuda and l_gpu.is_cuda
    assert torch.equal(l_gpu.cpu(), l_cpu)
    assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-5)


def test_rotation_matches_labels_on_linear_image() -> None:
    # f = centred x-coordinate is linear, so bilinear sampling is exact; rotating content by a (x right,
    # y down) gives out(p) = f(R(-a) p) = cos(a) px + sin(a) py inside a disc that stays within the image.
    n, size = 12, 33
    coords = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    x = px.expand(n, 1, size, size).clone()
    y, labels = AugmentPipe(p=1.0, **{**ONLY, "rotate_frac": 1.0})(x, _gen(12))
    disc = px ** 2 + py ** 2 <= 8 ** 2
    for i in range(n):
        sin, cos = float(labels[i, 3]), float(labels[i, 4]) + 1
        assert torch.allclose(y[i, 0][disc], (cos * px + sin * py)[disc], atol=1e-4)
