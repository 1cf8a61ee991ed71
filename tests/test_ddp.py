"""torchrun (gloo, CPU): two ranks train a tiny stage; one process resumes their checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_sampling_is_split_across_ranks_and_equals_one_rank(tmp_path):
    import shutil

    suite = tmp_path / "s.yaml"
    suite.write_text(SAMPLING_SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AMBIENT_BENCH_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / "one"),
                          "--results", str(tmp_path / "r1")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    for kind in ("sample", "evaluate"):  # the trained model is kept: only sampling and evaluation run again
        shutil.rmtree(tmp_path / "two" / kind)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / "two"),
                          "--results", str(tmp_path / "r2")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    # 5 batches of 16 seeds (the last of 6): rank 0 takes batches 0, 2, 4 and rank 1 batches 1, 3
    assert "rank 0 of 2: sampled 38 images (3 of 5 batches)" in two.stdout
    assert "rank 1 of 2: sampled 32 images (2 of 5 batches)" in two.stdout
    a = next((tmp_path / "one" / "sample").glob("*/samples.pt")).read_bytes()
    b = next((tmp_path / "two" / "sample").glob("*/samples.pt")).read_bytes()
    assert a == b  # bit-identical samples, in seed order
    assert (tmp_path / "r1" / "results.csv").read_text() == (tmp_path / "r2" / "results.csv").read_text()
