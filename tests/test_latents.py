"""Latent space (issue 18): VAE latents in shards, streamed to training exactly as if held in memory."""
from __future__ import annotations

import numpy as np
import torch

from ambient_bench.latents.shards import LatentArrays, LatentShards, write_meta, write_shards
from ambient_bench.training import batches
from ambient_bench.training.stream import AdmissibleStream

CFG = {"seed": 3, "batch": 6, "P_mean": -0.4, "P_std": 1.0}


def _arrays(n: int = 23) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {name: torch.randn(n, 4, 4, 4, generator=g).half() for name in ("mean", "mean_flip")}
    out.update({name: torch.rand(n, 4, 4, 4, generator=g).half() for name in ("std", "std_flip")})
    return out


def test_streamed_shards_give_the_batches_of_in_memory_latents(tmp_path):
    tensors = _arrays()
    n = len(tensors["mean"])
    write_shards(tmp_path, n, 5, lambda rows: {k: v[rows.start:rows.stop] for k, v in tensors.items()},
                 log=lambda s: None)
    write_meta(tmp_path, n, 5, [4, 4, 4], list(tensors), [0.5, 0, 0, 0], [2.0, 1, 1, 1])
    sources = [LatentShards(tmp_path), LatentArrays(tensors, [0.5, 0, 0, 0], [2.0, 1, 1, 1])]
    rows = torch.arange(n).flip(0)[:19]  # training row i reads pool row rows[i]: not the identity
    got = []
    for source in sources:
        stream = AdmissibleStream(np.zeros(len(rows)), np.zeros(len(rows)), 1.0, CFG["seed"])
        got.append(list(batches.from_latents(source, rows, rows, stream, CFG, range(4), slice(None), False,
                                             torch.device("cpu"))))
    for a, b in zip(*got):
        assert a.step == b.step and np.array_equal(a.indices, b.indices)
        assert torch.equal(a.x0, b.x0) and torch.equal(a.z, b.z)
    assert not torch.equal(got[0][0].x0, got[0][1].x0)  # each step draws its own rows and noise


def test_an_interrupted_encode_keeps_its_finished_shards(tmp_path):
    tensors = _arrays(12)
    calls = []

    def encode(rows):
        calls.append(rows.start)
        return {k: v[rows.start:rows.stop] for k, v in tensors.items()}

    write_shards(tmp_path, 12, 5, encode, log=lambda s: None)
    (tmp_path / "shard-00001.safetensors").unlink()  # as if killed while writing the second shard
    calls.clear()
    write_shards(tmp_path, 12, 5, encode, log=lambda s: None)
    assert calls == [5]


def test_the_tiny_vae_round_trips_shapes_and_the_scaling_inverts():
    from ambient_bench.latents.vae import decode, encode_moments, from_model, load_vae, to_model

    vae = load_vae("tiny")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = encode_moments(vae, images)
    assert mean.shape == std.shape == (2, 4, 8, 8) and (std > 0).all()
    raw_mean, raw_std = torch.tensor([1.0, 0, -1, 2]), torch.tensor([4.0, 1, 2, 3])
    assert torch.allclose(from_model(to_model(mean, raw_mean, raw_std), raw_mean, raw_std), mean, atol=1e-5)
    assert to_model(mean, raw_mean, raw_std).shape == mean.shape
    out = decode(vae, to_model(mean, raw_mean, raw_std), raw_mean, raw_std)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(load_vae("tiny").encoder.conv_in.weight, vae.encoder.conv_in.weight)  # built the same each time


def test_missing_vae_weights_stop_run_offline_with_one_line_naming_files_and_folder(tmp_path, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\ndefaults:\n  dataset: {name: natural_patches, resolution: 32, count: 16}\n"
                     "  mix: {clean_fraction: 1.0}\n  method: clean_only\n  latent: {vae: sd-vae-ft-mse}\n"
                     "  network: {preset: edm2_tiny}\n  train: {duration_kimg: 0.1}\n"
                     "  evaluate: {metrics: [fd_bandpass]}\n")
    result = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "diffusion_pytorch_model.safetensors" in line and "models--stabilityai--sd-vae-ft-mse" in line
    assert "offline (" in line and "weights fetch sd_vae" in line
    assert not (tmp_path / "runs").exists()
    # plan never needs the weights: the latents stage's key holds the pinned sha256 until the file is cached
    result = run_cli("plan", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0 and "weights not in the cache yet: sd_vae" in result.stdout, result.stderr
