"""sigma_min of each low-quality image from a trained noise classifier (paper §3.1, Fig. 2).

For an ascending grid of noise levels the classifier sees T noisy copies of the image per
level; the mean P(corrupted) is smoothed along the grid by a causal EMA (span 32) and
sigma_min is the first level where it drops below 0.5 + epsilon. An image whose curve never
drops is not trustworthy at any noise level in the grid: it is dropped, or (the official code's
way) annotated at the grid's largest level. The grid is evenly spaced log-normal quantiles, or
(the official code's way) a sorted random log-normal draw seeded 42.

The work is batched over images × levels × trials; noise is seeded per (image, level block)
so that results do not depend on how the work is chunked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.signal
import scipy.stats
import torch

from ambient_bench import distributed
from ambient_bench.seeding import torch_generator

NOISE_BLOCK = 64  # grid levels per noise draw: a fixed constant, so chunking never changes the noise
PAPER_GRID, PAPER_SPAN = 2048, 32
# Budget for the widest activation of one forward pass when ``batch`` is not given. On a CPU the
# elementwise layers (GroupNorm, SiLU, adds) are memory-bound: 256-input chunks of the cpu preset
# (4 MiB) ran 1.2× faster than 1024-input ones here, and 4-input chunks of the paper's classifier
# 1.9× faster than 128-input ones; on a GPU bigger is better.
CHUNK_BYTES = {"cpu": 4 << 20, "other": 512 << 20}
MAX_AUTO_BATCH = 16384


def scaled_span(num_sigmas: int) -> int:
    """The paper's EMA span (32 of 2048 levels) for another grid size: the same width in ln(sigma)."""
    return max(1, round(PAPER_SPAN * num_sigmas / PAPER_GRID))


def lognormal_grid(num: int, p_mean: float = -1.2, p_std: float = 1.2) -> np.ndarray:
    """``num`` ascending, evenly spaced quantiles of LogNormal(p_mean, p_std)."""
    quantiles = (np.arange(num) + 0.5) / num
    return np.exp(p_mean + p_std * scipy.stats.norm.ppf(quantiles))


RELEASE_GRID_SEED = 42  # pixel-diffusion/annotate.py:109
GRIDS = ("quantile", "random")
NEVER_CROSSED = ("drop", "top")


def random_grid(num: int, p_mean: float = -1.2, p_std: float = 1.2, seed: int = RELEASE_GRID_SEED) -> np.ndarray:
    """The official annotate.py's grid (lines 109-111): ``num`` draws n ~ N(0, 1) from a torch generator
    seeded ``seed``, sigma = exp(n·p_std + p_mean) in float32, sorted ascending. The release drew on a CUDA
    generator, whose stream differs from torch's CPU one used here (same seed and distribution, not the
    same numbers): a CPU draw keeps the grid, and the annotate key, the same on every machine."""
    n = torch.randn([num], generator=torch.Generator().manual_seed(seed))
    return (n * p_std + p_mean).exp().sort().values.double().numpy()


def annotation_grid(kind: str, num: int, p_mean: float = -1.2, p_std: float = 1.2) -> np.ndarray:
    """The ascending sigma grid of ``kind`` ('quantile' or 'random', see ``GRIDS``)."""
    if kind == "quantile":
        return lognormal_grid(num, p_mean, p_std)
    if kind == "random":
        return random_grid(num, p_mean, p_std)
    raise ValueError(f"unknown annotation grid {kind!r}; one of {', '.join(GRIDS)}")


def resolve_never_crossed(sigma_min: np.ndarray, sigmas: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_min, keep) once the curves that never cross (sigma_min inf) are settled: 'drop' keeps them
    out; 'top' keeps them at the grid's largest sigma, as the official code does (ambient_utils
    classifier.py analyze_classifier_trajectory: "if no such time exists, return the last time")."""
    crossed = np.isfinite(sigma_min)
    if mode == "drop":
        return sigma_min, crossed
    if mode == "top":
        return np.where(crossed, sigma_min, float(np.max(sigmas))), np.ones_like(crossed)
    raise ValueError(f"unknown never_crossed mode {mode!r}; one of {', '.join(NEVER_CROSSED)}")


def causal_ema(values: np.ndarray, span: int) -> np.ndarray:
    """pandas ``ewm(span, adjust=False).mean()`` along the last axis: s_0 = v_0, s_k = (1-a)s_{k-1} + a v_k."""
    alpha = 2.0 / (span + 1)
    initial = (1 - alpha) * values[..., :1]
    smoothed, _ = scipy.signal.lfilter([alpha], [1.0, alpha - 1.0], values, axis=-1, zi=initial)
    return smoothed


def first_crossing(smoothed: np.ndarray, sigmas: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the first grid sigma where ``smoothed < threshold``; inf where it never is."""
    below = smoothed < threshold
    first = below.argmax(axis=-1)
    return np.where(below.any(axis=-1), sigmas[first], np.inf)


@dataclass
class SigmaMinResult:
    sigmas: np.ndarray         # K ascending grid
    probabilities: np.ndarray  # M×K mean P(corrupted) over trials
    smoothed: np.ndarray       # M×K after the causal EMA
    sigma_min: np.ndarray      # M, inf = never crossed (resolve_never_crossed)
    threshold: float


def widest_activation_bytes(classifier: Callable, shape: tuple[int, ...], device: torch.device) -> int:
    """Bytes of the largest tensor any layer produces for one input of ``shape`` (one probe pass)."""
    sizes = [math.prod(shape) * 4]

    def record(_module: torch.nn.Module, _args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output[:1].numel() * output.element_size())

    modules = classifier.modules() if isinstance(classifier, torch.nn.Module) else ()
    hooks = [module.register_forward_hook(record) for module in modules]
    try:
        with torch.no_grad():
            classifier(torch.zeros((1, *shape), device=device), torch.ones(1, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


def auto_batch(classifier: Callable, shape: tuple[int, ...], device: torch.device) -> int:
    """Inputs per forward pass whose widest activation fits ``CHUNK_BYTES`` for the device."""
    budget = CHUNK_BYTES["cpu" if device.type == "cpu" else "other"]
    return int(min(MAX_AUTO_BATCH, max(1, budget // widest_activation_bytes(classifier, shape, device))))


def _noise(seed: int, index: int, block: int, trials: int, shape: tuple[int, ...],
           device: torch.device) -> torch.Tensor:
    g = torch_generator("annotate-noise", seed, index, block, device=device)
    return torch.randn((NOISE_BLOCK, trials, *shape), generator=g, device=device)


@torch.no_grad()
def classifier_probabilities(classifier: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor,
                             sigmas: np.ndarray, trials: int, seed: int, batch: int | None = None) -> np.ndarray:
    """M×K mean sigmoid(logit) over ``trials`` noisy copies at each grid level.

    ``images`` are model-space (float, [-1, 1]) on the classifier's device; ``indices`` give
    each image's identity for seeding its noise. ``batch`` bounds images × levels × trials per
    forward pass (None: ``auto_batch``); it changes speed, not the numbers.
    """
    device = images.device
    m, shape = len(images), tuple(images.shape[1:])
    batch = batch or auto_batch(classifier, shape, device)
    sigma_grid = torch.as_tensor(sigmas, dtype=torch.float32, device=device)
    per_image = NOISE_BLOCK * trials
    images_per_pass = max(1, batch // per_image)
    blocks = (len(sigmas) + NOISE_BLOCK - 1) // NOISE_BLOCK
    starts = range(0, m, images_per_pass)

    def one_pass(item: int) -> np.ndarray:
        """Images [start, stop) at the levels of one grid block: n × k mean probabilities."""
        block, start = divmod(item, len(starts))
        start = starts[start]
        levels = sigma_grid[block * NOISE_BLOCK:(block + 1) * NOISE_BLOCK]
        k, stop = len(levels), min(start + images_per_pass, m)
        eps = torch.stack([_noise(seed, int(i), block, trials, shape, device)[:k] for i in indices[start:stop]])
        sig = levels.reshape(1, k, 1, *([1] * len(shape)))
        x_t = images[start:stop, None, None] + sig * eps             # n × k × T × C × H × W
        flat_sigma = levels.reshape(1, k, 1).expand(stop - start, k, trials).reshape(-1)
        inputs = x_t.reshape(-1, *shape)
        if inputs.dim() == 4:  # the layout load_classifier gives the network; a no-op copy otherwise
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        p = torch.cat([torch.sigmoid(classifier(inputs[i:i + batch], flat_sigma[i:i + batch]).float())
                       for i in range(0, len(inputs), batch)])
        return p.reshape(stop - start, k, trials).mean(-1).cpu().double().numpy()

    # under torchrun each rank takes every world-th pass (distributed.split_map)
    passes = distributed.split_map(one_pass, blocks * len(starts), what=f"classifier on {m} images")
    out = np.empty((m, len(sigmas)))
    for item, p in enumerate(passes):
        block, start = divmod(item, len(starts))
        out[starts[start]:starts[start] + len(p), block * NOISE_BLOCK:block * NOISE_BLOCK + p.shape[1]] = p
    return out


@torch.no_grad()
def classifier_probabilities_looped(classifier: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor,
                                    sigmas: np.ndarray, trials: int, seed: int) -> np.ndarray:
    """The same numbers one image and one level at a time (the reference for tests and perf)."""
    device, shape = images.device, tuple(images.shape[1:])
    out = np.empty((len(images), len(sigmas)))
    for row, (image, index) in enumerate(zip(images, indices)):
        for block in range(0, (len(sigmas) + NOISE_BLOCK - 1) // NOISE_BLOCK):
            eps = _noise(seed, int(index), block, trials, shape, device)
            for j, sigma in enumerate(sigmas[block * NOISE_BLOCK:(block + 1) * NOISE_BLOCK]):
                x_t = image[None] + float(sigma) * eps[j]
                s = torch.full((trials,), float(sigma), device=device)
                out[row, block * NOISE_BLOCK + j] = float(torch.sigmoid(classifier(x_t, s).float()).mean())
    return out


def annotate_sigma_min(classifier: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor, *,
                       num_sigmas: int = 2048, trials: int = 4, ema_span: int | None = None, epsilon: float = 0.05,
                       p_mean: float = -1.2, p_std: float = 1.2, seed: int = 0,
                       batch: int | None = None, compile: bool = False, grid: str = "quantile") -> SigmaMinResult:
    """sigma_min of every image (model-space float tensor) from its classifier curve.

    ``ema_span`` None scales the paper's span to the grid (see ``scaled_span``). ``compile`` runs
    the classifier through ``torch.compile`` (fused elementwise layers: about 1.7× on a CPU,
    benchmarks/perf/annotate.py --compile); it pays off on large grids and needs a C++ compiler
    on a CPU. ``grid`` is the sigma grid's kind (``annotation_grid``). sigma_min is inf where a curve
    never crosses (``resolve_never_crossed`` settles those).
    """
    batch = batch or auto_batch(classifier, tuple(images.shape[1:]), images.device)
    if compile:  # fixed shapes: every pass but the last of a grid block has ``batch`` inputs
        classifier = torch.compile(classifier, dynamic=False)
    sigmas = annotation_grid(grid, num_sigmas, p_mean, p_std)
    probabilities = classifier_probabilities(classifier, images, indices, sigmas, trials, seed, batch)
    smoothed = causal_ema(probabilities, ema_span or scaled_span(num_sigmas))
    threshold = 0.5 + epsilon
    return SigmaMinResult(sigmas, probabilities, smoothed, first_crossing(smoothed, sigmas, threshold), threshold)
