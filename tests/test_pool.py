"""Pools streamed from disk (data/pool.py) are the pools built in memory, and train the same model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import numbers_of
import torch
from PIL import Image

from ambient_bench import CORRUPTIONS, DATASETS, fileio
from ambient_bench.data import pool
from ambient_bench.data.mixing import layout, mix
from ambient_bench.training.loop import NETWORK, train

CORRUPTION_SPECS = [{"name": "gaussian_blur", "sigma": 1.0}, {"name": "jpeg", "quality": 20}]


def write_images(folder, count, seed, classes=("a", "b")):
    """PNGs of varied sizes (so the centre crop and LANCZOS resize run) in class subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        size = (20 + i % 5, 18 + i % 3)
        smooth = rng.random((3, 3, 3)) * 255
        pixels = np.kron(smooth, np.ones((8, 8, 1)))[:size[1], :size[0]] + rng.normal(0, 20, (size[1], size[0], 3))
        sub = folder / classes[i % len(classes)]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(sub / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    return write_images(root / "target", 96, 0), write_images(root / "ood", 24, 1, classes=("x",))


def test_streamed_rows_are_the_in_memory_pool(folders):
    target = DATASETS.build({"name": "image_folder", "path": str(folders[0]), "resolution": 16,
                             "labels_from_subfolders": True})
    ood = DATASETS.build({"name": "image_folder", "path": str(folders[1]), "resolution": 16})
    corruptions = [CORRUPTIONS.build(c) for c in CORRUPTION_SPECS]
    source = target.load()
    mixed = mix(source, 0.3, corruptions, seed=7, ood_sources=[ood.load()])
    readers = [target.reader(), ood.reader()]
    assert torch.equal(readers[0].labels, source.labels)
    plan = layout(len(readers[0]), torch.zeros(len(readers[0]), dtype=torch.int8), readers[0].labels, 0.3, 2, 7,
                  [len(readers[1])])
    for name in ("corrupted", "ood", "corruption", "labels"):
        assert torch.equal(getattr(plan, name), getattr(mixed, name)), name
    assert torch.equal(plan.rows, mixed.index)
    assert set(mixed.corruption.tolist()) == {-1, 0, 1}  # both corruptions, clean images and OOD ones occur
    images = pool.PoolImages(readers, corruptions, 7, plan)
    streamed = pool.LazyImages(images)
    assert streamed.shape == mixed.images.shape
    assert torch.equal(streamed[torch.ones(len(streamed), dtype=torch.bool)], mixed.images)  # every row, 2 workers
    assert torch.equal(torch.stack([images[j][1] for j in range(len(images))]), mixed.noise)
    assert pool.content_hash(readers[0], workers=2) == source.content_hash()


def test_streamed_training_resumes_to_the_in_memory_weights(folders, tmp_path):
    """The loader runs ahead of training: the checkpoint must hold the stream state of its own step."""
    target = DATASETS.build({"name": "image_folder", "path": str(folders[0]), "resolution": 8})
    corruptions = [CORRUPTIONS.build(c) for c in CORRUPTION_SPECS]
    mixed = mix(target.load(), 0.3, corruptions, seed=3)
    n = len(mixed.index)
    common = {"sigma_min": torch.where(mixed.corrupted, 1.0, 0.0).float(), "sigma_max": torch.zeros(n),
              "labels": None, "index": mixed.index}
    in_memory = {**common, "images": mixed.images, "noise": mixed.noise}
    plan = layout(n, torch.zeros(n, dtype=torch.int8), None, 0.3, 2, 3)
    streamed = {**common, "images": None, "noise": None, "pool_rows": torch.arange(n),
                "pool_images": pool.PoolImages([target.reader()], corruptions, 3, plan)}
    net = {"preset": "cpu", "model_channels": 8, "channel_mult": [1], "num_blocks": 1, "attn_resolutions": [],
           "dropout": 0.0}
    from test_training import CFG
    cfg = {**CFG, "batch": 8, "duration_kimg": 0.08, "checkpoint_kimg": 0.024, "loader_workers": 2}
    (tmp_path / "memory").mkdir()
    (tmp_path / "disk").mkdir()
    assert train(in_memory, net, cfg, tmp_path / "memory", log=lambda m: None)
    assert not train(streamed, net, cfg, tmp_path / "disk", log=lambda m: None, stop_at_step=4)
    # resumes from the step-4 checkpoint, written while the loader had drawn batches beyond it
    assert train(streamed, net, cfg, tmp_path / "disk", log=lambda m: None)
    a, b = (fileio.torch_load(tmp_path / d / NETWORK)["ema"] for d in ("memory", "disk"))
    assert all(torch.equal(a[k], b[k]) for k in a)


SUITE = """
suite: streamed
defaults:
  dataset: {{name: image_folder, path: {target}, resolution: 8}}
  mix: {{clean_fraction: 0.3, corruption: {{name: gaussian_blur, sigma: 1.0}},
        ood: [{{name: image_folder, path: {ood}, resolution: 8}}]}}
  method: {{name: ambient_o, sigma_min: 1.0, ood_sigma_max: 0.2}}
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 16, duration_kimg: 0.064, checkpoint_kimg: 0.032}}
  sample: {{num: 16, steps: 2}}
  evaluate: {{metrics: [fd_bandpass]}}
grid:
  method:
    - {{name: ambient_o, sigma_min: 1.0, ood_sigma_max: 0.2}}
    # reads the pixels it scores (LazyImages) for the classifier and the annotation
    - {{name: ambient_o, annotate: classifier, num_sigmas: 32, trials: 1, max_dropped_fraction: 1.0,
       classifier: {{duration_kimg: 0.5, batch: 32, model_channels: 8, min_auc: 0.0}}}}
"""


@pytest.mark.slow
def test_a_suite_streamed_from_disk_gives_the_in_memory_results(folders, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(target=folders[0], ood=folders[1]))
    outputs = {}
    for name, limit in (("memory", "8"), ("disk", "0")):
        env = {**os.environ, "AMBIENT_BENCH_IN_MEMORY_GB": limit, "AMBIENT_BENCH_LOADER_WORKERS": "2",
               "AMBIENT_BENCH_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs",
                                 str(tmp_path / name), "--results", str(tmp_path / f"r-{name}")],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        outputs[name] = result.stdout
    assert "streaming the pool from disk" in outputs["disk"] and "streaming" not in outputs["memory"]
    mixes = sorted((tmp_path / "disk" / "mix").iterdir())
    assert len(mixes) == 2  # the training pool and the classifier's 50/50 pool
    for folder in mixes:
        assert json.loads((folder / "summary.json").read_text())["streamed"] is True
        assert fileio.torch_load(folder / "mixed.pt")["images"] is None  # the layout only: no pixels stored
    for kind, name in (("train", "network.pt"), ("classifier", "classifier.pt")):
        a, b = (sorted((tmp_path / d / kind).glob(f"*/{name}")) for d in ("memory", "disk"))
        assert len(a) == len(b) == (2 if kind == "train" else 1)
        for x, y in zip(a, b):
            ema_a, ema_b = fileio.torch_load(x)["ema"], fileio.torch_load(y)["ema"]
            assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert numbers_of(tmp_path / "r-memory" / "results.csv") == numbers_of(tmp_path / "r-disk" / "results.csv")


@pytest.mark.slow
def test_under_torchrun_each_rank_streams_its_slice_and_the_weights_are_the_in_memory_ones(folders, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(target=folders[0], ood=folders[1]).split("grid:")[0])
    for name, limit in (("memory", "8"), ("disk", "0")):
        env = {**os.environ, "AMBIENT_BENCH_IN_MEMORY_GB": limit, "AMBIENT_BENCH_LOADER_WORKERS": "1",
               "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / name),
                                 "--results", str(tmp_path / f"r-{name}")],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    [a], [b] = ((tmp_path / d / "train").glob("*/network.pt") for d in ("memory", "disk"))
    ema_a, ema_b = fileio.torch_load(a)["ema"], fileio.torch_load(b)["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
