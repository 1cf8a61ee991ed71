"""Per-image coin and fixed noise: deterministic from the image index alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ambient_bench import CORRUPTIONS, ImageSet, UserError
from ambient_bench.components import HIGH_QUALITY, LOW_QUALITY, OUT_OF_DISTRIBUTION
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
    corrupted_at = {p: mix(data, p, [], seed=0).corrupted for p in (0.1, 0.5, 0.9)}
    assert (corrupted_at[0.9] <= corrupted_at[0.5]).all() and (corrupted_at[0.5] <= corrupted_at[0.1]).all()


def test_fixed_noise_depends_only_on_index():
    z = fixed_noise(0, torch.arange(10), (1, 4, 4))
    assert torch.equal(z[7], fixed_noise(0, torch.tensor([7]), (1, 4, 4))[0])
    assert not torch.equal(z[7], fixed_noise(1, torch.tensor([7]), (1, 4, 4))[0])
    assert abs(fixed_noise(0, torch.arange(500), (1, 8, 8)).std().item() - 1) < 0.02


def test_mix_corrupts_exactly_the_flagged_images():
    data = images()
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})
    mixed = mix(data, 0.3, [blur], seed=0)
    changed = (mixed.images != data.images).flatten(1).any(1)
    assert torch.equal(changed, mixed.corrupted)
    assert torch.equal(mix(data, 0.3, [], seed=0).images, data.images)
    again = mix(data, 0.3, [blur], seed=0)
    assert torch.equal(again.images, mixed.images) and torch.equal(again.noise, mixed.noise)


class Brighten(torch.nn.Module):
    """A stand-in corruption (no registry needed): adds a constant."""

    def __init__(self, amount):
        super().__init__()
        self.amount = amount

    def apply(self, x, rngs):
        return (x + self.amount).clamp(0, 1)


def test_several_corruptions_are_drawn_per_image():
    data = ImageSet(torch.full((400, 1, 4, 4), 10, dtype=torch.uint8))
    mixed = mix(data, 0.1, [Brighten(0.1), Brighten(0.5)], seed=0)
    which = mixed.corruption
    assert set(which[mixed.corrupted].tolist()) == {0, 1} and (which[~mixed.corrupted] == -1).all()
    assert 0.35 < (which[mixed.corrupted] == 1).float().mean() < 0.65  # uniform choice
    expected = torch.where(which == 1, 10 + 128, torch.where(which == 0, 10 + 26, 10))
    assert torch.equal(mixed.images[:, 0, 0, 0].long(), expected.long())
    again = mix(data, 0.1, [Brighten(0.1), Brighten(0.5)], seed=0)
    assert torch.equal(again.corruption, which)


def test_out_of_distribution_sources_are_appended_with_their_label():
    data, extra = images(50), ImageSet(torch.zeros(7, 1, 8, 8, dtype=torch.uint8))
    mixed = mix(data, 0.5, [], seed=0, ood_sources=[extra])
    assert len(mixed.index) == 57 and mixed.ood.tolist() == [False] * 50 + [True] * 7
    assert not mixed.corrupted[50:].any() and mixed.index[50:].tolist() == list(range(50, 57))
    with pytest.raises(UserError, match="out-of-distribution source 1 has images of shape"):
        mix(data, 0.5, [], seed=0, ood_sources=[ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))])


def test_discard_rest_keeps_only_the_clean_images_with_their_indices():
    data = images(300)
    flagged = mix(data, 0.1, [], seed=0)
    kept = mix(data, 0.1, [], seed=0, discard_rest=True)
    assert torch.equal(kept.index, torch.nonzero(~flagged.corrupted).flatten())
    assert not kept.corrupted.any() and torch.equal(kept.noise, flagged.noise[kept.index])


def test_sources_given_by_the_dataset_are_kept():
    source = torch.tensor([HIGH_QUALITY] * 4 + [LOW_QUALITY] * 3 + [OUT_OF_DISTRIBUTION] * 2, dtype=torch.int8)
    data = ImageSet(torch.full((9, 1, 4, 4), 50, dtype=torch.uint8), source=source)
    mixed = mix(data, 1.0, [Brighten(0.5)], seed=0)
    assert mixed.corrupted.tolist() == [False] * 4 + [True] * 3 + [False] * 2
    assert mixed.ood.tolist() == [False] * 7 + [True] * 2
    assert torch.equal(mixed.images, data.images)  # low-quality images are not corrupted again
    assert torch.equal(data.high_quality().images, data.images[:4])


def test_max_clean_keeps_nested_clean_sets_and_the_same_corrupted_pool():
    from ambient_bench.data.mixing import layout

    origin = torch.full((500,), HIGH_QUALITY, dtype=torch.int8)
    pools = {m: layout(500, origin, None, 0.5, 1, seed=3, max_clean=m) for m in (10, 40, None)}
    clean = {m: set(p.rows[~p.corrupted].tolist()) for m, p in pools.items()}
    bad = {m: p.rows[p.corrupted].tolist() for m, p in pools.items()}
    assert len(clean[10]) == 10 and len(clean[40]) == 40 and len(clean[None]) > 200
    assert clean[10] < clean[40] < clean[None]  # nested
    assert bad[10] == bad[40] == bad[None]      # the corrupted pool does not move
