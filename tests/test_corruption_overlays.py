"""Behaviour of the low-frequency corruptions: colour, contrast, haze, overlays and compose."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import scipy.fft
import torch

from ambient_bench import CORRUPTIONS, UserError
from ambient_bench.config.schema import ComponentList, ComponentRef
from ambient_bench.config.suite import load_suite
from ambient_bench.corruptions.blur import GaussianBlur
from ambient_bench.corruptions.compose import step_rngs
from ambient_bench.engine.keys import stage_key
from ambient_bench.params import ParamError
from ambient_bench.seeding import numpy_rng


def images(n=4, c=3, h=16, w=16, lo=0.0, hi=1.0, seed=0):
    return lo + (hi - lo) * torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def rngs(n, seed=0):
    return [numpy_rng("overlay-test", seed, i) for i in range(n)]


def apply(spec, x, seed=0):
    return CORRUPTIONS.build(spec).apply(x, rngs(len(x), seed))


def test_saturation_zero_is_grey_and_one_is_identity():
    x = images()
    grey = apply({"name": "saturation", "factor": 0.0}, x)
    assert (grey.amax(dim=1) - grey.amin(dim=1)).max() <= 1e-6
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(grey[:, 0], luma, rtol=0, atol=1e-6)
    torch.testing.assert_close(apply({"name": "saturation", "factor": 1.0}, x), x, rtol=0, atol=1e-6)
    mono = images(c=1)  # no colour to remove: it becomes a contrast change, so still a change
    assert apply({"name": "saturation", "factor": 0.5}, mono).std() < 0.6 * mono.std()


@pytest.mark.parametrize("c", [1, 3])
def test_contrast_scales_std_by_factor_and_keeps_mean(c):
    x = images(c=c, lo=0.3, hi=0.7)  # a factor < 1 cannot clip here
    out = apply({"name": "contrast", "factor": 0.4}, x)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), 0.4 * x.std(dim=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("c", [1, 3])
def test_color_shift_moves_channel_means_by_the_drawn_offsets(c):
    x = images(c=c, lo=0.3, hi=0.7)  # offsets of at most 0.2 cannot clip here
    out = apply({"name": "color_shift", "strength": 0.2}, x)
    expected = np.stack([rng.uniform(-0.2, 0.2, size=c) for rng in rngs(len(x))])
    shift = (out - x).mean(dim=(2, 3)).double().numpy()
    np.testing.assert_allclose(shift, expected, atol=1e-6)
    assert np.abs(expected).max() > 0.02  # the offsets are not all tiny by chance


def low_frequency_share(field: torch.Tensor, cycles: int = 3) -> float:
    """Share of the (mean-free) energy of H×W ``field`` within ``cycles`` periods per side.

    A DCT rather than an FFT: the FFT's wrap-around would see a jump at the borders of any
    smooth field that is not periodic and spread it over all frequencies.
    """
    spectrum = scipy.fft.dctn((field - field.mean()).double().numpy(), norm="ortho") ** 2
    return float(spectrum[: 2 * cycles + 1, : 2 * cycles + 1].sum() / spectrum.sum())  # DCT k = k/2 cycles


def test_haze_pulls_towards_airlight_with_exact_mean_transmission():
    density, airlight, c = 0.7, 0.8, 0.2
    flat = torch.full((3, 3, 32, 32), c)
    out = apply({"name": "haze", "density": density, "airlight": airlight}, flat)
    t = math.exp(-density)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.full((3,), c * t + airlight * (1 - t)),
                               rtol=0, atol=1e-5)
    x = images(c=1, h=32, w=32, lo=0.0, hi=0.5)
    hazy = apply({"name": "haze", "density": density, "airlight": airlight}, x)
    assert ((airlight - hazy.mean(dim=(1, 2, 3))) < 0.7 * (airlight - x.mean(dim=(1, 2, 3)))).all()
    haze = CORRUPTIONS.build({"name": "haze", "density": density})
    maps = haze.transmission(3, 32, 32, rngs(3))
    assert maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0.01
    torch.testing.assert_close(maps.mean(dim=(1, 2, 3)), torch.full((3,), t), rtol=0, atol=1e-6)


def test_haze_is_smooth_where_noise_is_not():
    flat = torch.full((4, 1, 32, 32), 0.2)
    change = apply({"name": "haze", "density": 1.0}, flat) - flat
    noise = 0.05 * torch.randn((32, 32), generator=torch.Generator().manual_seed(0))
    assert min(low_frequency_share(change[i, 0]) for i in range(4)) > 0.95
    assert low_frequency_share(noise) < 0.1
    assert not torch.equal(change[0], change[1])  # one random map per image


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("name", ["watermark", "subtitle"])
def test_overlays_change_part_of_the_image_deterministically(name, size):
    x = images(n=3, h=size, w=size, lo=0.2, hi=0.8)
    out = apply({"name": name}, x)
    assert torch.equal(out, apply({"name": name}, x.clone()))
    changed = (out - x).abs().amax(dim=1) > 1e-6
    share = changed.float().mean(dim=(1, 2))
    assert (share > 0.03).all() and (share < 0.6).all()
    if name == "subtitle":  # a caption stays in the bottom half
        assert not changed[:, : size // 2].any()
    mono = apply({"name": name}, x[:, :1])
    assert mono.shape == (3, 1, size, size) and not torch.equal(mono, x[:, :1])


def test_watermark_position_and_subtitle_phrase_come_from_the_rngs():
    x = images(n=6, h=32, w=32)
    assert not torch.equal(apply({"name": "watermark"}, x, 0), apply({"name": "watermark"}, x, 1))
    fixed = CORRUPTIONS.build({"name": "subtitle", "text": "hi there"})
    assert not fixed.random and CORRUPTIONS.build({"name": "subtitle"}).random
    assert torch.equal(fixed.apply(x, rngs(6, 0)), fixed.apply(x, rngs(6, 1)))
    random_text = apply({"name": "subtitle"}, x, 0)
    assert len({random_text[i].sum().item() - x[i].sum().item() for i in range(6)}) > 1


def test_compose_equals_its_steps_by_hand_with_derived_generators():
    steps = [{"name": "gaussian_blur", "sigma": 0.8}, {"name": "color_shift", "strength": 0.1},
             {"name": "haze", "density": 0.3}]
    x = images()
    out = apply({"name": "compose", "steps": steps}, x)
    streams = step_rngs(rngs(len(x)), len(steps))
    expected = x
    for spec, stream in zip(steps, streams):
        expected = CORRUPTIONS.build(spec).apply(expected, stream)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_compose_step_streams_do_not_depend_on_earlier_steps():
    x = images()
    # Both first steps are identities, but the first one draws from its generator.
    drawing = apply({"name": "compose", "steps": [{"name": "color_shift", "strength": 0.0}, "color_shift"]}, x)
    silent = apply({"name": "compose", "steps": [{"name": "gaussian_blur", "sigma": 0.0}, "color_shift"]}, x)
    assert torch.equal(drawing, silent)


def test_compose_is_random_exactly_when_a_step_is():
    assert CORRUPTIONS.get("compose").random
    assert CORRUPTIONS.build({"name": "compose", **CORRUPTIONS.get("compose").test_params}).random
    plain = CORRUPTIONS.build({"name": "compose", "steps": ["gaussian_blur", "contrast"]})
    assert not plain.random
    x = images()
    assert torch.equal(plain.apply(x, rngs(4, 0)), plain.apply(x, rngs(4, 1)))


def test_compose_key_covers_step_versions(monkeypatch):
    resolved = ComponentRef("corruption").resolve({"name": "compose", "steps": ["gaussian_blur"]}, ())

    def key() -> str:
        return stage_key("mix", 1, {"corruption": ComponentRef("corruption").semantic(resolved)})

    before = key()
    monkeypatch.setattr(GaussianBlur, "version", GaussianBlur.version + 1)
    assert key() != before


def test_compose_rejects_unknown_step_with_suggestion(tmp_path):
    with pytest.raises(ParamError) as err:
        ComponentList("corruption").resolve([{"name": "gausian_blur", "sigma": 1.0}], ("steps",))
    assert "did you mean 'gaussian_blur'?" in err.value.message and err.value.key == ("steps", 0, "name")
    with pytest.raises(UserError, match="did you mean 'gaussian_blur'"):
        CORRUPTIONS.build({"name": "compose", "steps": ["gausian_blur"]})
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent("""
        suite: t
        defaults:
          dataset: digits
          mix:
            corruption:
              name: compose
              steps: [{name: gausian_blur, sigma: 1.0}, {name: color_shift, strength: 0.1}]
          method: all_data
          train: {duration_kimg: 1}
          evaluate: {metrics: [fd_digits]}
        """).lstrip())
    with pytest.raises(UserError) as err:
        load_suite(suite)
    assert "suite.yaml:" in str(err.value) and "did you mean 'gaussian_blur'?" in str(err.value)
    good = load_suite(suite.parent / _rewrite(suite, "gausian_blur", "gaussian_blur"))
    steps = good.cells[0].config["mix"]["corruption"]
    steps = steps[0] if isinstance(steps, list) else steps  # one corruption or a list of them
    assert [s["name"] for s in steps["steps"]] == ["gaussian_blur", "color_shift"]
    assert steps["steps"][0]["truncate"] == 4.0  # step defaults are filled in


def _rewrite(path, old, new):
    fixed = path.with_name("fixed.yaml")
    fixed.write_text(path.read_text().replace(old, new))
    return fixed.name
