"""The CLI's malloc settings remove the page faults of re-allocating CPU activations."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ambient_bench.allocator import USER_SETTINGS

# Three batched annotation passes and a few loop calls (the perf script's mix of large and small
# blocks) after one warm-up; prints the minor page faults of the timed part.
WORKLOAD = """
import json, resource, sys, torch
from ambient_bench.allocator import retain_freed_memory
from ambient_bench.annotation.classifier_net import build_classifier
from ambient_bench.annotation.sigma_min import classifier_probabilities, classifier_probabilities_looped, lognormal_grid
applied = retain_freed_memory() if sys.argv[1] == "tuned" else False
torch.manual_seed(0)
net = build_classifier({"preset": "cpu"}, 1, 16).eval().requires_grad_(False).to(memory_format=torch.channels_last)
images, indices, sigmas = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8), lognormal_grid(64)
def work():
    classifier_probabilities(net, images, indices, sigmas, 4, 0, batch=256)
    classifier_probabilities_looped(net, images[:1], indices[:1], sigmas[:8], 4, 0)
work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    work()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_memory_removes_the_page_faults_of_cpu_forward_passes():
    tuned = _faults("tuned")
    if not tuned["applied"]:
        pytest.skip("not glibc: the allocator settings do not apply")
    default = _faults("default")
    if default["faults"] < 10_000:  # seen here: ~165,000 (activations faulted in again on every pass)
        pytest.skip(f"this C library reuses freed blocks by default ({default['faults']} faults): nothing to remove")
    assert tuned["faults"] < default["faults"] / 20


def test_a_users_own_allocator_settings_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    from ambient_bench.allocator import retain_freed_memory

    assert retain_freed_memory() is False
