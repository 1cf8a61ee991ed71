"""Per-image coin and fixed noise: deterministic from the image index alone."""
from __future__ import annotations

import numpy as np
import torch

from ambient_bench import CORRUPTIONS, ImageSet
from ambient_bench.data.mixing import coin, fixed_noise, mix


def images(n=200):
    return ImageSet(torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8))


def test_coin_is_a_function_of_index_and_seed():
    u = coin(0, np.arange(1000))
    assert np.array_equal(u[:10], coin(0, np.arange(10)))
    assert not np.array_equal(u, coin(1, np.arange(1000)))
    assert abs((u < 0.9).mean() - 0.9) < 0.03


def test_corrupted_sets_are_nested_across_clean_fractions():
    data = images()
    corrupted_at = {p: mix(data, p, None, seed=0).corrupted for p in (0.1, 0.5, 0.9)}
    assert (corrupted_at[0.9] <= corrupted_at[0.5]).all() and (corrupted_at[0.5] <= corrupted_at[0.1]).all()


def test_fixed_noise_depends_only_on_index():
    z = fixed_noise(0, torch.arange(10), (1, 4, 4))
    assert torch.equal(z[7], fixed_noise(0, torch.tensor([7]), (1, 4, 4))[0])
    assert not torch.equal(z[7], fixed_noise(1, torch.tensor([7]), (1, 4, 4))[0])
    assert abs(fixed_noise(0, torch.arange(500), (1, 8, 8)).std().item() - 1) < 0.02


def test_mix_corrupts_exactly_the_flagged_images():
    data = images()
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})
    mixed = mix(data, 0.3, blur, seed=0)
    changed = (mixed.images != data.images).flatten(1).any(1)
    assert torch.equal(changed, mixed.corrupted)
    assert torch.equal(mix(data, 0.3, None, seed=0).images, data.images)
    again = mix(data, 0.3, blur, seed=0)
    assert torch.equal(again.images, mixed.images) and torch.equal(again.noise, mixed.noise)
