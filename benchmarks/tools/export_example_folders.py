"""Write a user-style dataset to disk: good images, bad images, out-of-distribution images.

    python benchmarks/tools/export_example_folders.py --out data/example_folders
    python -m ambient_bench run benchmarks/user_folders_example.yaml

Stands in for your own data: the harness is then told only which folder is which, not how
the bad images were made. The 1797 digits are split by the usual per-image coin: 10% go to
high_quality/, the rest are degraded (by default Gaussian blur, sigma 1.0, at 16×16) and go to
low_quality/; procedural dead-leaves images go to out_of_distribution/. Images sit in one
subfolder per class so that `labels_from_subfolders` can give the metric its labels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from ambient_bench.config.schema import ComponentRef
from ambient_bench.config.yamlio import parse_scalar
from ambient_bench.data.mixing import mix
from ambient_bench.registry import CORRUPTIONS, DATASETS


def save(images: torch.Tensor, folder: Path, classes: list[str]) -> None:
    for i, (image, name) in enumerate(zip(images, classes)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(folder / name / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/example_folders")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--clean-fraction", type=float, default=0.1)
    parser.add_argument("--degrade", default="{name: gaussian_blur, sigma: 1.0}", help="corruption spec (YAML)")
    parser.add_argument("--ood-count", type=int, default=300)
    args = parser.parse_args()
    out = Path(args.out)
    digits = DATASETS.build({"name": "digits", "resolution": args.resolution}).load()
    corruption = CORRUPTIONS.build(ComponentRef("corruption").resolve(parse_scalar(args.degrade), ()))
    pool = mix(digits, args.clean_fraction, [corruption], seed=0)
    labels = [str(int(label)) for label in digits.labels]
    good = (~pool.corrupted).nonzero().flatten().tolist()
    bad = pool.corrupted.nonzero().flatten().tolist()
    save(pool.images[good], out / "high_quality", [labels[i] for i in good])
    save(pool.images[bad], out / "low_quality", [labels[i] for i in bad])
    leaves = DATASETS.build({"name": "dead_leaves", "resolution": args.resolution, "channels": 1,
                             "count": args.ood_count}).load()
    save(leaves.images, out / "out_of_distribution", ["leaves"] * len(leaves))
    print(f"wrote {len(good)} high-quality, {len(bad)} low-quality and {len(leaves)} out-of-distribution "
          f"images under {out}/")


if __name__ == "__main__":
    main()
