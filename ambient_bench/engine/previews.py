"""Image grids written next to stage outputs, for a quick look at data and samples."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ambient_bench import fileio


def save_grid(path: Path, images: torch.Tensor, columns: int, scale: int = 2) -> None:
    """uint8 N×C×H×W → one PNG, ``columns`` images per row, upscaled ``scale``× (nearest)."""
    if len(images) == 0:
        return
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.zeros(rows * columns, c, h, w, dtype=torch.uint8)
    canvas[:n] = images
    grid = canvas.reshape(rows, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    picture = Image.fromarray(grid.squeeze(-1).numpy() if c == 1 else grid.numpy())
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    fileio.atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))
