"""FID parity: the harness's ``fid`` (torch-fidelity inception-v3-compat) against clean-fid ``legacy_tensorflow``.

    python benchmarks/tools/fid_parity.py [DIR1 DIR2] [--count 2000] [--device auto]

Both run the TF1 ``inception-2015-12-05`` graph with TF-style resizing, so on the same PNG
folders they should agree to about 1e-5 relative (see ambient_bench/metrics/inception.py).
Without folders, two disjoint sets of ``natural_patches`` (32×32) are written as PNGs first.

Needs two weight files, neither downloaded here (`python -m ambient_bench weights fetch inception
cleanfid_inception` fetches both, sha256-checked):
  torch-fidelity: $TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth
  clean-fid:      /tmp/inception-2015-12-05.pt (clean-fid hard-codes that path on Linux)
Exit status: 2 when a file is missing (each named), 0 otherwise; without clean-fid installed
only our FID is printed (exit 0).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ambient_bench import weights
from ambient_bench.components import ImageSet
from ambient_bench.metrics import inception
from ambient_bench.registry import DATASETS, METRICS

CLEANFID = weights.REGISTRY["cleanfid_inception"]
CLEANFID_URL = CLEANFID.url


def cleanfid_weights() -> Path:
    # cleanfid/features.py: path = "./" on Windows else "/tmp" (not tempfile.gettempdir())
    return CLEANFID.path()


def load_folder(folder: Path) -> torch.Tensor:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def write_folder(images: torch.Tensor, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(folder / f"{i:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="two image folders (default: natural_patches)")
    parser.add_argument("--count", type=int, default=2000, help="images per set without folders")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    if len(args.folders) not in (0, 2):
        parser.error("give two folders or none")

    ours, theirs = inception.default_weights_path(), cleanfid_weights()
    missing = [(p, url) for p, url in ((ours, inception.WEIGHTS_URL), (theirs, CLEANFID_URL)) if not p.is_file()]
    if missing:
        for path, url in missing:
            print(f"missing: {path} (download {url} to that path)", file=sys.stderr)
        print("offline: put the files above in place (TORCH_HOME moves the first one), or run `python -m "
              "ambient_bench weights fetch inception cleanfid_inception`", file=sys.stderr)
        sys.exit(2)

    with tempfile.TemporaryDirectory() as tmp:
        folders = args.folders
        if not folders:
            images = DATASETS.build({"name": "natural_patches", "resolution": 32, "count": 2 * args.count}).load()
            folders = [Path(tmp) / "set1", Path(tmp) / "set2"]
            write_folder(images.images[:args.count], folders[0])
            write_folder(images.images[args.count:], folders[1])
        # the same PNG files feed both implementations; set2 plays the reference
        metric = METRICS.build({"name": "fid", "device": args.device})
        ours_fid = metric.compute(load_folder(folders[0]), ImageSet(load_folder(folders[1])), Path(tmp),
                                  Path(tmp) / "refstats")["fid"]
        print(f"ambient_bench fid (torch-fidelity inception-v3-compat): {ours_fid:.6f}")
        try:
            from cleanfid import fid as cleanfid_fid
        except ImportError:
            print("clean-fid is not installed (pip install clean-fid==0.1.35): no comparison made")
            return
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        their_fid = cleanfid_fid.compute_fid(str(folders[0]), str(folders[1]), mode="legacy_tensorflow",
                                             device=device, num_workers=0, use_dataparallel=False)
    print(f"clean-fid legacy_tensorflow:                            {their_fid:.6f}")
    print(f"relative difference: {abs(ours_fid - their_fid) / max(abs(their_fid), 1e-12):.3e}")


if __name__ == "__main__":
    main()
