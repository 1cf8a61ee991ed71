"""EMA snapshots: each one sampled and evaluated; the table reports the best (paper) or the last."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

SUITE = """
suite: snapshots
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 0.2, corruption: {{name: gaussian_blur, sigma: 0.6}}}}
  method: {{name: ambient_o, sigma_min: 1.0}}
  network: {{model_channels: 8}}
  train: {{batch: 16, duration_kimg: 0.096, checkpoint_kimg: 0.032, snapshot_kimg: 0.032, lr: 2.0e-3,
          ema_halflife_kimg: 0.02}}
  sample: {{num: 48, steps: 3}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}], select: {select}}}
grid:
  train.seed: [0]
"""


def test_every_snapshot_is_evaluated_and_the_selection_is_recorded(tmp_path):
    runs = tmp_path / "runs"
    frames = {}
    for select in ("best", "last"):
        suite = tmp_path / f"{select}.yaml"
        suite.write_text(SUITE.format(select=select))
        result = run_cli("run", str(suite), "--runs", str(runs), "--results", str(tmp_path / select))
        assert result.returncode == 0, result.stderr[-3000:]
        frames[select] = pd.read_csv(tmp_path / select / "results.csv").set_index("quantity")
    plan = run_cli("plan", str(tmp_path / "best.yaml"), "--runs", str(runs)).stdout
    # snapshots after 2 and 4 steps (0.032 and 0.064 kimg) and the final network after 6
    assert "snapshot at 0.032 kimg" in plan and "snapshot at 0.064 kimg" in plan
    assert sorted(p.name for p in (runs / "train").glob("*/snapshot-*.pt")) == \
        ["snapshot-000000032.pt", "snapshot-000000064.pt"]
    evaluations = {}
    for summary in (runs / "evaluate").glob("*/summary.json"):
        evaluations[summary.parent.name] = pd.read_json(summary, typ="series")["values"]["fd_digits"]
    assert len(evaluations) == 3
    best, last = frames["best"].loc["fd_digits"], frames["last"].loc["fd_digits"]
    assert best["value"] == pytest.approx(min(evaluations.values()), rel=1e-5)
    assert "best fd_digits of 3 snapshots" in best["checkpoint"]
    assert "last of 3 snapshots" in last["checkpoint"]
    final_key = last["stage_key"]
    assert last["value"] == pytest.approx(evaluations[final_key], rel=1e-5)


def test_snapshot_range_limits_which_snapshots_are_sampled():
    """The stage graph only: snapshots outside evaluate.snapshot_range_kimg get no sample/evaluate stages."""
    from ambient_bench.config.schema import EVALUATE, TRAIN
    from ambient_bench.engine.cells import evaluated_snapshots

    train = TRAIN.resolve({"batch": 512, "duration_kimg": 20070.4, "snapshot_kimg": 1003.52}, ("train",))
    assert len(evaluated_snapshots(train, EVALUATE.resolve({"metrics": ["fd_digits"]}, ("evaluate",)))) == 19
    picked = evaluated_snapshots(train, EVALUATE.resolve({"metrics": ["fd_digits"], "snapshot_range_kimg":
                                                          [5017.6, 20070.4]}, ("evaluate",)))
    assert picked[0] == pytest.approx(5017.6) and len(picked) == 15  # 5..19 Mimg; the final (20) always counts
