"""Overlays drawn on top of the image: a watermark and a film subtitle.

They change a small region completely (unlike blur, which changes every pixel a little), so
noise does not hide them; masks are drawn with PIL on the CPU, cached per size, and blended
on the images' device.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption

PHRASES = ("hello", "look!", "not now", "run!", "thank you", "come back", "it's late",
           "where are we?", "I know.", "see you soon")
SUPERSAMPLE = 4  # masks are drawn this much larger, then box-filtered: smooth edges at 16 px


def font(pixels: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at about ``pixels`` px; the fixed bitmap font where
    Pillow is older than 10.1 or lacks FreeType (callers rescale what they draw)."""
    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def shrink(picture: Image.Image, width: int, height: int) -> np.ndarray:
    """An 'L' image resized to width×height (area average) as float32 alpha in [0, 1]."""
    return np.asarray(picture.resize((max(width, 1), max(height, 1)), Image.BOX), dtype=np.float32) / 255.0


@lru_cache(maxsize=64)
def mark_alpha(size: int) -> np.ndarray:
    """size×size alpha of the mark: a ring around a bold 'C' (a copyright sign)."""
    big = size * SUPERSAMPLE
    picture = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(picture)
    ring = min(max(SUPERSAMPLE, big // 9), big // 4)  # at least a pixel, less than the radius
    draw.ellipse((ring // 2, ring // 2, big - 1 - ring // 2, big - 1 - ring // 2), outline=255, width=ring)
    glyph = font(max(8, int(big * 0.62)))
    left, top, right, bottom = draw.textbbox((0, 0), "C", font=glyph)
    at = ((big - (right - left)) / 2 - left, (big - (bottom - top)) / 2 - top)
    # Several offset copies thicken the strokes, so the letter survives the downsampling.
    for dx in range(-ring // 4, ring // 4 + 1):
        draw.text((at[0] + dx, at[1]), "C", fill=255, font=glyph)
    return shrink(picture, size, size)


@lru_cache(maxsize=256)
def caption_alpha(text: str, h: int, w: int, size: float, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """H×W alphas (text, box) of a caption centred near the bottom, at most size·H per line."""
    line_px = size * h
    glyph = font(max(12, min(256, math.ceil(line_px * SUPERSAMPLE))))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    top, bottom = probe.textbbox((0, 0), "Hg", font=glyph)[1::2]  # one height for every line

    def width(lines: list[str]) -> float:
        return max(probe.textlength(line, font=glyph) for line in lines) / (bottom - top)

    def fitted(lines: list[str]) -> float:  # line height once the block fits the bottom half
        return min(line_px, (w - 2 * margin) / width(lines), (h / 2 - margin) / len(lines))

    candidates = [[text]]
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if spaces:
        cut = min(spaces, key=lambda i: abs(i - len(text) / 2))  # two balanced lines
        candidates.append([text[:cut], text[cut + 1:]])
    # Too wide text wraps only if that makes the letters clearly (1.4×) larger than shrinking
    # it on one line would: a second line doubles the area the caption hides.
    lines = max(candidates, key=lambda c: fitted(c) / 1.4 ** (len(c) - 1))
    line_px = fitted(lines)
    block = Image.new("L", (math.ceil(width(lines) * (bottom - top)) + 2, len(lines) * (bottom - top)), 0)
    draw = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text(((block.width - draw.textlength(line, font=glyph)) / 2, i * (bottom - top) - top),
                  line, fill=255, font=glyph)
    tw = min(w, max(1, round(block.width * line_px / (bottom - top))))
    th = max(1, round(line_px * len(lines)))
    text_alpha = np.zeros((h, w), np.float32)
    y0, x0 = max(0, h - margin - th), (w - tw) // 2
    text_alpha[y0:y0 + th, x0:x0 + tw] = shrink(block, tw, th)[:h - y0]
    box = np.zeros((h, w), np.float32)
    pad = max(1, round(0.2 * line_px))
    box[max(0, y0 - pad):y0 + th + pad, max(0, x0 - pad):x0 + tw + pad] = 1.0
    return text_alpha, box


@register_corruption("watermark")
class Watermark(Corruption):
    """Semi-transparent white © mark with a dark rim, at a random position per image.

    ``opacity`` in (0, 1] is the alpha of the white mark (the rim gets half of it, so the mark
    shows on bright and dark backgrounds alike); ``scale`` in (0, 1] is the mark's side as a
    fraction of the shorter image side. The position is drawn from each image's generator
    (row, then column). Grey and colour images are treated alike.
    """

    version = 1
    params = {
        "opacity": Param(0.5, "alpha of the mark", gt=0, le=1),
        "scale": Param(0.5, "mark side / shorter image side", gt=0, le=1),
    }
    test_params = {"opacity": 0.5, "scale": 0.5}
    random = True
    gallery = [{"opacity": 0.25, "scale": 0.3}, {"opacity": 0.4, "scale": 0.4},
               {"opacity": 0.6, "scale": 0.5}, {"opacity": 0.8, "scale": 0.6}]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        n, _, h, w = x.shape
        size = max(3, round(self.p.scale * min(h, w)))
        size = min(size, h, w)
        mark = torch.from_numpy(mark_alpha(size))
        alpha = torch.zeros(n, 1, h, w)
        for i in range(n):
            top, left = int(rngs[i].integers(0, h - size + 1)), int(rngs[i].integers(0, w - size + 1))
            alpha[i, 0, top:top + size, left:left + size] = mark
        alpha = alpha.to(x.device)
        rim = F.max_pool2d(alpha, 3, stride=1, padding=1)  # the mark grown by one pixel
        out = x * (1 - 0.5 * self.p.opacity * rim)
        return (out * (1 - self.p.opacity * alpha) + self.p.opacity * alpha).clamp(0, 1)


@register_corruption("subtitle")
class Subtitle(Corruption):
    """Film subtitle: white text on a translucent dark box near the bottom edge.

    ``text``: the caption; null picks one of a built-in list of short phrases per image from
    its generator (the only randomness: a fixed text makes the corruption deterministic in
    the image). ``size`` in (0, 0.5] is the text line height as a fraction of the image
    height; text too wide for the image wraps onto two lines, then shrinks. ``box`` in
    [0, 1] is the opacity of the dark box. Grey and colour images are treated alike.
    """

    version = 1
    params = {
        "text": Param(None, "caption (null: a random built-in phrase per image)", kind=str, nullable=True,
                      check=lambda v: None if v.strip() else "may not be empty (null picks a phrase)"),
        "size": Param(0.2, "line height / image height", gt=0, le=0.5),
        "box": Param(0.6, "opacity of the dark box behind the text", ge=0, le=1),
    }
    test_params = {"size": 0.25}
    random = True  # with the default text=null; instances with a fixed text say False
    gallery = [{"size": s} for s in (0.12, 0.18, 0.25, 0.35)]

    def __init__(self, **values: object) -> None:
        super().__init__(**values)
        self.random = self.p.text is None

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        n, _, h, w = x.shape
        texts = [self.p.text if self.p.text is not None else PHRASES[int(rngs[i].integers(len(PHRASES)))]
                 for i in range(n)]
        margin = max(1, round(0.04 * h))
        masks = [caption_alpha(t, h, w, self.p.size, margin) for t in texts]
        if n == 0:
            return x.clone()
        text = torch.from_numpy(np.stack([m[0] for m in masks]))[:, None].to(x.device)
        box = torch.from_numpy(np.stack([m[1] for m in masks]))[:, None].to(x.device)
        out = x * (1 - self.p.box * box)
        return (out * (1 - text) + text).clamp(0, 1)
