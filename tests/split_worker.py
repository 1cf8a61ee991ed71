"""Run by tests/test_ddp.py, in one process or under torchrun: the work that splits across ranks
(feature extraction, noise-classifier curves, crops-classifier tiles, quality scores), written
by rank 0 to OUT.npz so that the test can compare one process with two ranks bit for bit.

    python tests/split_worker.py OUT.npz
    torchrun --standalone --nproc_per_node=2 tests/split_worker.py OUT.npz
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from ambient_bench import distributed
from ambient_bench.annotation.classifier_net import build_classifier
from ambient_bench.annotation.crops import tile_probabilities
from ambient_bench.annotation.quality import build_scorer, patch_scores
from ambient_bench.annotation.sigma_min import classifier_probabilities, lognormal_grid
from ambient_bench.metrics import features, offline  # noqa: F401 — registers the band-pass extractor


def work() -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 16, 16), generator=g, dtype=torch.uint8)
    torch.manual_seed(1)
    classifier = build_classifier({"preset": "cpu", "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1},
                                  3, 16).eval().requires_grad_(False)
    model_space = images[:10].float() / 127.5 - 1
    scorer = build_scorer("laplacian_sharpness")
    return {
        "features": features.extract(images, offline.EXTRACTOR, offline.LAYER, torch.device("cpu"), batch=64),
        # 128 levels = 2 noise blocks, 3 images per pass: 8 passes
        "curves": classifier_probabilities(classifier, model_space, torch.arange(10), lognormal_grid(128), trials=2,
                                           seed=3, batch=384),
        "tiles": tile_probabilities(classifier, model_space, 8, torch.Generator().manual_seed(4), batch=7).numpy(),
        "quality": scorer.score(images, batch=64),
        "patches": patch_scores(scorer, images[:40], 8, batch=32),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    with distributed.process_group():  # left before exit: the process ends cleanly, not by SIGABRT
        with distributed.splitting():
            results = work()
        if distributed.is_main():
            np.savez(sys.argv[1], **results)
