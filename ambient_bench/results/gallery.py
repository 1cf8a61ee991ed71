"""Corruption galleries (like the paper's Figs. 11–12): rows = corruption and strength,
columns = images of a dataset, each cell quantised to uint8 exactly as the mix stage does."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ambient_bench.components import Corruption, ImageSet
from ambient_bench.data.images import to_uint8
from ambient_bench.registry import CORRUPTIONS
from ambient_bench.seeding import numpy_rng


def row_label(name: str, params: dict[str, Any]) -> str:
    """``jpeg quality=15``; nested corruption lists (compose) as ``blur 0.4 > contrast 0.9``."""
    def value(v: Any) -> str:
        if isinstance(v, list) and v and all(isinstance(x, dict) and "name" in x for x in v):
            return " > ".join(f"{x['name']} " + ",".join(str(y) for k, y in x.items() if k != "name") for x in v)
        return str(v)
    return " ".join([name] + [f"{k}={value(v)}" if not isinstance(v, list) else value(v) for k, v in params.items()])


def gallery_rows(specs: list[dict[str, Any]] | None = None) -> list[tuple[str, Corruption]]:
    """(label, corruption) per row. A spec with only a name expands to that corruption's
    gallery settings; no specs = every registered corruption that declares a gallery."""
    if specs is None:
        specs = [{"name": name} for name in CORRUPTIONS.names() if CORRUPTIONS.get(name).gallery]
    rows = []
    for spec in specs:
        cls = CORRUPTIONS.get(spec["name"])
        settings = [{k: v for k, v in spec.items() if k != "name"}]
        if settings == [{}]:
            settings = cls.gallery or [cls.test_params]
        for params in settings:
            rows.append((row_label(spec["name"], params), cls(**params)))
    return rows


def render_gallery(data: ImageSet, rows: list[tuple[str, Corruption]], count: int = 8,
                   cell: int = 64, seed: int = 0) -> Image.Image:
    """A labelled grid: the clean images on top, one row per (label, corruption) below."""
    index = torch.from_numpy(np.linspace(0, len(data) - 1, count).round().astype(np.int64))
    clean = data.images[index].float() / 255.0
    grids = [("clean", data.images[index])]
    for label, corruption in rows:
        rngs = [numpy_rng("gallery", seed, int(i)) for i in index]
        grids.append((label, to_uint8(corruption.apply(clean.clone(), rngs).clamp(0, 1))))
    font = ImageFont.load_default(size=max(10, cell // 5))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(int(measure.textlength(label, font=font)) for label, _ in grids) + 12
    canvas = Image.new("RGB", (label_width + count * (cell + 2), len(grids) * (cell + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(grids):
        y = r * (cell + 2)
        draw.text((6, y + cell // 2), label, fill="black", font=font, anchor="lm")
        for c, image in enumerate(images):
            array = image.permute(1, 2, 0).numpy()
            tile = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
            canvas.paste(tile.resize((cell, cell), Image.NEAREST), (label_width + c * (cell + 2), y))
    return canvas
