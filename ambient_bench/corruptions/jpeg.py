"""JPEG compression at a given quality factor through PIL (the paper's "JPEG (Q)" corruption)."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ambient_bench.components import Corruption
from ambient_bench.data.images import to_uint8
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one uint8 H×W (mode "L") or H×W×3 (mode "RGB") array in memory.

    Only ``quality`` is set, so PIL's defaults hold: libjpeg's standard tables scaled by the
    quality, 4:2:0 chroma subsampling for RGB, no optimised Huffman tables.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded).copy()


def jpeg_images(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of a float N×C×H×W batch in [0, 1]; the result is a multiple of 1/255."""
    pixels = to_uint8(x.detach().float().cpu()).numpy()
    out = np.empty_like(pixels)
    for n, image in enumerate(pixels):
        if image.shape[0] == 3:
            out[n] = jpeg_roundtrip(image.transpose(1, 2, 0), quality).transpose(2, 0, 1)
        else:
            # JPEG has no mode for other channel counts; each channel is then its own grey image
            for c, plane in enumerate(image):
                out[n, c] = jpeg_roundtrip(plane, quality)
    return torch.from_numpy(out).to(device=x.device, dtype=torch.float32) / 255


@register_corruption("jpeg")
class Jpeg(Corruption):
    """JPEG compression at quality `quality` (1..95, lower = stronger), via PIL.

    Each image is quantised to uint8 (floor(x·255 + 0.5)), saved as JPEG with PIL's
    defaults (standard libjpeg tables, 4:2:0 chroma subsampling, no optimise) as RGB for
    C=3 and as greyscale ("L") for C=1 (any other C: each channel separately as "L"),
    decoded, and returned as float32 in [0, 1] (multiples of 1/255). The paper's Table 3
    uses Q = 15, 18, 25, 50, 75, 90; its exact "custom" JPEG function is not public.
    """

    version = 1
    params = {
        "quality": Param(25, "JPEG quality factor (PIL/libjpeg scale; lower = stronger)", kind=int, ge=1, le=95),
    }
    test_params = {"quality": 50}
    gallery = [{"quality": q} for q in (90, 75, 50, 25, 18, 15)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return jpeg_images(x, self.p.quality)
