"""Per-image quality scores, the high-quality split and the patch-quality sigma_max rule.

The ImageNet variant of Ambient-o (paper §3.2, Table 1 "+crops"; implementation notes §4.5,
§7.3) has no classifier: images are ranked by CLIP-IQA (piq, CLIP RN50, "Good photo." vs
"Bad photo.", native resolution). The whole-image score picks the high-quality set; the mean
score over K×K tiles decides up to which noise level an image's crops are good enough.

Scorers: ``clip_iqa`` (piq, the paper's), ``clip_iqa_pyiqa`` (pyiqa's 5-prompt variant, optional
dependency, different numbers) and ``laplacian_sharpness`` (no weights; tests and CPU suites).
The release ranks with the sort permutation instead of its inverse (notes §10 item 2), which
makes its split quality-agnostic; ``true_rank`` is the fix.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
import os
import pickle
import warnings
from collections.abc import Callable
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F

from ambient_bench import distributed, fileio, weights
from ambient_bench.errors import UserError
from ambient_bench.params import suggest

CLIP_INPUT = 224
# The official script resizes tiles with torchvision Resize((224, 224)), whose defaults are
# bilinear with antialias (antialias only matters when shrinking, which never happens here).
TILE_RESIZE_MODE = "bilinear"
LUMA_601 = (0.299, 0.587, 0.114)
PYIQA_INSTALL = 'pip install pyiqa "setuptools>=77.0.3,<82"'


class QualityScorer(ABC):
    """No-reference quality: N×C×H×W images (C = 1 or 3) → float64 per image, higher = better.

    ``score`` takes uint8 images; floating images in [0, 1] are accepted too, so resized tiles
    need not be re-quantised. ``needs_resize_to``: tiles smaller than this are upsampled to
    it before scoring (CLIP), None to score tiles at their own size.
    """

    name: str = ""
    needs_resize_to: int | None = None
    min_size: int = 1

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def score(self, images: torch.Tensor, batch: int = 64) -> np.ndarray:
        """Scores of ``images``, computed ``batch`` images at a time on the scorer's device."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise UserError(f"{self.name}: expected N×C×H×W images with C = 1 or 3, got shape {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.min_size:
            raise UserError(f"{self.name}: images must be at least {self.min_size}×{self.min_size} pixels, "
                            f"got {tuple(images.shape[-2:])}")
        batch = max(1, batch)
        # under torchrun each rank scores every world-th batch (distributed.split_map)
        out = distributed.split_map(lambda b: self._score_batch(_unit_float(images[b * batch:(b + 1) * batch])
                                                                .to(self.device)),
                                    -(-len(images) // batch), what=f"{self.name} on {len(images)} images")
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    @abstractmethod
    def _score_batch(self, x: torch.Tensor) -> np.ndarray:
        """Scores of float images in [0, 1] already on the device."""


def _unit_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise UserError(f"quality scorers take uint8 or float images in [0, 1], got {x.dtype}")
    return x.float().clamp(0, 1)  # interpolation may overshoot by a rounding error


class LaplacianSharpness(QualityScorer):
    """Variance of the 4-neighbour Laplacian of the Rec.601 luma, in 0..255 pixel units.

    A classic no-reference sharpness measure (the "variance of Laplacian" focus measure): blur
    and heavy JPEG remove high frequencies and lower it. Only interior pixels are used (valid
    convolution) so that no padding rule adds fake edges.
    """

    name = "laplacian_sharpness"
    min_size = 3

    def _score_batch(self, x: torch.Tensor) -> np.ndarray:
        x = x.double() * 255
        luma = x[:, 0] if x.shape[1] == 1 else torch.einsum("nchw,c->nhw", x, x.new_tensor(LUMA_601))
        lap = (luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]
               - 4 * luma[:, 1:-1, 1:-1])
        return lap.flatten(1).var(dim=1, unbiased=False).cpu().numpy()


def _missing_weights_error(scorer: str, missing: list[tuple[str, str]], directory: str, note: str = "") -> UserError:
    files = "; ".join(f"{name} from {url}" for name, url in missing)
    return UserError(f"{scorer}: weights not found offline or not downloaded: {files}; download into "
                     f"{directory}{note}")


class _ClipIqa(QualityScorer):
    """A CLIP-IQA implementation held in ``self.model``: tiles are resized to CLIP's input, grey → RGB."""

    needs_resize_to = CLIP_INPUT
    model: torch.nn.Module

    def _score_batch(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.model(x.expand(-1, 3, -1, -1)).reshape(-1).double().cpu().numpy()


class PiqClipIqa(_ClipIqa):
    """CLIP-IQA as the paper computed it: ``piq.CLIPIQA(data_range=1.0)``, P("Good photo.")."""

    name = "clip_iqa"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        try:
            import piq
        except ImportError as err:
            raise UserError(f"clip_iqa needs piq ({err}); pip install piq") from err
        # piq caches in os.path.expanduser("~/.cache/clip") ($HOME, not $TORCH_HOME) and would download whatever
        # is missing unchecked; ours fetches first (RN50 from OpenAI's URL, piq's own fallback, with its pinned
        # sha256; weights.py), and offline or after a failed download the one-line error names files and folder.
        entries = [weights.REGISTRY["clip_rn50"], weights.REGISTRY["clip_iqa_tokens"]]
        failed = weights.fetch_all(entries)
        directory = str(entries[0].folder())
        if failed:
            raise _missing_weights_error(self.name, [(e.filename, e.source_url()) for e, _ in failed], directory,
                                         f" (piq reads $HOME/.cache/clip; {failed[0][1]})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices inside piq
                self.model = piq.CLIPIQA(data_range=1.0).to(device).eval()
        except (URLError, RuntimeError, EOFError, pickle.UnpicklingError) as err:  # piq falls back to torch.load
            raise UserError(f"clip_iqa: could not load piq's CLIP files from {directory} ({type(err).__name__}: "
                            f"{fileio.error_line(err)}); re-download them (delete them, then `python -m "
                            f"ambient_bench weights fetch clip_rn50 clip_iqa_tokens`)") from err


class PyiqaClipIqa(_ClipIqa):
    """pyiqa's ``clipiqa`` (RN50, 5 antonym prompt pairs averaged): not the paper's numbers."""

    name = "clip_iqa_pyiqa"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        try:
            import pyiqa
            from pyiqa.archs.clip_model import _MODELS
        except ImportError as err:
            raise UserError(f"clip_iqa_pyiqa needs pyiqa ({err}); {PYIQA_INSTALL}") from err
        # pyiqa's CLIP loader uses torch.hub.get_dir()/clip ($TORCH_HOME/hub/clip), read at call time
        url = _MODELS["RN50"]
        entry = weights.REGISTRY["clip_rn50_pyiqa"]
        directory = str(entry.folder())
        reason = weights.fetch(entry) if url == entry.url else "pyiqa's RN50 URL is not the pinned one"
        if reason:
            raise _missing_weights_error(self.name, [(os.path.basename(url), url)], directory,
                                         f" (pyiqa reads $TORCH_HOME/hub/clip and checks the SHA-256; {reason})")
        try:
            self.model = pyiqa.create_metric("clipiqa", device=torch.device(device))
        except ImportError as err:  # openai-clip needs pkg_resources, gone in setuptools >= 82
            raise UserError(f"clip_iqa_pyiqa: pyiqa's CLIP import failed ({err}); {PYIQA_INSTALL}") from err
        except URLError as err:  # a present file whose SHA-256 mismatches makes pyiqa re-download it
            raise UserError(f"{self.name}: {os.path.join(directory, os.path.basename(url))} fails pyiqa's SHA-256 "
                            f"check and cannot be re-downloaded offline; replace it with {url}") from err


QUALITY_SCORERS: dict[str, Callable[..., QualityScorer]] = {
    PiqClipIqa.name: PiqClipIqa,
    PyiqaClipIqa.name: PyiqaClipIqa,
    LaplacianSharpness.name: LaplacianSharpness,
}


def build_scorer(name: str, device: str = "cpu") -> QualityScorer:
    """The scorer registered as ``name`` (UserError with a did-you-mean for unknown names)."""
    if name not in QUALITY_SCORERS:
        raise UserError(f"unknown quality scorer '{name}'{suggest(name, QUALITY_SCORERS)} "
                        f"(scorers: {', '.join(sorted(QUALITY_SCORERS))})")
    return QUALITY_SCORERS[name](device=device)


def image_tiles(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N·T)×C×patch×patch: the non-overlapping tiles at 0, patch, 2·patch, … of every image, row-major.

    When H or W is not a multiple of ``patch`` the partial tiles at the bottom/right edge are
    dropped: scoring a sliver (stretched to 224² for CLIP) measures the resize, not the image. The
    official script asserts divisibility, so this only matters where it would have crashed. (The
    crops classifier, ``annotation.crops``, keeps partial tiles because it pastes them on a canvas.)
    """
    n, c, h, w = images.shape
    rows, cols = (h // patch, w // patch) if patch >= 1 else (0, 0)
    if rows == 0 or cols == 0:
        raise UserError(f"patch size {patch} does not fit in {h}×{w} images")
    grid = images[:, :, :rows * patch, :cols * patch].unfold(2, patch, patch).unfold(3, patch, patch)
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(n * rows * cols, c, patch, patch)


def patch_scores(scorer: QualityScorer, images: torch.Tensor, patch: int, batch: int = 64) -> np.ndarray:
    """Mean score over each image's patch×patch tiles (``CLIP-IQA-<patch>`` of the release), float64 per image.

    All tiles of all images are scored as one flat batch stream. Tiles smaller than
    ``scorer.needs_resize_to`` are upsampled to it in float (as the release does after /255).
    """
    tiles = image_tiles(images, patch)
    target = scorer.needs_resize_to
    batch = max(1, batch)

    def one_chunk(b: int) -> np.ndarray:
        chunk = tiles[b * batch:(b + 1) * batch]
        if target is not None and patch < target:
            chunk = F.interpolate(_unit_float(chunk), size=(target, target), mode=TILE_RESIZE_MODE,
                                  align_corners=False, antialias=True)
        return scorer.score(chunk, batch=batch)

    # split across ranks here, at the tile stream; scorer.score inside runs whole on its rank
    scores = distributed.split_map(one_chunk, -(-len(tiles) // batch), what=f"{scorer.name} on {len(tiles)} tiles")
    return np.concatenate(scores).reshape(len(images), -1).mean(axis=1)


def true_rank(scores: np.ndarray) -> np.ndarray:
    """Rank of every image, 0 = highest score; ties go to the lower index, NaN scores rank last.

    This is the inverse of the descending sort permutation. The release used the permutation
    itself (``arange(N)[argsort(q)]``), which is not a rank at all.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def top_count(n: int, top_fraction: float) -> int:
    """floor(top_fraction·n), the release's ``int(N·(1 − bad%))``, guarded so 0.29·100 gives 29, not 28."""
    if not 0.0 <= top_fraction <= 1.0:
        raise UserError(f"top_fraction must be in [0, 1], got {top_fraction}")
    return min(n, math.floor(top_fraction * n + 1e-9))


def high_quality_split(scores: np.ndarray, top_fraction: float) -> np.ndarray:
    """Boolean mask of the ``top_count(N, top_fraction)`` best images by true rank."""
    return true_rank(scores) < top_count(len(scores), top_fraction)


def patch_sigma_max(patch_means: dict[int, np.ndarray], top_fraction: float,
                    table: dict[int, float]) -> np.ndarray:
    """The "+crops" sigma_max (notes §4.5): per patch size in increasing order, images whose mean
    patch score is in the top ``top_fraction`` get ``table[size]``; larger sizes overwrite smaller
    ones; images never selected get 0 (no low-noise use as a clean sample).
    """
    if not patch_means:
        raise UserError("patch_sigma_max needs at least one patch size")
    lengths = {len(v) for v in patch_means.values()}
    if len(lengths) != 1:
        raise UserError(f"patch score arrays differ in length: {sorted(lengths)}")
    unknown = sorted(set(patch_means) - set(table))
    if unknown:
        raise UserError(f"no sigma_max for patch sizes {unknown} (table has {sorted(table)})")
    sigma_max = np.zeros(lengths.pop(), dtype=np.float64)
    for size in sorted(patch_means):
        sigma_max[high_quality_split(patch_means[size], top_fraction)] = table[size]
    return sigma_max
