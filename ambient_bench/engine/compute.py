"""Compute before committing to it: the images each stage processes, and GPU-hours where measured.

Each stage's work is counted from its configuration and the datasets' sizes (``Dataset.count``,
which reads no pixels): kimg trained, samples generated (and network evaluations), classifier
inputs of an annotation, images through a metric's feature network. Hours come only from
``throughput.yaml`` (measurements with their date and device); a stage without a matching
measurement is shown with its work and "unknown" hours.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ambient_bench.components import PoolSize
from ambient_bench.diffusion.unet import NETWORK_PRESETS
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.keys import canonical_json
from ambient_bench.registry import DATASETS, METHODS

THROUGHPUT_FILE = Path(__file__).with_name("throughput.yaml")


@dataclass
class Work:
    """What one stage computes: ``units`` thousands of ``unit`` for the throughput entry ``lookup``."""

    text: str
    units: float = 0.0          # in thousands
    lookup: dict[str, Any] | None = None
    totals: dict[str, float] = field(default_factory=dict)  # category → amount, for the summary line


@functools.lru_cache(maxsize=None)
def measurements() -> tuple[dict[str, Any], ...]:
    with open(THROUGHPUT_FILE, encoding="utf-8") as f:
        return tuple(yaml.safe_load(f)["measurements"])


def devices_known() -> list[str]:
    return sorted({m["device"] for m in measurements()})


_COUNTS: dict[str, int | None] = {}


def dataset_count(spec: dict[str, Any]) -> int | None:
    key = canonical_json(spec)
    if key not in _COUNTS:
        _COUNTS[key] = DATASETS.build(spec).count()
    return _COUNTS[key]


def resolution_of(spec: dict[str, Any]) -> int | None:
    return spec.get("resolution") or getattr(DATASETS.get(spec["name"]), "native_resolution", None)


def network_name(net_cfg: dict[str, Any], presets: dict[str, dict[str, Any]]) -> str:
    """The preset's name when nothing overrides it (overrides equal to the preset's values are fine)."""
    preset = presets.get(net_cfg["preset"])
    if preset is None:  # an EDM2 preset (edm2_xs ...): named as such unless its channels are overridden
        return "custom" if net_cfg.get("model_channels") else net_cfg["preset"]
    changed = [k for k, v in net_cfg.items() if k in preset and v is not None and v != preset[k]]
    return "custom" if changed else net_cfg["preset"]


def pool_size(mix_stage: Stage) -> PoolSize | None:
    """Expected sizes of a mix stage's pool (the coin keeps clean_fraction of the images clean)."""
    dataset, mix_cfg = mix_stage.runtime["dataset"], mix_stage.runtime["mix"]
    n = dataset_count(dataset)
    ood = [dataset_count(d) for d in mix_cfg["ood"]]
    if n is None or None in ood or DATASETS.get(dataset["name"]).provides_sources:
        return None
    bad = n * (1 - mix_cfg["clean_fraction"])
    kept = n - bad if mix_cfg["discard_rest"] else n
    low = 0 if mix_cfg["discard_rest"] else bad
    return PoolSize(images=round(kept + sum(ood)), low_quality=round(low), ood=sum(ood),
                    resolution=resolution_of(dataset))


def _dataset_of(stage: Stage) -> dict[str, Any]:
    """The target dataset of the cell a mix, classifier, train or sample stage belongs to."""
    if stage.kind == "mix":
        return stage.runtime["dataset"]
    if stage.kind == "classifier":
        return stage.deps["mix"].runtime["dataset"]
    if stage.kind == "train":  # a view model reads the mix itself
        mix = stage.deps["mix"] if "mix" in stage.deps else stage.deps["annotate"].deps["mix"]
        return mix.runtime["dataset"]
    return _dataset_of(stage.deps["train"])


def stage_work(stage: Stage) -> Work:
    rt = stage.runtime
    if stage.kind == "mix":
        size = pool_size(stage)
        return Work(f"≈{size.images:,} images" if size else "? images")
    if stage.kind in ("train", "classifier"):
        cfg = rt["train"] if stage.kind == "train" else rt["classifier"]
        dataset = _dataset_of(stage)
        if stage.kind == "train":
            name = network_name(rt["network"], NETWORK_PRESETS)
        else:
            from ambient_bench.annotation.classifier_net import PRESETS

            name = network_name(cfg, PRESETS)
        resolution = resolution_of(dataset)
        if resolution is not None and rt.get("view"):  # a pooled view or a grid cell: that many times smaller
            resolution //= rt["view"].get("factor") or rt["view"]["grid"]
        lookup = {"stage": stage.kind, "network": name, "resolution": resolution,
                  "precision": cfg.get("precision", "fp32")}
        return Work(f"{cfg['duration_kimg']:,.6g} kimg trained", cfg["duration_kimg"], lookup,
                    {f"kimg trained ({'diffusion' if stage.kind == 'train' else 'classifiers'})":
                     cfg["duration_kimg"]})
    if stage.kind == "annotate":
        size = pool_size(stage.deps["mix"])
        method = METHODS.build(rt["method"])
        if size is None:
            return Work("? classifier inputs")
        work = method.annotation_work(size)
        inputs = work.get("classifier_inputs", 0)
        if not inputs:
            return Work("–")
        classifiers = [d for n, d in stage.deps.items() if n.startswith("classifier:")]
        from ambient_bench.annotation.classifier_net import PRESETS

        names = {network_name(d.runtime["classifier"], PRESETS) for d in classifiers}
        lookup = {"stage": "annotate", "network": names.pop() if len(names) == 1 else "mixed",
                  "resolution": size.resolution}
        return Work(f"≈{inputs / 1e6:,.4g} M classifier inputs", inputs / 1000, lookup,
                    {"M classifier inputs (annotation)": inputs / 1e6})
    if stage.kind == "sample":
        cfg = rt["sample"]
        nfe = 2 * cfg["steps"] - 1
        train = stage.deps["train"]
        dataset = _dataset_of(train)
        lookup = {"stage": "sample", "network": network_name(train.runtime["network"], NETWORK_PRESETS),
                  "resolution": resolution_of(dataset), "nfe": nfe}
        return Work(f"{cfg['num']:,} samples × {nfe} NFE", cfg["num"] / 1000, lookup,
                    {"samples generated": cfg["num"], "M network evaluations (sampling)": cfg["num"] * nfe / 1e6})
    if stage.kind == "latents":
        size = pool_size(stage.deps["mix"])
        images = size.images if size else None
        return Work(f"≈{images:,} images encoded" if images else "? images encoded")
    if stage.kind == "reconstruct":
        return Work(f"EMA σ_rel {rt['sigma_rel']:g}")
    if stage.kind in ("metric_setup", "evaluate"):
        reference = rt["dataset"]
        metric = rt["metric"]["name"]
        if stage.kind == "metric_setup":  # the reference's features, computed once and cached
            n = dataset_count(reference)
            if n is None:
                return Work("? reference images scored")
        else:
            n = stage.deps["sample"].runtime["sample"]["num"]
        lookup = {"stage": "score", "network": metric, "resolution": resolution_of(reference)}
        what = "reference images" if stage.kind == "metric_setup" else "samples"
        return Work(f"{n:,} {what} scored", n / 1000, lookup, {"images scored (metrics)": n})
    return Work("–")


def hours(work: Work, device: str) -> float | None:
    """GPU-hours of ``work`` on ``device`` from a measurement that matches exactly, else None."""
    if work.lookup is None:
        return 0.0
    for m in measurements():
        if m["device"] == device and all(m.get(k) == v for k, v in work.lookup.items()):
            return work.units * m["seconds_per_kimg"] * m["devices"] / 3600
    return None


def describe_lookup(work: Work) -> str:
    parts = [str(work.lookup.get(k)) for k in ("stage", "network") if work.lookup.get(k) is not None]
    if work.lookup.get("resolution"):
        parts.append(f"{work.lookup['resolution']}px")
    if work.lookup.get("nfe"):
        parts.append(f"{work.lookup['nfe']} NFE")
    if work.lookup.get("precision"):
        parts.append(work.lookup["precision"])
    return " ".join(parts)


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.4g}"


def estimate(stages: list[Stage], device: str) -> tuple[list[tuple[Work, float | None]], list[str]]:
    """Work and hours per stage, and the summary lines (totals, what has no measurement)."""
    rows = [(work, hours(work, device)) for work in (stage_work(s) for s in stages)]
    totals: dict[str, float] = {}
    for work, _ in rows:
        for k, v in work.totals.items():
            totals[k] = totals.get(k, 0.0) + v
    known = sum(h for _, h in rows if h)
    missing: dict[str, int] = {}
    for work, h in rows:
        if h is None:
            missing[describe_lookup(work)] = missing.get(describe_lookup(work), 0) + 1
    lines = ["work: " + "; ".join(f"{_amount(v)} {k}" for k, v in totals.items())]
    where = f"{device.upper()}-hours (measured throughput, {THROUGHPUT_FILE.name})"
    if device not in devices_known():
        lines.append(f"{where}: unknown for every stage: no measurement on '{device}' "
                     f"(measured: {', '.join(devices_known())})")
    elif missing:
        lines.append(f"{where}: {known:,.1f} for the stages with a measurement; unknown for "
                     f"{sum(missing.values())} stages without one: "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(missing.items(), key=lambda kv: -kv[1])))
    else:
        lines.append(f"{where}: {known:,.1f} in total")
    return rows, lines
