"""Compute before committing to it: GPU-hours and wall-clock of every stage on a device kind.

Each stage's work (engine/work.py: images × network FLOPs, counted on the real dataset sizes)
becomes hours from ``throughput.yaml``, and every estimate names its source: ``measured`` or
``published`` (an entry for that stage kind, network, resolution, precision and device), or
``FLOP-scaled`` (work FLOPs / (device peak × utilisation), the utilisation implied by an entry of
the same network, else the file's assumed default), or ``negligible`` (CPU work). Totals come
per stage kind and overall, in GPU-hours and in wall-clock at the suite's ``resources``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ambient_bench.engine import flops
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.work import KINDS, Work, stage_work

THROUGHPUT_FILE = Path(__file__).with_name("throughput.yaml")
# anchors whose utilisation a stage may borrow (same network and precision class), most similar first
PROXIES = {"train": ("train",), "classifier": ("classifier", "train"), "annotate": ("annotate", "classifier", "train"),
           "sample": ("sample", "train"), "score": ("score",)}
# an entry matches a stage exactly on these (a latent sampler's decoding is in no entry: "vae" never matches)
MATCH = ("stage", "network", "resolution", "precision", "nfe", "guided", "vae")
SPLIT_KINDS = ("train", "sample", "annotate", "evaluate")  # as engine/runner.py: one task per GPU


@functools.lru_cache(maxsize=None)
def throughput() -> dict[str, Any]:
    with open(THROUGHPUT_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def measurements() -> list[dict[str, Any]]:
    return throughput()["measurements"]


def devices_known() -> list[str]:
    return sorted(throughput()["devices"])


def peak(device: str, precision: str) -> float:
    """Dense peak FLOP/s at a precision class (fp32 | half)."""
    return throughput()["devices"][device][precision] * 1e12


def entry_flops_per_kimg(entry: dict[str, Any]) -> float:
    if entry["stage"] == "score":
        return throughput()["networks"][entry["network"]] * 1e12
    forward = flops.preset_flops(entry["stage"], entry["network"], entry.get("channels", 3), entry["resolution"],
                                 entry.get("label_dim", 0))
    per_unit = {"train": 3, "classifier": 3, "annotate": 1}.get(entry["stage"])
    if per_unit is None:  # sample: nfe evaluations, twice with a guide of the same network
        per_unit = entry["nfe"] * (2 if entry.get("guided") else 1)
    return per_unit * forward * 1000


def utilisation(entry: dict[str, Any]) -> float:
    """The fraction of its device's peak an entry's throughput implies."""
    seconds = entry["seconds_per_kimg"] * entry["devices"]
    return entry_flops_per_kimg(entry) / (seconds * peak(entry["device"], entry["precision"]))


@dataclass
class Estimate:
    hours: float | None
    source: str


def _short(entry: dict[str, Any]) -> str:
    return f"{entry['kind']} {entry['stage']} {entry['network']} {entry['device']}"


def hours(work: Work, device: str) -> Estimate:
    """GPU-hours of ``work`` on ``device`` and where the figure comes from."""
    if not work.gpu:
        return Estimate(0.0, "negligible")
    if device not in throughput()["devices"]:
        return Estimate(None, f"no peak for '{device}' in {THROUGHPUT_FILE.name}")
    lookup = work.lookup or {}
    for entry in measurements():
        if lookup and entry["device"] == device and all(entry.get(k) == lookup.get(k) for k in MATCH if k in lookup):
            return Estimate(work.units * entry["seconds_per_kimg"] * entry["devices"] / 3600, entry["kind"])
    candidates = [e for e in measurements() if lookup and e["stage"] in PROXIES.get(lookup["stage"], ())
                  and e["network"] == lookup.get("network") and e.get("resolution") == lookup.get("resolution")
                  and e["precision"] == work.precision]
    candidates.sort(key=lambda e: (e["device"] != device, PROXIES[lookup["stage"]].index(e["stage"])))
    if candidates:
        util, source = utilisation(candidates[0]), f"FLOP-scaled, u {utilisation(candidates[0]):.3g} " \
                                                   f"from {_short(candidates[0])}"
    else:
        util = throughput()["default_utilisation"][work.precision]
        source = f"FLOP-scaled, u {util:g} assumed"
    note = " (fp16 peak: V100 has no bf16 tensor cores)" if work.precision == "half" and device == "v100" else ""
    return Estimate(work.flops / (peak(device, work.precision) * util) / 3600, source + note)


def _gpus(kind: str, resources: dict[str, dict[str, Any]] | None) -> int:
    """GPUs one job of a stage kind uses at the suite's resources (kinds without a section: one)."""
    res = (resources or {}).get(kind)
    if res is None:
        return 1
    return max(1, res["gpus"] * res["nodes"]) if kind in SPLIT_KINDS else 1


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.1f}"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.4g}"


def estimate(stages: list[Stage], device: str, resources: dict[str, dict[str, Any]] | None = None
             ) -> tuple[list[tuple[Work, Estimate]], list[str]]:
    """Work and estimate per stage, and the summary lines: totals per stage kind and overall, then the work."""
    tp, shared = throughput(), set()
    rows = [(w, hours(w, device)) for w in (stage_work(s, tp["networks"], tp["metric_networks"], shared)
                                            for s in stages)]
    by_kind: dict[str, list[float | None]] = {}
    finish: dict[int, float] = {}
    serial = 0.0
    for stage, (work, est) in zip(stages, rows):
        wall = None if est.hours is None else est.hours / _gpus(stage.kind, resources)
        gpu_h, wall_h, count = by_kind.setdefault(work.kind, [0.0, 0.0, 0])
        by_kind[work.kind] = [None if gpu_h is None or est.hours is None else gpu_h + est.hours,
                              None if wall_h is None or wall is None else wall_h + wall, count + 1]
        start = max((finish.get(id(d), 0.0) for d in stage.deps.values()), default=0.0)
        finish[id(stage)] = start + (wall or 0.0)
        serial += wall or 0.0
    unknown = [k for k, (g, _, _) in by_kind.items() if g is None]
    total = None if unknown else sum(g for g, _, _ in by_kind.values())
    lines = [f"compute on {device.upper()} (work on the real dataset sizes; each stage's source in the table):",
             f"  {'stage kind':<22}{'GPU-hours':>12}{'wall-clock h':>14}{'stages':>8}  sources"]
    order = list(dict.fromkeys(KINDS.values()))
    for kind in sorted(by_kind, key=lambda k: order.index(k) if k in order else len(order)):
        gpu_h, wall_h, count = by_kind[kind]
        sources = sorted({e.source.split(",")[0] for w, e in rows if w.kind == kind})
        lines.append(f"  {kind:<22}{_fmt(gpu_h):>12}{_fmt(wall_h):>14}{count:>8}  {', '.join(sources)}")
    critical = max(finish.values(), default=0.0)
    lines.append(f"  {'total':<22}{_fmt(total):>12}{_fmt(None if unknown else critical):>14}{len(rows):>8}"
                 + (f"  unknown: {', '.join(unknown)}" if unknown else ""))
    gpus = ", ".join(f"{k} {_gpus(k, resources)}"
                     for k in ("train", "classifier", "annotate", "sample", "metric_setup", "evaluate"))
    lines.append(f"wall-clock at the suite's resources (GPUs per job: {gpus}; a job's GPUs in linear scaling): "
                 f"{_fmt(None if unknown else critical)} h with every stage its own job, started when its inputs "
                 f"are done (SLURM afterok, enough GPUs); {_fmt(None if unknown else serial)} h one job at a time; "
                 f"per stage kind: its jobs one after another")
    totals: dict[str, float] = {}
    for work, _ in rows:
        for k, v in work.totals.items():
            totals[k] = totals.get(k, 0.0) + v
    lines.append("work: " + "; ".join(f"{_amount(v)} {k}" for k, v in totals.items()))
    return rows, lines
