"""The paper's annotation figures as PNGs: classifier curves (Fig. 2), sigma_min histograms,
usable samples per noise level (Fig. 15), patch probabilities (Figs. 6/20) and the
context-size probe (Figs. 16-19). Every plot is written atomically and returns its path.

Uses ``matplotlib.figure.Figure`` with an Agg canvas, so no global pyplot/backend state is touched.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from ambient_bench import fileio

DPI = 100


def _axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path | str, tight: bool = False) -> Path:
    """Render ``fig`` to a PNG beside ``path``, then rename it into place."""
    path = Path(path)
    extra = {"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}
    fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, **extra))
    return path


def _legend_below(fig: Figure, ax: Axes, columns: int = 1) -> None:
    """The legend under the axes (constrained layout makes room), so it covers no curve, bar or area."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(columns, len(handles)), fontsize=8,
                   frameon=False)


def _colours(n: int) -> list[tuple[float, ...]]:
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_classifier_curves(path: Path | str, sigmas: np.ndarray, probabilities: np.ndarray,
                           smoothed: np.ndarray, threshold: float, sigma_min: np.ndarray,
                           labels: list[str] | None = None, quality: dict | None = None) -> Path:
    """Fig. 2: P(corrupted) vs σ per example image (pass ~6): raw mean faint, smoothed solid,
    threshold τ dashed, a dotted line and dot where each smoothed curve crosses (sigma_min); with
    ``quality`` (the classifier stage's held-out measurement) its ROC-AUC per σ in grey beside them."""
    sigmas, sigma_min = np.asarray(sigmas, float), np.asarray(sigma_min, float)
    probabilities, smoothed = np.atleast_2d(probabilities), np.atleast_2d(smoothed)
    m, k = probabilities.shape
    if smoothed.shape != (m, k) or sigmas.shape != (k,) or sigma_min.shape != (m,):
        raise ValueError(f"shapes: sigmas {sigmas.shape}, probabilities {probabilities.shape}, "
                         f"smoothed {smoothed.shape}, sigma_min {sigma_min.shape}")
    labels = labels if labels is not None else [f"sample {i}" for i in range(m)]
    fig, ax = _axes((8.5, 4.8))
    for i, colour in enumerate(_colours(m)):
        ax.plot(sigmas, probabilities[i], color=colour, lw=0.8, alpha=0.35)
        crossed = np.isfinite(sigma_min[i])
        text = f"σ_min = {sigma_min[i]:.3g}" if crossed else "never crossed"
        ax.plot(sigmas, smoothed[i], color=colour, lw=1.8, label=f"{labels[i]}: {text}")
        if crossed:
            ax.axvline(sigma_min[i], color=colour, ls=":", lw=1.2)
            ax.plot([sigma_min[i]], [threshold], "o", color=colour, ms=6, mec="black", mew=0.6)
    ax.axhline(threshold, color="red", ls="--", lw=1.2)
    handles, names = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="red", ls="--"), Line2D([], [], color="grey", lw=0.8, alpha=0.5),
                Line2D([], [], color="grey", lw=1.8)]
    names += [f"threshold τ = {threshold:.2f}", "raw mean", "smoothed"]
    if quality is not None:  # how well the classifier separates the classes at each σ (held-out images)
        auc = np.array([np.nan if a is None else a for a in quality["auc"]])
        ax.plot(quality["sigmas"], auc, color="dimgrey", lw=2.5, alpha=0.6, ls="-.")
        handles.append(Line2D([], [], color="dimgrey", lw=2.5, alpha=0.6, ls="-."))
        names.append("classifier ROC-AUC (held out)")
    ax.legend(handles, names, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="noise level σ", ylabel="P(corrupted)",
           title="Noise classifier: where each sample crosses the threshold")
    ax.grid(alpha=0.3, lw=0.5)
    return _save(fig, path)


def plot_classifier_quality(path: Path | str, quality: dict, title: str, low_levels: int) -> Path:
    """Held-out ROC-AUC and balanced accuracy of a classifier against the noise level."""
    fig, ax = _axes((6.5, 4.0))
    sigmas = np.asarray(quality["sigmas"])
    auc = np.array([np.nan if a is None else a for a in quality["auc"]])
    ax.plot(sigmas, auc, "o-", color="black", label="ROC-AUC")
    ax.plot(sigmas, quality["balanced_accuracy"], "s--", color="tab:blue", label="balanced accuracy")
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.axvspan(sigmas[0] * 0.9, quality["low_sigma_max"], color="tab:red", alpha=0.08,
               label=f"lowest {low_levels} levels (the gate's AUC)")
    ax.set(xscale="log", ylim=(0.3, 1.02), xlabel="noise level σ", ylabel="held-out score",
           title=f"{title}\n{quality['holdout_images']} held-out images, {quality['holdout_positive']} positive")
    _legend_below(fig, ax)
    ax.grid(alpha=0.3, lw=0.5)
    return _save(fig, path)


def plot_sigma_min_histogram(path: Path | str, sigma_min_by_group: dict[str, np.ndarray],
                             dropped_by_group: dict[str, int]) -> Path:
    """Step histograms of the (finite) sigma_min of each group on log-spaced bins."""
    values = {g: np.asarray(v, float).ravel() for g, v in sigma_min_by_group.items()}
    finite = {g: v[np.isfinite(v) & (v > 0)] for g, v in values.items()}
    pooled = np.concatenate([v for v in finite.values()] + [np.empty(0)])
    lo, hi = (pooled.min(), pooled.max()) if pooled.size else (1e-3, 1e2)
    if hi <= lo * 1.01:
        lo, hi = lo / 1.5, hi * 1.5
    bins = np.geomspace(lo, hi, 31)
    fig, ax = _axes((7.5, 4.5))
    for (group, v), colour in zip(finite.items(), _colours(len(finite))):
        mean = f"{v.mean():.2f}" if v.size else "n/a"
        label = rf"{group}: mean $\bar{{\sigma}}$ = {mean}, n dropped = {dropped_by_group.get(group, 0)}"
        ax.hist(v, bins=bins, histtype="step", lw=1.8, color=colour, label=label)
    ax.set(xscale="log", xlabel="σ_min (noise level where the sample becomes usable)",
           ylabel="number of samples", title="Annotated σ_min per group")
    _legend_below(fig, ax)
    ax.grid(alpha=0.3, lw=0.5)
    return _save(fig, path)


def usable_counts(sigmas: np.ndarray, sigma_min: np.ndarray, sigma_max: np.ndarray, buffer: float,
                  groups: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per group, how many samples are usable at each σ: ``σ > buffer·sigma_min or σ < sigma_max``.

    A sample is unusable exactly on the closed interval [sigma_max, buffer·sigma_min] (the donut
    hole), so the count of holes covering σ is two sorted searches: #{lo ≤ σ} − #{hi < σ}.
    NaN sigma_min counts as never crossed (inf), NaN sigma_max as never usable at low noise."""
    sigmas = np.asarray(sigmas, float)
    hi = np.nan_to_num(buffer * np.asarray(sigma_min, float), nan=np.inf, posinf=np.inf)
    lo = np.nan_to_num(np.asarray(sigma_max, float), nan=-np.inf, posinf=np.inf)
    if hi.shape != lo.shape or hi.ndim != 1:
        raise ValueError(f"sigma_min {hi.shape} and sigma_max {lo.shape} must be the same 1-D shape")
    counts = {}
    for group, mask in groups.items():
        mask = np.asarray(mask, bool)
        if mask.shape != hi.shape:
            raise ValueError(f"group {group!r}: mask shape {mask.shape} != {hi.shape}")
        g_lo, g_hi = lo[mask], hi[mask]
        hole = g_lo <= g_hi
        covering = (np.searchsorted(np.sort(g_lo[hole]), sigmas, side="right")
                    - np.searchsorted(np.sort(g_hi[hole]), sigmas, side="left"))
        counts[group] = (int(mask.sum()) - covering).astype(np.int64)
    return counts


def plot_usable_samples(path: Path | str, sigma_min: np.ndarray, sigma_max: np.ndarray, buffer: float,
                        groups: dict[str, np.ndarray], reference_count: int,
                        sigmas: np.ndarray | None = None) -> Path:
    """Fig. 15: stacked usable samples per group vs σ, in % of ``reference_count``, plus the total."""
    if reference_count <= 0:
        raise ValueError("reference_count must be positive")
    sigmas = np.geomspace(0.002, 80, 200) if sigmas is None else np.asarray(sigmas, float)
    counts = usable_counts(sigmas, sigma_min, sigma_max, buffer, groups)
    percent = [100.0 * c / reference_count for c in counts.values()]
    fig, ax = _axes((7.5, 4.5))
    ax.stackplot(sigmas, *percent, labels=list(counts), colors=_colours(len(counts)), alpha=0.6)
    total = np.sum(percent, axis=0) if percent else np.zeros_like(sigmas)
    ax.plot(sigmas, total, color="black", lw=1.6, label="total")
    ax.axhline(100, color="grey", ls=":", lw=1)
    ax.set(xscale="log", xlim=(sigmas.min(), sigmas.max()), ylim=(0, max(105.0, 1.08 * total.max())),
           xlabel="noise level σ", ylabel=f"usable samples (% of {reference_count})",
           title=f"Samples available at each noise level (buffer = {buffer:g})")
    _legend_below(fig, ax, columns=3)
    ax.grid(alpha=0.3, which="major", lw=0.5)
    return _save(fig, path)


def plot_patch_probabilities(path: Path | str, image: torch.Tensor | np.ndarray, tile_probabilities: np.ndarray,
                             crop_size: int, title: str = "") -> Path:
    """Figs. 6/20: the image (nearest-upsampled to ≥256 px) with each crop_size tile coloured by its
    probability and outlined; tiles on a stride-crop_size grid from 0, edge tiles clipped."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    c, h, w = array.shape
    probs = np.atleast_2d(np.asarray(tile_probabilities, float))
    rows, cols = probs.shape
    if rows > math.ceil(h / crop_size) or cols > math.ceil(w / crop_size):
        raise ValueError(f"{rows}×{cols} tiles of {crop_size} px do not fit a {h}×{w} image")
    scale = max(1, math.ceil(256 / max(h, w)))
    if crop_size * scale < 28:  # room for the numbers, if the picture stays ≤ 768 px
        scale = max(scale, min(math.ceil(28 / crop_size), 768 // max(h, w)))
    shown = np.repeat(np.repeat(array.transpose(1, 2, 0), scale, axis=0), scale, axis=1)
    width, height = w * scale / DPI, h * scale / DPI
    margin_l, margin_b, margin_r = 0.1, 0.1, 1.2
    margin_t = 0.45 if title else 0.1
    fig = Figure(figsize=(width + margin_l + margin_r, height + margin_b + margin_t), dpi=DPI)
    FigureCanvasAgg(fig)
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((margin_l / fw, margin_b / fh, width / fw, height / fh))
    ax.imshow(shown[..., 0] if c == 1 else shown[..., :3], cmap="gray" if c == 1 else None,
              extent=(0, w, h, 0), interpolation="nearest", vmin=0, vmax=255)
    cmap, norm = colormaps["coolwarm"], Normalize(0.0, 1.0)
    tile_px = crop_size * scale
    fontsize = min(10.0, tile_px / 3.6)
    for r in range(rows):
        for col in range(cols):
            x0, y0, p = col * crop_size, r * crop_size, probs[r, col]
            tw, th = min(crop_size, w - x0), min(crop_size, h - y0)
            if np.isfinite(p):
                ax.add_patch(Rectangle((x0, y0), tw, th, facecolor=cmap(norm(p)), alpha=0.45, lw=0))
            ax.add_patch(Rectangle((x0, y0), tw, th, fill=False, edgecolor="white", lw=0.7, alpha=0.9))
            if np.isfinite(p) and min(tw, th) * scale >= 28:
                ax.text(x0 + tw / 2, y0 + th / 2, f"{p:.2f}", ha="center", va="center", color="white",
                        fontsize=fontsize, path_effects=[patheffects.withStroke(linewidth=1.8, foreground="black")])
    ax.set(xlim=(0, w), ylim=(h, 0))
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    cax = fig.add_axes(((margin_l + width + 0.15) / fw, margin_b / fh, 0.15 / fw, height / fh))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="P(target)")
    return _save(fig, path)


def _pixels_axis(ax: Axes, which: str, ticks: np.ndarray) -> None:
    """Log-2 axis ticked at the given pixel sizes."""
    ticks = np.unique(ticks[np.isfinite(ticks) & (ticks > 0)])
    getattr(ax, f"set_{which}scale")("log", base=2)
    getattr(ax, f"set_{which}ticks")(ticks)
    getattr(ax, f"{which}axis").set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    getattr(ax, f"{which}axis").set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_context_curves(path: Path | str, context_sizes: np.ndarray, sigmas: np.ndarray, losses: np.ndarray,
                        plateau_context: np.ndarray) -> Path:
    """Figs. 16/18: centre-patch loss vs context size, one curve per σ, a big dot at each plateau."""
    context_sizes, sigmas = np.asarray(context_sizes, float), np.asarray(sigmas, float)
    losses, plateau = np.atleast_2d(np.asarray(losses, float)), np.asarray(plateau_context, float)
    if losses.shape != (len(sigmas), len(context_sizes)) or plateau.shape != sigmas.shape:
        raise ValueError(f"losses {losses.shape} must be (sigmas, contexts) = "
                         f"({len(sigmas)}, {len(context_sizes)}); plateau_context {plateau.shape}")
    order = np.argsort(context_sizes)
    cmap = colormaps["viridis"]
    fig, ax = _axes((7.5, 4.8))
    for i, sigma in enumerate(sigmas):
        colour = cmap(i / max(1, len(sigmas) - 1))
        ax.plot(context_sizes[order], losses[i, order], "-o", ms=3, lw=1.4, color=colour, label=f"σ = {sigma:.3g}")
        if np.isfinite(plateau[i]):
            y = np.interp(np.log(plateau[i]), np.log(context_sizes[order]), losses[i, order])
            ax.plot([plateau[i]], [y], "o", ms=10, color=colour, mec="black", mew=0.8, zorder=3)
    _pixels_axis(ax, "x", context_sizes)
    ax.set(yscale="log", xlabel="context size (pixels)", ylabel="loss at the centre patch",
           title="Denoising loss vs context (big dot: plateau)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.grid(alpha=0.3, which="major", lw=0.5)
    return _save(fig, path)


def plot_context_table(path: Path | str, sigmas: np.ndarray, plateau_context: np.ndarray) -> Path:
    """Figs. 17/19: the context size needed at each noise level (NaN = never plateaued, skipped).
    Drawn as a conservative lookup: between two measured σ the larger context holds."""
    sigmas, plateau = np.asarray(sigmas, float), np.asarray(plateau_context, float)
    if sigmas.shape != plateau.shape:
        raise ValueError(f"sigmas {sigmas.shape} and plateau_context {plateau.shape} differ")
    keep = np.isfinite(plateau) & (plateau > 0)
    order = np.argsort(sigmas[keep])
    xs, ys = sigmas[keep][order], plateau[keep][order]
    fig, ax = _axes((6.5, 4.2))
    ax.step(xs, ys, where="pre", color="tab:blue", lw=1.6)
    ax.plot(xs, ys, "o", color="tab:blue", ms=6)
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:g}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    if ys.size:
        _pixels_axis(ax, "y", ys)
        ax.set_ylim(ys.min() / 1.5, ys.max() * 1.6)
    ax.set(xscale="log", xlabel="noise level σ", ylabel="context size needed (pixels)",
           title="Context needed for near-optimal denoising")
    ax.grid(alpha=0.3, which="major", lw=0.5)
    return _save(fig, path)
