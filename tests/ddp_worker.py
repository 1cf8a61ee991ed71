"""Run by tests/test_ddp.py under torchrun: a tiny training stage stopped after a few steps.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py RUN_DIR STOP_AT_STEP
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ambient_bench import distributed  # noqa: E402
from ambient_bench.training.loop import train  # noqa: E402
from test_ddp import CFG, NET  # noqa: E402
from test_training import training_set  # noqa: E402

if __name__ == "__main__":
    with distributed.process_group():
        assert distributed.world_size() > 1, "run me under torchrun"
        done = train(training_set(), NET, CFG, Path(sys.argv[1]), log=lambda m: None, stop_at_step=int(sys.argv[2]))
        print(f"rank {distributed.rank()} of {distributed.world_size()}: stopped, done={done}")
