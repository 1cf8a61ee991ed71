"""Context probe (paper Figs. 16-19): analytic denoisers with a known receptive field."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ambient_bench.annotation.context_probe import (
    ContextProbe,
    crop_sigma_table,
    load_probe,
    plateau_contexts,
    probe_context,
    save_probe,
)

RES = 16
CONTEXTS = list(range(2, RES + 1, 2))
SIGMAS = [0.05, 0.2, 0.5]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a shared, loaded CPU intra-op threads only add waiting (≈50×)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BoxDenoiser(torch.nn.Module):
    """D(x) = average of x over the (2r+1)² neighbourhood: output at a pixel sees exactly r pixels
    each side, so the 2×2 centre patch sees a (2 + 2r)² window and nothing else."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r
        self.sigma_data = 0.5
        self.calls = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (len(x),)
        self.calls += 1
        return F.avg_pool2d(x, 2 * self.r + 1, stride=1, padding=self.r, count_include_pad=True)


def smooth_images(n: int = 12, channels: int = 1) -> torch.Tensor:
    """Constant images far from mid grey: any context cut off inside the box costs ≫ 1e-3."""
    gen = torch.Generator().manual_seed(1)
    levels = torch.where(torch.rand(n, channels, 1, 1, generator=gen) < 0.5, 20, 235)
    return levels.expand(n, channels, RES, RES).to(torch.uint8).contiguous()


@pytest.mark.parametrize("r", [1, 3])
@pytest.mark.parametrize("fill", ["zero", "noise"])
def test_plateau_is_the_receptive_field(r: int, fill: str) -> None:
    probe = probe_context(BoxDenoiser(r), smooth_images(), SIGMAS, CONTEXTS, fill=fill, batch=64)
    assert probe.context_sizes.tolist() == CONTEXTS
    assert probe.losses.shape == (len(SIGMAS), len(CONTEXTS))
    assert probe.plateau_context.tolist() == [2 + 2 * r] * len(SIGMAS)
    # from the plateau on, the patch's input is identical: the loss is exactly the full one
    at = CONTEXTS.index(2 + 2 * r)
    np.testing.assert_array_equal(probe.losses[:, at:], probe.losses[:, -1:].repeat(len(CONTEXTS) - at, 1))
    assert (probe.losses[:, at - 1] > probe.losses[:, -1] + 1e-3).all()


def test_batched_equals_naive_loop_over_contexts() -> None:
    net, images = BoxDenoiser(2), smooth_images(channels=3)
    batched = probe_context(net, images, SIGMAS, CONTEXTS, batch=5, fill="noise", trials=3)
    for j, c in enumerate(CONTEXTS):
        single = probe_context(net, images, SIGMAS, [c], batch=1000, fill="noise", trials=3)
        column = list(single.context_sizes).index(c)
        np.testing.assert_allclose(batched.losses[:, j], single.losses[:, column], rtol=1e-6, atol=1e-9)
    # one chunk of ``batch`` inputs per forward call
    net.calls = 0
    probe_context(net, images, [0.1], CONTEXTS, batch=10, trials=1)
    assert net.calls == -(-len(images) * len(CONTEXTS) // 10)


def test_full_context_is_always_probed_and_inputs_checked() -> None:
    probe = probe_context(BoxDenoiser(1), smooth_images(), [0.1], [2, 4])
    assert probe.context_sizes.tolist() == [2, 4, RES]
    with pytest.raises(ValueError, match="even"):
        probe_context(BoxDenoiser(1), smooth_images(), [0.1], [3])
    with pytest.raises(ValueError, match="uint8"):
        probe_context(BoxDenoiser(1), smooth_images().float(), [0.1], [2])
    with pytest.raises(ValueError, match="fill"):
        probe_context(BoxDenoiser(1), smooth_images(), [0.1], [2], fill="grey")


def test_deterministic_for_a_fixed_seed() -> None:
    images = torch.randint(0, 256, (6, 1, RES, RES), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = probe_context(BoxDenoiser(1), images, SIGMAS, CONTEXTS, seed=3, fill="noise")
    b = probe_context(BoxDenoiser(1), images, SIGMAS, CONTEXTS, seed=3, fill="noise")
    c = probe_context(BoxDenoiser(1), images, SIGMAS, CONTEXTS, seed=4, fill="noise")
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)


def test_plateau_tolerances() -> None:
    losses = np.array([[0.5, 0.1005, 0.1002, 0.1],
                       [0.9, 0.5, 0.21, 0.2]])
    sizes = [2, 4, 6, 8]
    assert plateau_contexts(losses, sizes).tolist() == [4, 8]
    assert plateau_contexts(losses, sizes, tol=0.02).tolist() == [4, 6]
    assert plateau_contexts(losses, sizes, tol=0.06, relative=True).tolist() == [4, 6]
    assert plateau_contexts(losses, sizes, tol=0.0).tolist() == [8, 8]
    # column order does not matter: the largest context is the reference
    assert plateau_contexts(losses[:, ::-1], sizes[::-1]).tolist() == [4, 8]


def test_crop_sigma_table_inverts_and_is_monotone() -> None:
    sigmas = [0.01, 0.05, 0.15, 0.2, 0.35, 0.55, 1.0]
    plateau = [2, 4, 8, 16, 24, 32, 64]
    table = crop_sigma_table(sigmas, plateau, [1, 2, 4, 8, 12, 16, 24, 32, 48, 64])
    assert table == {1: 0.0, 2: 0.01, 4: 0.05, 8: 0.15, 12: 0.15, 16: 0.2, 24: 0.35, 32: 0.55, 48: 0.55, 64: 1.0}
    # order of the probed sigmas is irrelevant
    assert crop_sigma_table(sigmas[::-1], plateau[::-1], list(table)) == table
    # a non-monotone plateau (noise at 0.15 needing 16) caps every K < 16 below 0.15
    bumpy = crop_sigma_table(sigmas, [2, 4, 16, 8, 24, 32, 64], [2, 4, 8, 16, 24])
    assert bumpy == {2: 0.01, 4: 0.05, 8: 0.05, 16: 0.2, 24: 0.35}
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = list(crop_sigma_table(rng.uniform(0.01, 2, 9), rng.choice([2, 4, 8, 16], 9), range(1, 20)).values())
        assert values == sorted(values)


def test_save_load_round_trip(tmp_path: Path) -> None:
    probe = probe_context(BoxDenoiser(1), smooth_images(), SIGMAS, CONTEXTS, trials=1)
    back = load_probe(save_probe(probe, tmp_path / "probe.json"))
    assert isinstance(back, ContextProbe)
    np.testing.assert_allclose(back.losses, probe.losses)
    assert back.plateau_context.tolist() == probe.plateau_context.tolist() and back.meta["trials"] == 1
    loose = probe.with_tol(10.0)
    assert loose.plateau_context.tolist() == [2] * len(SIGMAS) and loose.table([2]) == {2: max(SIGMAS)}


def _load_cli():
    spec = importlib.util.spec_from_file_location("context_probe_cli", ROOT / "benchmarks/tools/context_probe.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli_missing_network_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cli = _load_cli()
    missing = tmp_path / "nope" / "network.pt"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--network", str(missing), "--dataset", "digits", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "ambient_bench run" in lines[0] and not (tmp_path / "out").exists()


def test_cli_end_to_end_on_an_untrained_network(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ambient_bench.training.loop import build_network

    cfg = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    torch.manual_seed(0)
    net = build_network(cfg, 1, RES, 0.5)
    network = tmp_path / "network.pt"
    torch.save({"network_cfg": cfg, "img_channels": 1, "resolution": RES, "sigma_data": 0.5,
                "ema": net.state_dict()}, network)
    out = tmp_path / "out"
    _load_cli().main(["--network", str(network), "--dataset", "digits", "--count", "4", "--sigmas", "0.05,0.5",
                      "--contexts", "2,8", "--trials", "1", "--crop-sizes", "2,8,16", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "crop_sigma_table: {2: " in printed
    probe = load_probe(out / "probe.json")
    assert probe.context_sizes.tolist() == [2, 8, RES] and probe.meta["count"] == 4
    table = json.loads((out / "table.json").read_text())
    assert list(table) == ["2", "8", "16"] and table == {str(k): v for k, v in probe.table([2, 8, 16]).items()}
    assert (out / "context_curves.png").stat().st_size > 0 and (out / "context_table.png").stat().st_size > 0
