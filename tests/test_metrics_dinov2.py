"""FD_DINOv2 (EDM2 protocol), Vendi and memorisation metrics, offline.

No real DINOv2 weights exist here: the DINOv2 tests build a RANDOM-weights ViT-S/14 checkpoint in
the original DINOv2 key format. They check loading, preprocessing and plumbing; the numbers they
produce are not FD_DINOv2 values of anything.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ambient_bench import DATASETS, METRICS, ImageSet, UserError
from ambient_bench.metrics import diversity, fd_dinov2, features

TEST_FE = "test-avgpool8-centered"
DIM, DEPTH, HEADS = 384, 12, 6  # ViT-S/14


class CenteredPoolFE(FeatureExtractorBase):
    """Test-only: 8×8 average pool of x/127.5 − 1, flattened (192-d); deterministic, no weights."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    def forward(self, x):
        return (F.adaptive_avg_pool2d(x.float() / 127.5 - 1, 8).flatten(1),)

    @staticmethod
    def get_provided_features_list():
        return ("pool",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "pool"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


if TEST_FE not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(TEST_FE, CenteredPoolFE)


def original_state_dict(dim: int = DIM, depth: int = DEPTH, seed: int = 0,
                        device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random weights under the key names and shapes of dinov2_vit*14_pretrain.pth (37×37 position grid)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.02):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * std

    sd = {"cls_token": rand(1, 1, dim, std=0.5), "pos_embed": rand(1, 1 + 37 * 37, dim, std=0.5),
          "mask_token": rand(1, dim), "patch_embed.proj.weight": rand(dim, 3, 14, 14, std=0.05),
          "patch_embed.proj.bias": rand(dim), "norm.weight": 1 + rand(dim, std=0.1), "norm.bias": rand(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + rand(dim, std=0.1), b + "norm1.bias": rand(dim),
                   b + "attn.qkv.weight": rand(3 * dim, dim, std=0.05), b + "attn.qkv.bias": rand(3 * dim),
                   b + "attn.proj.weight": rand(dim, dim, std=0.05), b + "attn.proj.bias": rand(dim),
                   b + "ls1.gamma": rand(dim, std=0.3), b + "norm2.weight": 1 + rand(dim, std=0.1),
                   b + "norm2.bias": rand(dim), b + "mlp.fc1.weight": rand(4 * dim, dim, std=0.05),
                   b + "mlp.fc1.bias": rand(4 * dim), b + "mlp.fc2.weight": rand(dim, 4 * dim, std=0.05),
                   b + "mlp.fc2.bias": rand(dim), b + "ls2.gamma": rand(dim, std=0.3)})
    return sd


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DINOv2's ViT forward written out from the paper's architecture (pre-norm blocks, LayerScale,
    LayerNorm eps 1e-6, exact GELU, CLS after the final norm), independent of timm."""
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    tokens = tokens.flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(len(x), -1, -1), tokens], 1)
    h = h + fd_dinov2.dinov2_pos_embed(sd["pos_embed"], x.shape[-1] // 14)
    for i in range(DEPTH):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(h, (DIM,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        q, k, v = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"]).unflatten(-1, (3, HEADS, DIM // HEADS)) \
            .permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS), -1) @ v
        h = h + p["ls1.gamma"] * F.linear(attn.transpose(1, 2).flatten(2), p["attn.proj.weight"], p["attn.proj.bias"])
        y = F.layer_norm(h, (DIM,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        y = F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
        y = F.linear(y, p["mlp.fc2.weight"], p["mlp.fc2.bias"])
        h = h + p["ls2.gamma"] * y
    return F.layer_norm(h, (DIM,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub/checkpoints holds a random-weights dinov2_vits14_pretrain.pth."""
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    path.parent.mkdir(parents=True)
    torch.save(original_state_dict(), path)
    return home


def images(n: int, seed: int, size: int = 32, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def test_missing_dinov2_weights_name_file_url_and_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    for spec in ({"name": "fd_dinov2"}, {"name": "vendi"}, {"name": "memorization"}):
        with pytest.raises(UserError) as err:
            METRICS.build(spec).check()
        message = str(err.value)
        assert "dinov2_vitl14_pretrain.pth" in message and "\n" not in message
        assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in message
        assert str(tmp_path / "empty" / "hub" / "checkpoints") in message and "TORCH_HOME" in message


def test_pos_embed_interpolation_matches_dinov2_formula():
    torch.manual_seed(0)
    dim = 5
    pe = torch.randn(1, 1 + 37 * 37, dim)
    out = fd_dinov2.dinov2_pos_embed(pe, 16)
    assert out.shape == (1, 1 + 256, dim)
    assert torch.equal(out[:, 0], pe[:, 0])  # CLS position untouched
    grid = pe[:, 1:].reshape(1, 37, 37, dim).permute(0, 3, 1, 2)
    direct = F.interpolate(grid, scale_factor=((16 + 0.1) / 37,) * 2, mode="bicubic", antialias=False)
    assert torch.equal(out[:, 1:], direct.permute(0, 2, 3, 1).reshape(1, 256, dim))
    # the 0.1 offset changes the sampling positions: asking for size=16 (timm's way) gives other values
    by_size = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=False)
    assert not torch.allclose(direct, by_size, atol=1e-3)
    constant = torch.ones(1, 1 + 37 * 37, dim)  # bicubic weights sum to 1
    assert torch.allclose(fd_dinov2.dinov2_pos_embed(constant, 16), torch.ones(1, 257, dim), atol=1e-5)
    assert fd_dinov2.dinov2_pos_embed(out, 16) is out  # already the right grid: unchanged, as DINOv2


def test_random_vits14_checkpoint_loads_and_fd_pipeline_runs(torch_home, tmp_path, monkeypatch):
    """Loading check with random weights (not a real FD_DINOv2): timm model = written-out DINOv2 forward,
    EDM2 preprocessing, 384-d features, finite Fréchet distance, reference features cached."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    metric = METRICS.build({"name": "fd_dinov2", "arch": "vits14", "device": "cpu", "batch": 8})
    metric.check()
    sd = torch.load(torch_home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth", weights_only=True)
    x = images(2, seed=1)
    fe = FEATURE_EXTRACTORS_REGISTRY[fd_dinov2.EXTRACTOR](fd_dinov2.EXTRACTOR, [fd_dinov2.LAYER], dinov2_arch="vits14")
    assert fe.arch == "vits14"
    with torch.no_grad():
        start = time.perf_counter()
        got = fe(x)[0]
        elapsed = time.perf_counter() - start
        want = reference_forward(sd, fd_dinov2.edm2_preprocess(x))
    print(f"vits14 forward on CPU: {elapsed / len(x) * 1000:.0f} ms/image (batch {len(x)})")
    assert got.shape == (2, 384) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    # EDM2 preprocessing: bicubic with antialias to 224, then ImageNet normalisation
    y = fd_dinov2.edm2_preprocess(torch.full((1, 3, 17, 17), 255, dtype=torch.uint8))
    assert y.shape == (1, 3, 224, 224)
    white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(y[0, :, 100, 100], white)

    reference = ImageSet(images(3, seed=2, size=16, channels=1))  # grey references are repeated to RGB
    values = metric.compute(images(3, seed=3), reference, tmp_path, tmp_path / "cache")
    assert set(values) == {"fd_dinov2"} and np.isfinite(values["fd_dinov2"]) and values["fd_dinov2"] > 0
    cached = list((tmp_path / "cache").glob("features-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (3, 384)
    meta = json.loads(cached[0].with_suffix(".json").read_text())
    assert meta["arch"] == "vits14" and meta["preprocessing"] == "bicubic-aa-224" and meta["count"] == 3
    checkpoint = torch_home / "hub" / "checkpoints" / fd_dinov2.checkpoint_name("vits14")
    assert meta["weights_sha256"] == features.file_sha256(checkpoint)
    protocol = metric.protocol()
    assert "NOT the paper's FD_DINOv2" in protocol["feature_extractor"]
    assert "timm" in protocol["implementation"] and "dgm-eval" in protocol["implementation"]


def test_fd_dinov2_wrong_arch_checkpoint_is_refused(torch_home, tmp_path):
    path = torch_home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    with pytest.raises(ValueError, match="vits14 checkpoint, expected vitl14"):
        features.extract(images(1, 0), fd_dinov2.EXTRACTOR, fd_dinov2.LAYER, torch.device("cpu"),
                         feature_extractor_weights_path=str(path), dinov2_arch="vitl14", verbose=False)


@pytest.mark.parametrize("arch", ["vits14", "vitb14", "vitl14"])
def test_timm_architecture_has_the_original_checkpoint_layout(arch):
    """Every original key (but mask_token) with its shape, the grid resampled to 16×16: a strict load of
    the real vitl14 file cannot fail on layout. Meta tensors: no memory, no time."""
    _, dim, depth, heads = fd_dinov2.ARCHS[arch]
    original = original_state_dict(dim, depth, device="meta")
    assert fd_dinov2.arch_of(original) == arch
    model = fd_dinov2.timm_vit(arch)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in original.items() if k != "mask_token"}
    expected["pos_embed"] = (1, 257, dim)
    assert shapes == expected and model.blocks[0].attn.num_heads == heads


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) * 2 + 1
    # N(0, I) vs N(1, 4I): |Δμ|² + tr(I + 4I − 2·2I) = 3 + 3
    assert fd_dinov2.frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert fd_dinov2.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_vendi_score_identical_and_orthogonal():
    assert diversity.vendi_score(np.tile([[1.0, 2.0, 3.0]], (10, 1))) == pytest.approx(1.0)
    for n in (1, 5, 20):
        assert diversity.vendi_score(np.eye(n) * 3.0) == pytest.approx(n)
    assert diversity.vendi_score(np.eye(4)[:, :4].repeat(16, axis=0)) == pytest.approx(4.0)  # 4 distinct × 16
    tall = np.random.default_rng(0).normal(size=(50, 8))  # n > d: the dual (d×d) route
    k = diversity.normalize_rows(tall) @ diversity.normalize_rows(tall).T / 50
    eig = np.clip(np.linalg.eigvalsh(k), 1e-300, None)
    assert diversity.vendi_score(tall) == pytest.approx(np.exp(-(eig * np.log(eig)).sum()), rel=1e-9)


def test_vendi_metric_with_offline_extractor(tmp_path):
    metric = METRICS.build({"name": "vendi", "features": TEST_FE, "device": "cpu"})
    metric.check()
    same = images(1, 5).repeat(12, 1, 1, 1)
    assert metric.compute(same, ImageSet(same), tmp_path, tmp_path)["vendi"] == pytest.approx(1.0)
    assert metric.compute(images(12, 6), ImageSet(same), tmp_path, tmp_path)["vendi"] > 2.0
    assert METRICS.get("vendi").higher_is_better and metric.protocol()["feature_extractor"].startswith(TEST_FE)


def test_memorization_copies_and_random_samples(tmp_path):
    reference = DATASETS.build({"name": "digits"}).load()
    train = ImageSet(reference.images[:200])
    metric = METRICS.build({"name": "memorization", "features": TEST_FE, "device": "cpu"})
    copies = metric.compute(train.images[50:80], train, tmp_path, tmp_path / "cache")
    assert copies["nn_distance_mean"] == pytest.approx(0.0, abs=1e-9) and copies["memorized_fraction"] == 1.0
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 1
    noise = metric.compute(images(30, 7, size=16, channels=1), train, tmp_path, tmp_path / "cache")
    assert noise["nn_distance_mean"] > 0.1 and noise["nn_distance_median"] > 0.1
    assert noise["memorized_fraction"] == 0.0
    unseen = metric.compute(reference.images[1000:1030], train, tmp_path, tmp_path / "cache")
    assert 0 < unseen["nn_distance_mean"] < noise["nn_distance_mean"]  # real digits: near, but no copies
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 1  # one reference, one cache entry


def test_pixel_extractor_metrics_run_with_their_test_params(tmp_path):
    reference = DATASETS.build({"name": "digits"}).load()
    for name in ("vendi", "memorization"):
        cls = METRICS.get(name)
        values = cls(**cls.test_params).compute(reference.images[:100], reference, tmp_path, tmp_path)
        assert values and all(np.isfinite(v) for v in values.values())
