"""Crops of the photographs that ship inside scikit-image and scikit-learn: natural images offline."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image

from ambient_bench.components import Dataset, ImageSet
from ambient_bench.datasets._paths import prepare
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset
from ambient_bench.seeding import numpy_rng

# Colour photographs of everyday scenes whose files are inside the installed packages (checked:
# these load without pooch or network). Left out on purpose: hubble_deep_field (mostly black
# sky), retina and immunohistochemistry (medical), greyscale and synthetic images, and the
# skimage images that need a download (lily, skin, ...). The label of a patch is its index here.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "china", "flower")


def _photo_array(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]  # the left view; the other two are a pair/disparity
    return getattr(skimage.data, name)()


@functools.lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
    """The photos of ``PHOTOS`` as RGB PIL images, decoded once per process."""
    return tuple(Image.fromarray(np.ascontiguousarray(_photo_array(n)[..., :3])).convert("RGB")
                 for n in PHOTOS)


@register_dataset("natural_patches")
class NaturalPatches(Dataset):
    """Square crops of 7 bundled photos (skimage + scikit-learn): natural images, no download.

    Patch i depends only on its own generator ``numpy_rng("natural-patches", i)`` (and on
    resolution and max_downscale), so it is the same whatever `count` is. The generator picks
    the photo (uniformly), a zoom factor f, log-uniform in [1, max_downscale], and a crop of
    side round(resolution·f) (at most the photo's short side) at a uniform position; the crop
    is resized to `resolution` with LANCZOS. Cropping f times larger and shrinking equals
    downscaling the photo by f first: without it, 32×32 crops of 512-pixel photos would all be
    close-ups of texture, with it some patches show whole objects. Labels = photo index in
    PHOTOS (astronaut, chelsea, coffee, rocket, motorcycle, china, flower).
    """

    version = 1
    needs_files = False
    params = {
        "resolution": Param(32, "patch size in pixels (square)", kind=int, ge=8),
        "count": Param(2000, "number of patches", kind=int, ge=1),
        "channels": Param(3, "3 = RGB, 1 = greyscale (PIL 'L')", kind=int, choices=(1, 3)),
        "max_downscale": Param(4.0, "largest zoom-out factor (1 = crops at full resolution)", ge=1.0),
    }
    test_params = {"resolution": 16, "count": 16}

    def patch(self, index: int) -> tuple[int, np.ndarray]:
        """(photo index, uint8 C×H×W) of patch ``index``."""
        rng = numpy_rng("natural-patches", index)
        # The draw order is fixed (photo, zoom, x, y): changing it changes every patch.
        which = int(rng.integers(len(PHOTOS)))
        zoom = math.exp(rng.uniform(0.0, math.log(self.p.max_downscale)))
        photo = photos()[which]
        width, height = photo.size
        side = min(round(self.p.resolution * zoom), width, height)
        left = int(rng.integers(width - side + 1))
        top = int(rng.integers(height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        return which, prepare(crop, self.p.resolution, self.p.channels)

    def count(self) -> int | None:
        return self.p.count

    def load(self) -> ImageSet:
        labels, images = zip(*(self.patch(i) for i in range(self.p.count)))
        return ImageSet(images=torch.from_numpy(np.stack(images)),
                        labels=torch.tensor(labels, dtype=torch.int64))
