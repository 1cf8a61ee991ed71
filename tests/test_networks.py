"""The DDPM++ U-Net: paper parameter counts, gradients, augmentation labels, zero output at init."""
from __future__ import annotations

import pytest
import torch

from ambient_bench.annotation.classifier_net import HalfUNet, architecture
from ambient_bench.config.schema import NETWORK
from ambient_bench.diffusion.unet import NETWORK_PRESETS, UNet, build_unet, network_architecture, parameter_count


@pytest.mark.parametrize("preset, resolution, expected", [("paper_cifar", 32, 55.73e6), ("paper_64", 64, 61.8e6)])
def test_paper_presets_have_edm_ddpmpp_parameter_counts(preset: str, resolution: int, expected: float) -> None:
    with torch.device("meta"):
        net = build_unet({"preset": preset}, 3, resolution)
    assert abs(parameter_count(net) - expected) < 0.01 * expected


@pytest.mark.parametrize("preset, resolution, expected", [("paper_cifar", 32, 19.6e6), ("paper_64", 64, 21.5e6)])
def test_classifier_encoder_matches_the_papers_half_unet(preset: str, resolution: int, expected: float) -> None:
    with torch.device("meta"):
        net = HalfUNet(3, resolution, **architecture({"preset": preset}))
        augmented = HalfUNet(3, resolution, **architecture({"preset": preset, "augment_p": 0.12}))
    assert abs(parameter_count(net) - expected) < 0.01 * expected
    # trained with augmentation (the paper's recipe) it takes EDM's 9 augmentation labels, bias-free
    assert architecture({"preset": preset, "augment_p": 0.12})["augment_dim"] == 9
    assert parameter_count(augmented) - parameter_count(net) == 9 * 128


def test_architecture_resolves_preset_then_explicit_keys() -> None:
    cfg = NETWORK.resolve({"preset": "paper_cifar", "dropout": 0.2}, ("network",))
    arch = network_architecture(cfg)
    assert arch == {**NETWORK_PRESETS["paper_cifar"], "dropout": 0.2}
    arch["channel_mult"].append(4)  # a copy: the preset is untouched
    assert NETWORK_PRESETS["paper_cifar"]["channel_mult"] == [2, 2, 2]
    assert network_architecture(NETWORK.resolve({}, ("network",))) == NETWORK_PRESETS["cpu"]
    assert network_architecture({"model_channels": 8}) == {**NETWORK_PRESETS["cpu"], "model_channels": 8}


def test_cpu_preset_forward_backward() -> None:
    torch.manual_seed(0)
    net = build_unet({"preset": "cpu", "attn_resolutions": [8]}, 3, 16)
    for p in net.parameters():  # move off the zero init so every gradient path carries signal
        p.data.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 16, 16)
    out = net(x, torch.tensor([-0.5, 0.7]))
    assert out.shape == x.shape
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_augment_labels_condition_the_output_and_none_means_zeros() -> None:
    torch.manual_seed(0)
    net = UNet(1, 8, model_channels=8, channel_mult=[1, 2], num_blocks=1, augment_dim=4).eval()
    torch.nn.init.normal_(net.conv_out.weight)  # otherwise the output is zero whatever the input
    for block in [*net.encoder.blocks, *net.decoder]:
        torch.nn.init.normal_(block.conv1.weight, std=0.1)
    x, c_noise = torch.randn(2, 1, 8, 8), torch.zeros(2)
    plain = net(x, c_noise)
    torch.testing.assert_close(net(x, c_noise, torch.zeros(2, 4)), plain, rtol=0, atol=0)
    assert not torch.allclose(net(x, c_noise, torch.ones(2, 4)), plain)


def test_fresh_network_outputs_exactly_zero() -> None:
    net = build_unet({"preset": "cpu", "attn_resolutions": [8], "augment_dim": 9}, 3, 16)
    out = net(torch.randn(2, 3, 16, 16), torch.randn(2), torch.randn(2, 9))
    assert (out == 0).all()
