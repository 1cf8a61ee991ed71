from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ambient_bench.allocator import retain_freed_memory

REPO = Path(__file__).resolve().parents[1]
retain_freed_memory()  # in-process training and sampling run as under the CLI (about 3× faster steps on CPU)


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m ambient_bench ...`` in a subprocess (the way users run it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ambient_bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite YAML (dedented) into tmp_path and return its path."""
    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path
    return write


# one small cell (digits 8×8, seconds to run); {name} and {results} to fill in
TINY_CELL = """
suite: {name}
results_dir: {results}
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 0.5, corruption: {{name: gaussian_blur, sigma: 0.6}}}}
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.2, checkpoint_kimg: 0.1}}
  sample: {{num: 32, steps: 4}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
"""


# the same cell at its shortest (one 0.064 kimg checkpoint, 16 samples): fault tests that only need stages to exist
SHORTEST_CELL = (TINY_CELL.replace("duration_kimg: 0.2, checkpoint_kimg: 0.1",
                                  "duration_kimg: 0.064, checkpoint_kimg: 0.064")
                 .replace("sample: {{num: 32, steps: 4}}", "sample: {{num: 16, steps: 2}}"))


TINY_SUITE = """
suite: tiny
results_dir: {results}
defaults:
  dataset: digits
  mix: {{clean_fraction: 0.1, corruption: {{name: gaussian_blur, sigma: 0.6}}}}
  method: {{name: ambient_o, sigma_min: 1.0}}
  network: {{model_channels: 8}}
  train: {{batch: 32, duration_kimg: 0.5, checkpoint_kimg: 0.25}}
  sample: {{num: 64, steps: 4}}
  evaluate:
    metrics: [{{name: fd_digits, epochs: 1}}]
grid:
  mix.corruption.sigma: [0.6, 1.0]
  method: [clean_only, all_data, {{name: ambient_o, sigma_min: 1.0}}]
  train.seed: [0, 1]
"""


# content fingerprints of data folders are cached per user (datasets/manifest.py); tests keep theirs apart
os.environ.setdefault("AMBIENT_BENCH_CACHE", tempfile.mkdtemp(prefix="ambient_bench_cache_"))
# tests never download pretrained weights (GBs from the real hosts); tests/test_weights.py lifts this for its
# loopback server only
os.environ.setdefault("AMBIENT_BENCH_OFFLINE", "1")


def numbers_of(path) -> str:
    """results.csv without its provenance columns (when, where and how long a stage ran differ run to run)."""
    import pandas as pd

    from ambient_bench.results.collect import PROVENANCE

    return pd.read_csv(path).drop(columns=list(PROVENANCE), errors="ignore").to_csv(index=False)
