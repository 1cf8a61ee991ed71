"""scikit-learn's bundled handwritten digits: real data that needs no download."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from ambient_bench.components import Dataset, ImageSet
from ambient_bench.data.images import to_uint8
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset


@register_dataset("digits")
class Digits(Dataset):
    """1797 handwritten digits (UCI, shipped with scikit-learn), 8×8 upsampled, 1 channel.

    The 0..16 grey levels map to [0, 1], are resized to `resolution` and stored as uint8;
    the diffusion model sees them in [-1, 1]. Labels are the digit classes 0..9.
    """

    version = 1
    params = {
        "resolution": Param(16, "output size in pixels (square)", kind=int, ge=8),
        "resample": Param("bilinear", "upsampling filter", kind=str,
                          choices=("bilinear", "bicubic", "nearest")),
        "classes": Param(None, "keep only these digit classes (null = all ten); e.g. a target class "
                               "and, as a second dataset, an out-of-distribution one", kind=list, item=int,
                         nullable=True, check=lambda v: None if v and all(0 <= c <= 9 for c in v)
                         else "expected a non-empty list of digits 0..9"),
    }
    test_params = {"resolution": 16}

    def _digits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(float64 N×8×8 grey levels 0..16, int64 labels N) of the kept classes."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        labels = torch.from_numpy(bunch.target).long()
        keep = torch.ones(len(labels), dtype=torch.bool) if self.p.classes is None \
            else torch.isin(labels, torch.tensor(self.p.classes))
        return torch.from_numpy(bunch.images)[keep], labels[keep]

    def count(self) -> int | None:
        return len(_labels() if self.p.classes is None else [c for c in _labels() if c in self.p.classes])

    def load(self) -> ImageSet:
        pixels, labels = self._digits()
        x = pixels.float().div(16.0).unsqueeze(1)  # N×1×8×8 in [0, 1]
        size = (self.p.resolution, self.p.resolution)
        if self.p.resample == "nearest":
            x = F.interpolate(x, size=size, mode="nearest-exact")
        else:
            x = F.interpolate(x, size=size, mode=self.p.resample, align_corners=False)
        return ImageSet(images=to_uint8(x.clamp(0, 1)), labels=labels)


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[int, ...]:
    """The digits' labels, read from scikit-learn's bundled CSV without importing scikit-learn
    (whose datasets package costs half a second of CPU; ``plan`` only counts the images)."""
    import gzip
    import importlib.util

    folder = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    with gzip.open(Path(folder) / "datasets" / "data" / "digits.csv.gz", "rt") as rows:
        return tuple(int(float(row.rsplit(",", 1)[1])) for row in rows if row.strip())
