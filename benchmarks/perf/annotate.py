"""Classifier annotation throughput: the batched search against a per-image loop over the same grid.

    python benchmarks/perf/annotate.py [--images 32] [--num-sigmas 64] [--trials 4] [--resolution 16]

Both sides evaluate the same classifier on the same images, grid and noise (the probabilities
agree to float precision, printed), timed in the same process, best of ``--repeats``. The
loop is the straightforward implementation: one image at a time, one noise level at a time,
its T noisy copies in one forward pass. Target (issue 4): ratio ≥ 10×.

The classifier is the CPU preset with its initial weights: a forward pass costs the same
whether or not it was trained, and the timing is what is measured here.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from ambient_bench.annotation.classifier_net import build_classifier, parameter_count
from ambient_bench.annotation.sigma_min import (classifier_probabilities, classifier_probabilities_looped,
                                                lognormal_grid)
from ambient_bench.data.images import uint8_to_model
from ambient_bench.registry import DATASETS
from timing import best_time  # benchmarks/perf/timing.py: the script's folder is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--num-sigmas", type=int, default=64)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024, help="classifier inputs per batched forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    data = DATASETS.build({"name": "digits", "resolution": args.resolution}).load()
    images = uint8_to_model(data.images[:args.images]).to(device)
    indices = torch.arange(args.images)
    torch.manual_seed(0)
    classifier = build_classifier({"preset": "cpu"}, 1, args.resolution).eval().requires_grad_(False)
    # the layout load_classifier gives the annotate stage's network, used by both sides
    classifier = classifier.to(device, memory_format=torch.channels_last)
    sigmas = lognormal_grid(args.num_sigmas)

    batched = classifier_probabilities(classifier, images, indices, sigmas, args.trials, seed=0, batch=args.batch)
    looped = classifier_probabilities_looped(classifier, images, indices, sigmas, args.trials, seed=0)
    t_batched = best_time(lambda: classifier_probabilities(classifier, images, indices, sigmas, args.trials, 0,
                                                           batch=args.batch), args.repeats)
    t_looped = best_time(lambda: classifier_probabilities_looped(classifier, images, indices, sigmas, args.trials, 0),
                         args.repeats)
    evaluations = args.images * args.num_sigmas * args.trials
    print(f"classifier: CPU preset, {parameter_count(classifier):,} parameters, {args.resolution}×{args.resolution} "
          f"digits; {args.images} images × {args.num_sigmas} levels × {args.trials} trials = {evaluations:,} "
          f"noisy inputs; device {device}, {torch.get_num_threads()} threads")
    print(f"batched ({args.batch} inputs per pass): {t_batched:.3f} s = {evaluations / t_batched:,.0f} inputs/s")
    print(f"per-image, per-level loop:   {t_looped:.3f} s = {evaluations / t_looped:,.0f} inputs/s")
    print(f"ratio: {t_looped / t_batched:.1f}×   max |P_batched - P_loop| = {np.abs(batched - looped).max():.1e}")


if __name__ == "__main__":
    main()
