"""How much noise hides a blur? A quick probe used to pick the fixed sigma_min of a suite.

For each noise level sigma, a logistic regression on the log power spectrum of noisy images
tries to tell clean digits from blurred ones (3-fold cross-validated accuracy). The level
where accuracy falls to 0.55 is the paper's threshold 0.5 + epsilon (epsilon = 0.05) for a
classifier of this simple kind; ``mini_table2a.yaml`` uses it as its fixed annotation.
It is a probe, not the paper's noise classifier (that is a trained network, issue 4).

    python benchmarks/tools/spectral_probe.py --blur 0.6 1.0
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from ambient_bench.data.mixing import mix
from ambient_bench.registry import CORRUPTIONS, DATASETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blur", type=float, nargs="+", default=[0.6, 1.0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args()
    data = DATASETS.build({"name": "digits", "resolution": args.resolution}).load()
    clean = data.images.float() / 127.5 - 1
    labels = np.r_[np.zeros(len(clean)), np.ones(len(clean))]
    for blur_sigma in args.blur:
        blurred = mix(data, 0.0, CORRUPTIONS.build({"name": "gaussian_blur", "sigma": blur_sigma}), 0).images
        blurred = blurred.float() / 127.5 - 1
        generator = torch.Generator().manual_seed(0)
        print(f"blur sigma {blur_sigma}:")
        for sigma in args.sigmas:
            noisy = torch.cat([clean + sigma * torch.randn(clean.shape, generator=generator),
                               blurred + sigma * torch.randn(clean.shape, generator=generator)])
            power = np.abs(np.fft.rfft2(noisy[:, 0].numpy())) ** 2
            features = np.log(power.reshape(len(power), -1) + 1e-6)
            accuracy = cross_val_score(LogisticRegression(max_iter=2000), features, labels, cv=3).mean()
            print(f"  noise sigma {sigma:4.2f}: accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
