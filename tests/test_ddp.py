"""torchrun (gloo, CPU): two ranks train, sample, annotate and evaluate as one process does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ambient_bench import fileio
from ambient_bench.training.loop import CHECKPOINT, NETWORK, train
from test_training import CFG as TRAINING_CFG, NET as TRAINING_NET, training_set

# no dropout: its masks are drawn per rank, the one thing two ranks and one process draw differently
NET = {**TRAINING_NET, "attn_resolutions": [], "dropout": 0.0}
CFG = {**TRAINING_CFG, "seed": 5, "duration_kimg": 0.16, "warmup_kimg": 0.0}
STOP = 4


def test_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    shared = tmp_path / "two_ranks_then_one"
    shared.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(Path(__file__).parent / "ddp_worker.py"), str(shared), str(STOP)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "rank 1 of 2: stopped" in result.stdout and "rank 0 of 2: stopped" in result.stdout
    assert fileio.torch_load(shared / CHECKPOINT)["step"] == STOP and not (shared / NETWORK).exists()
    assert [p.name for p in shared.iterdir() if p.name.startswith("stats")] == ["stats.jsonl"]  # rank 0 only

    messages = []
    data = training_set()
    assert train(data, NET, CFG, shared, log=messages.append)
    assert messages == [f"resuming from checkpoint at step {STOP}"]
    single = tmp_path / "one_process"
    single.mkdir()
    assert train(data, NET, CFG, single, log=lambda m: None)
    a, b = fileio.torch_load(shared / NETWORK)["ema"], fileio.torch_load(single / NETWORK)["ema"]
    # the same global batches and draws; only the order of the float sums differs (DDP's all-reduce)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest |difference| of the final EMA weights: {worst:.2e}")
    assert worst < 1e-4, worst


TINY_SUITE = """
suite: tiny_ddp
defaults:
  dataset: {name: digits, resolution: 8}
  mix: {clean_fraction: 0.2, corruption: {name: gaussian_blur, sigma: 0.6}}
  method: all_data
  network: {model_channels: 8, channel_mult: [1, 2], num_blocks: 1}
  train: {batch: 16, duration_kimg: 0.064, checkpoint_kimg: 0.032, lr: 2.0e-3, ema_halflife_kimg: 0.05}
  sample: {num: 32, steps: 2, batch: 32}
  evaluate:
    metrics: [{name: fd_digits, epochs: 1}]
grid:
  method: [all_data, {name: filter_finetune, finetune_kimg: 0.032}]
"""


def test_suite_under_torchrun_and_filter_finetune_reuses_the_all_data_model(tmp_path):
    suite, runs, results = tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "results"
    suite.write_text(TINY_SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "ambient_bench", "run", str(suite), "--runs", str(runs), "--results", str(results)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("ran 10 stages") == 1  # rank 0 reports; rank 1 only trained beside it
    plan = subprocess.run([sys.executable, "-m", "ambient_bench", "plan", str(suite), "--runs", str(runs)],
                          capture_output=True, text=True, timeout=300)
    trains = [line.split() for line in plan.stdout.splitlines() if line.startswith("train ")]
    # two train stages for two cells: the all-data model is filter_finetune's starting point
    assert [(t[2], t[3]) for t in trains] == [("done", "2"), ("done", "1")], plan.stdout
    assert "from the pretrained model" in plan.stdout


SAMPLING_SUITE = """
suite: split_sampling
defaults:
  dataset: {name: digits, resolution: 8}
  mix: {clean_fraction: 1.0}
  method: clean_only
  network: {model_channels: 8, channel_mult: [1], num_blocks: 1}
  train: {batch: 16, duration_kimg: 0.064, checkpoint_kimg: 0.064}
  sample: {num: 70, steps: 3, batch: 16}
  evaluate:
    metrics: [{name: fd_digits, epochs: 1}]
"""


def one_process_then_two_ranks(tmp_path: Path, suite_text: str, again: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Run the suite in one process (runs in tmp_path/one, results in r1), copy its run store to
    tmp_path/two without the stage kinds in ``again``, and run it there under torchrun with 2 ranks."""
    import shutil

    suite = tmp_path / "s.yaml"
    suite.write_text(suite_text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AMBIENT_BENCH_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / "one"),
                          "--results", str(tmp_path / "r1")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    for kind in again:
        shutil.rmtree(tmp_path / "two" / kind)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / "two"),
                          "--results", str(tmp_path / "r2")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    return two


def test_sampling_is_split_across_ranks_and_equals_one_rank(tmp_path):
    # the trained model is kept: sampling and evaluation run again
    two = one_process_then_two_ranks(tmp_path, SAMPLING_SUITE, ("sample", "evaluate", "_refstats"))
    # 5 batches of 16 seeds (the last of 6): rank 0 takes batches 0, 2, 4 and rank 1 batches 1, 3
    assert "rank 0 of 2: sampled 38 images (3 of 5 batches)" in two.stdout
    assert "rank 1 of 2: sampled 32 images (2 of 5 batches)" in two.stdout
    # evaluation too: the 1,797 reference digits in 8 batches of 256 for fd_digits' features
    assert "rank 0 of 2: features of 1797 images: 4 of 8 batches" in two.stdout
    assert "rank 1 of 2: features of 1797 images: 4 of 8 batches" in two.stdout
    a = next((tmp_path / "one" / "sample").glob("*/samples.pt")).read_bytes()
    b = next((tmp_path / "two" / "sample").glob("*/samples.pt")).read_bytes()
    assert a == b  # bit-identical samples, in seed order
    import pandas as pd

    from ambient_bench.results.collect import PROVENANCE

    # the same numbers and configuration; when and how long each run took differ
    one, two_ranks = (pd.read_csv(tmp_path / r / "results.csv").drop(columns=list(PROVENANCE)) for r in ("r1", "r2"))
    pd.testing.assert_frame_equal(one, two_ranks)


def test_annotation_and_evaluation_work_is_split_across_ranks_and_equals_one_process(tmp_path):
    worker = str(Path(__file__).parent / "split_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, worker, str(tmp_path / "one.npz")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "rank" not in one.stdout  # one process: nothing split
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          worker, str(tmp_path / "two.npz")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    for line in ("features of 300 images: {} of 5 batches", "classifier on 10 images: 4 of 8 batches",
                 "crops classifier on 40 tiles: 3 of 6 batches", "laplacian_sharpness on 300 images: {} of 5 batches",
                 "laplacian_sharpness on 160 tiles: {} of 5 batches"):
        for rank, share in ((0, 3), (1, 2)):  # every rank works
            assert f"rank {rank} of 2: {line.format(share)}" in two.stdout, two.stdout
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(a) == sorted(b) == ["curves", "features", "patches", "quality", "tiles"]
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # bit-identical: each batch computed as in one process


EXIT_WORKER = """
import torch
import torch.distributed as dist

from ambient_bench import distributed

distributed.init_from_env()  # and nothing else: the group is left at exit (distributed.shutdown, atexit)
for i in range(20):
    dist.all_gather_object([None] * dist.get_world_size(), {i: torch.randn(64, 64)})
print(f"rank {dist.get_rank()} gathered", flush=True)
"""


def test_ranks_that_exit_after_their_collectives_leave_the_group_and_exit_cleanly(tmp_path):
    # without distributed.shutdown, this script (then ending with the gathers) died of SIGABRT
    # ("terminate called without an active exception") in 10 of 20 runs: two runs catch it 3 times in 4
    script = tmp_path / "exit_worker.py"
    script.write_text(EXIT_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 str(script)], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0 and "terminate called" not in result.stderr, result.stderr[-3000:]
        assert "rank 0 gathered" in result.stdout and "rank 1 gathered" in result.stdout


ANNOTATION_SUITE = """
suite: split_annotation
defaults:
  dataset: {name: digits, resolution: 8}
  mix: {clean_fraction: 0.5, corruption: {name: gaussian_blur, sigma: 1.0}}
  method: {name: ambient_o, annotate: classifier, num_sigmas: 64, trials: 2, annotate_batch: 512,
           max_dropped_fraction: 1.0, classifier: {duration_kimg: 2, batch: 64, model_channels: 8}}
  network: {model_channels: 8, channel_mult: [1], num_blocks: 1}
  train: {batch: 16, duration_kimg: 0.032}
  sample: {num: 16, steps: 2}
  evaluate: {metrics: [{name: fd_digits, epochs: 1}]}
"""


@pytest.mark.slow
def test_classifier_annotation_stage_under_torchrun_equals_one_process(tmp_path):
    two = one_process_then_two_ranks(tmp_path, ANNOTATION_SUITE, ("annotate",))  # only the annotation runs again
    assert "ran 1 stages" in two.stdout
    for rank in (0, 1):
        assert f"rank {rank} of 2: classifier on " in two.stdout
    [a], [b] = ((tmp_path / run / "annotate").glob("*/annotations.csv") for run in ("one", "two"))
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in b.parent.iterdir()) == sorted(p.name for p in a.parent.iterdir())
