"""Profiles: the same suite at another size (``run SUITE --profile tiny``).

A profile rewrites every cell of a suite by the rules below, and nothing else: the stages, their
order and the code they run are the suite's own, only sizes shrink. Every rule is listed here,
in one place:

- data: each dataset with a ``limit`` (file datasets) keeps its first ``DATA`` images, and one with
  a ``count`` (procedural and photo-patch sets) makes ``DATA`` images; that covers the training
  set and the held-out reference; out-of-distribution sources keep ``OOD_DATA``; a ``resolution``
  above ``RESOLUTION`` becomes ``RESOLUTION`` (the 64 px suites run at 32 px, crop sizes scaled as
  the method scales them, quality patch sizes and their σ_max table with the images);
- networks (the denoiser and every classifier): ``model_channels`` ``WIDTH``, ``num_blocks`` 1;
  resolution, levels, attention, dropout and augmentation stay; an EDM2 preset keeps its width
  relative to XS (XS ``WIDTH``, XXL 3.5 × ``WIDTH``), so XS and XXL stay two models; a guide network
  (``sample.guide``) shrinks the same way;
- latent space: the VAE becomes ``tiny`` (a small random AutoencoderKL, 4× downsampling);
- training lengths: every ``*_kimg`` of the suite (diffusion and classifier training, warm-up,
  EMA half-life, fine-tuning) is scaled by one factor, so that the longest training of the suite
  lasts ``KIMG`` kimg and the others keep their proportions (App. D's 5 / 10 / 15 Mimg classifiers
  stay three different classifiers); batches at most ``BATCH``;
- EMA snapshots: one in the middle of each training instead of the suite's list (still sampled
  and evaluated, so best-snapshot selection runs);
- annotation grid: ``num_sigmas`` ``SIGMAS``, ``trials`` 1;
- quality gates off (classifier ``min_auc`` 0, ``max_dropped_fraction`` 1): a classifier trained
  for a few steps cannot pass them; its quality is still measured and recorded;
- samples: at most ``SAMPLES`` per model (Heun steps unchanged);
- metrics: feature networks at their smallest size (FD_DINOv2's ViT-S/14 for ViT-L/14), feature
  classifiers trained one epoch.

Cells that a profile would make identical are an error (the profile would change the grid).
"""
from __future__ import annotations

import copy
from typing import Any

from ambient_bench.errors import UserError
from ambient_bench.registry import REGISTRIES

PROFILES = ("full", "tiny")
DATA, OOD_DATA, RESOLUTION = 64, 32, 32
WIDTH, KIMG, BATCH, SIGMAS, SAMPLES = 16, 0.064, 16, 16, 8
_SMALLEST_ARCH = {"arch": "vits14"}  # metric parameter → its smallest value (same code, smaller network)
_KIMG_KEYS = ("duration_kimg", "warmup_kimg", "ema_halflife_kimg", "checkpoint_kimg", "lr_ref_kimg",
              "ema_profile_kimg")


def _training_sections(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """The training recipes of a cell: ``train`` and every classifier section of the method."""
    method = cell["method"]
    guide = (cell["sample"].get("guide") or {}).get("train") or {}
    return [cell["train"]] + [v for v in method.values() if isinstance(v, dict) and "duration_kimg" in v] + \
        ([guide] if "duration_kimg" in guide else [])


def longest_kimg(cells: list[dict[str, Any]]) -> float:
    return max(s["duration_kimg"] for cell in cells for s in _training_sections(cell))


def _shrink_dataset(spec: dict[str, Any] | None, size: int = DATA) -> dict[str, Any] | None:
    if spec is None:
        return None
    params = REGISTRIES["dataset"].get(spec["name"]).params
    out = dict(spec)
    if "limit" in params:
        out["limit"] = min(spec.get("limit") or size, size)
    if "count" in params:
        out["count"] = min(spec["count"], size)
    if spec.get("resolution") and spec["resolution"] > RESOLUTION:
        out["resolution"] = RESOLUTION
    return out


def _scale_patch_sizes(method: dict[str, Any], before: int | None, after: int | None) -> None:
    """Quality patch sizes (and their σ_max table) scaled with the images, as crop sizes are."""
    if not method.get("quality_patch_sizes") or not before or not after or after >= before:
        return
    scale = lambda k: max(1, round(int(k) * after / before))  # noqa: E731
    method["quality_patch_sizes"] = sorted({scale(k) for k in method["quality_patch_sizes"]})
    if method.get("quality_patch_table"):
        method["quality_patch_table"] = {scale(k): v for k, v in method["quality_patch_table"].items()}


def _shrink_network(network: dict[str, Any]) -> dict[str, Any]:
    from ambient_bench.diffusion.edm2 import EDM2_PRESETS

    preset = network.get("preset") or ""
    width = WIDTH
    if preset.startswith("edm2_") and preset != "edm2_tiny":  # XS → WIDTH, XXL → 3.5 × WIDTH
        width = round(WIDTH * EDM2_PRESETS[preset[len("edm2_"):]]["model_channels"] / 128)
    return {**network, "model_channels": width, "num_blocks": 1}


def _shrink_recipe(section: dict[str, Any], factor: float) -> dict[str, Any]:
    out = dict(section)
    for key in _KIMG_KEYS:
        if out.get(key):
            out[key] = out[key] * factor
    out["batch"] = min(out["batch"], BATCH)
    for key, value in (("model_channels", WIDTH), ("num_blocks", 1)):
        if key in out:
            out[key] = value
    return out


def tiny(cell: dict[str, Any], factor: float) -> dict[str, Any]:
    """One resolved cell at the tiny profile; ``factor`` scales every training length (see the module)."""
    cell = copy.deepcopy(cell)
    before = cell["dataset"].get("resolution")
    cell["dataset"] = _shrink_dataset(cell["dataset"])
    _scale_patch_sizes(cell["method"], before, cell["dataset"].get("resolution"))
    cell["mix"]["ood"] = [_shrink_dataset(d, OOD_DATA) for d in cell["mix"]["ood"]]
    cell["evaluate"]["heldout_reference"] = _shrink_dataset(cell["evaluate"]["heldout_reference"])
    cell["network"] = _shrink_network(cell["network"])
    if cell["latent"]["vae"] is not None:
        cell["latent"] = {**cell["latent"], "vae": "tiny", "weights": None}
    guide = cell["sample"]["guide"]
    if guide:
        cell["sample"]["guide"] = {**guide, "network": _shrink_network({**cell["network"], **guide.get("network", {})}),
                                   **({"train": {k: v * factor if k in _KIMG_KEYS and v else v
                                                 for k, v in guide["train"].items()}} if "train" in guide else {})}
    train = _shrink_recipe(cell["train"], factor)
    if train["snapshot_kimg"] is not None:
        train["snapshot_kimg"] = train["duration_kimg"] / 2
        cell["evaluate"]["snapshot_range_kimg"] = None
    cell["train"] = train
    method = cell["method"]
    unused = REGISTRIES["method"].get(method["name"]).unused_params(method)
    for key, value in list(method.items()):
        if key in unused:  # left at its default: it never enters a key, and setting it is an error
            continue
        if isinstance(value, dict) and "duration_kimg" in value:
            method[key] = {**_shrink_recipe(value, factor), "min_auc": 0.0}
        elif key == "max_dropped_fraction":
            method[key] = 1.0
        elif key == "num_sigmas":
            method[key] = min(value, SIGMAS)
        elif key == "trials":
            method[key] = 1
        elif key == "finetune_kimg":
            method[key] = value * factor
    cell["sample"]["num"] = min(cell["sample"]["num"], SAMPLES)
    metrics = []
    for metric in cell["evaluate"]["metrics"]:
        params = REGISTRIES["metric"].get(metric["name"]).params
        metric = dict(metric)
        for key, value in _SMALLEST_ARCH.items():
            if key in params and params[key].choices and value in params[key].choices:
                metric[key] = value
        if "epochs" in params:
            metric["epochs"] = 1
        metrics.append(metric)
    cell["evaluate"]["metrics"] = metrics
    return cell


def apply_profile(name: str, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cell at profile ``name`` ('full' returns them unchanged)."""
    if name not in PROFILES:
        raise UserError(f"unknown profile '{name}' (profiles: {', '.join(PROFILES)})")
    if name == "full":
        return cells
    factor = min(1.0, KIMG / longest_kimg(cells))  # a suite already this small is not stretched
    return [tiny(cell, factor) for cell in cells]


def check_distinct(before: list[Any], after: list[Any], describe: list[str], name: str) -> None:
    """A profile must keep the grid: two cells made identical would silently drop a table row."""
    seen: dict[str, int] = {}
    for i, identity in enumerate(after):
        if identity in seen and before[seen[identity]] != before[i]:
            raise UserError(f"profile {name} makes two cells identical ({describe[seen[identity]]} and {describe[i]}); "
                            f"their difference is a size the profile shrinks")
        seen.setdefault(identity, i)

