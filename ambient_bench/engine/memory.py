"""Plan-time memory estimates: a cell whose pool, network or batch cannot fit the machine it would run on is
refused before any work, in one line that prints the estimate (``plan`` and ``run``).

The figures are lower bounds, so a refusal is never a false alarm:
- the pool (mix stage, held whole unless streamed from disk, ``data/pool.py``): images × C × H × W × 5 bytes
  (uint8 pixels and the float32 fixed noise Z), and a training run holds the same rows as float32 images and
  noise (8 bytes per value) on its device;
- the network: its parameters counted on the meta device (nothing allocated) × 4 bytes × 5 (weights, gradients,
  Adam's two moments, the EMA);
- a batch's activations: images per pass × H × W × 4 bytes × (3·C + 2·num_blocks·model_channels), the inputs and
  at least two feature maps per block at the first resolution;
- the samples of a sample stage: num × C × H × W bytes.
RAM is this machine's (``os.sysconf``), or where larger the suite's SLURM request for the stage kind
(``resources.<kind>.mem_gb``; ``run`` without a launcher: this machine's only). GPU memory is checked in ``run``
for stages that will run on this machine's CUDA device.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Any

from ambient_bench.components import Dataset
from ambient_bench.engine import flops, work
from ambient_bench.engine.cells import Stage
from ambient_bench.errors import UserError
from ambient_bench.registry import DATASETS

GiB = 2 ** 30


def _size(n: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.3g} {unit}"
    return f"{n:,.0f} bytes"


def machine_ram() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return None


def _count_parameters(net_json: str, channels: int, resolution: int) -> float:
    import torch

    from ambient_bench.training.loop import build_network

    try:
        with torch.device("meta"):
            net = build_network(json.loads(net_json), channels, resolution, 0.5)
    except Exception:  # noqa: BLE001 - a network that does not build fails with its own message later
        return -1.0
    return float(sum(p.numel() for p in net.parameters()))


@functools.lru_cache(maxsize=None)
def _parameters(net_json: str, channels: int, resolution: int) -> int | None:
    """Parameters of the diffusion network, built on the meta device (no memory; kept in the per-user cache beside
    the FLOP counts, engine/flops.py); None if it does not build."""
    count = flops._stored(["parameters", net_json, channels, resolution],
                          lambda: _count_parameters(net_json, channels, resolution))
    return None if count < 0 else int(count)


def _model_channels(net_cfg: dict[str, Any]) -> int:
    from ambient_bench.diffusion.edm2 import EDM2_PRESETS
    from ambient_bench.diffusion.unet import NETWORK_PRESETS

    preset = net_cfg.get("preset") or "cpu"
    base = EDM2_PRESETS.get(preset[5:], {}) if preset.startswith("edm2_") else NETWORK_PRESETS.get(preset, {})
    return net_cfg.get("model_channels") or base.get("model_channels") or 0


def _num_blocks(net_cfg: dict[str, Any]) -> int:
    from ambient_bench.diffusion.unet import NETWORK_PRESETS

    return net_cfg.get("num_blocks") or NETWORK_PRESETS.get(net_cfg.get("preset") or "cpu", {}).get("num_blocks", 1)


def _streamed(mix: Stage, pixels: float) -> bool:
    from ambient_bench.data.pool import in_memory_limit_bytes

    specs = [mix.runtime["dataset"], *mix.runtime["mix"]["ood"]]
    has_reader = all(type(DATASETS.build(s)).reader is not Dataset.reader for s in specs)
    return has_reader and pixels > in_memory_limit_bytes()


def _pool(mix: Stage) -> tuple[float, int, int, int] | None:
    """(images, channels, resolution, bytes held in memory by the mix stage) of a mix stage's pool, or None."""
    dataset = mix.runtime["dataset"]
    size = work.pool_size(mix)
    res = work.resolution_of(dataset)
    if res is None:
        return None
    if size is None:  # a dataset that marks its own images: the pool is all of them and the OOD sources
        counts = [work.dataset_count(s) for s in (dataset, *mix.runtime["mix"]["ood"])]
        if None in counts:
            return None
        images = float(sum(counts))
    else:
        images = float(size.images)
    channels = work._channels(dataset)
    pixels = images * channels * res * res
    return images, channels, res, 0 if _streamed(mix, pixels) else int(pixels * 5)


class Need:
    """What one stage needs: bytes of RAM and of device memory, with the words that explain them."""

    def __init__(self, kind: str, key: tuple, fix: str) -> None:
        self.kind, self.key, self.fix = kind, key, fix
        self.ram, self.device, self.parts = 0.0, 0.0, []

    def add(self, what: str, amount: float, on_device: bool) -> None:
        self.parts.append(f"{what} ≈ {_size(amount)}")
        if on_device:
            self.device += amount
        else:
            self.ram += amount


def stage_needs(stage: Stage) -> list[Need]:
    """The memory a mix, train or sample stage needs, as far as its configuration tells."""
    needs = []
    if stage.kind == "mix":
        pool = _pool(stage)
        if pool and pool[3]:
            need = Need("mix", ("dataset", "resolution"), "lower dataset.resolution or dataset.limit")
            images, c, res, held = pool
            need.add(f"the pool ({images:,.0f} images × {c}×{res}×{res} × 5 bytes)", held, False)
            needs.append(need)
    elif stage.kind == "train":
        cfg, net_cfg = stage.runtime["train"], stage.runtime["network"]
        channels, res, _ = work.network_input(stage)
        if not res:
            return []
        device = _device_of(cfg["device"])
        need = Need("train", ("network", "model_channels"), "lower network.model_channels, train.batch_gpu or the "
                                                            "dataset's resolution")
        params = _parameters(json.dumps(net_cfg, sort_keys=True), channels, res)
        if params is not None:
            need.add(f"the network ({params:,} parameters × 4 bytes × 5: weights, gradients, Adam, EMA)",
                     params * 20.0, device == "cuda")
        per_pass = cfg["batch_gpu"] or math.ceil(cfg["batch"] / max(1, int(os.environ.get("WORLD_SIZE") or 1)))
        maps = 3 * channels + 2 * _num_blocks(net_cfg) * _model_channels(net_cfg)
        need.add(f"a batch's activations ({per_pass:,} images × {res}×{res} × {maps} maps × 4 bytes)",
                 per_pass * res * res * maps * 4.0, device == "cuda")
        mix = work._mix_of(stage)
        pool = _pool(mix)
        if pool and pool[3]:  # training holds its rows as float32 images and noise on its device
            need.add(f"the training set on the {device} ({pool[0]:,.0f} × {pool[1]}×{pool[2]}×{pool[2]} × 8 bytes)",
                     pool[0] * pool[1] * pool[2] * pool[2] * 8.0, device == "cuda")
        needs.append(need)
    elif stage.kind == "sample":
        train = stage.deps["train"]
        while train.kind != "train":
            train = train.deps["train"]
        channels, res, _ = work.network_input(train)
        if res:
            cfg, net_cfg = stage.runtime["sample"], train.runtime["network"]
            need = Need("sample", ("sample", "num"), "lower sample.num or sample.batch")
            need.add(f"the samples ({cfg['num']:,} × {channels}×{res}×{res} bytes)",
                     float(cfg["num"]) * channels * res * res, False)
            batch = min(cfg["batch"], cfg["num"])  # no gradients: the inputs and a first-resolution feature map
            maps = 3 * channels + _model_channels(net_cfg)
            need.add(f"a batch's activations ({batch:,} images × {res}×{res} × {maps} maps × 4 bytes)",
                     batch * res * res * maps * 4.0, _device_of(cfg["device"]) == "cuda")
            needs.append(need)
    return needs


def _device_of(name: str) -> str:
    """'cuda' when a stage set to ``name`` runs on this machine's GPU, else 'cpu' (CUDA is only asked when visible)."""
    if name == "cpu" or not (name == "auto" or name.startswith("cuda")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_bytes() -> int | None:
    """This process's GPU's memory (under torchrun the rank's own, LOCAL_RANK: never a context on GPU 0 for all)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK") or 0) % torch.cuda.device_count()
    return torch.cuda.get_device_properties(index).total_memory


def check_memory(suite: Any, graph: Any, here_only: bool = False) -> None:
    """Refuse (one UserError line, the estimate in it) the first stage of ``graph`` whose memory need exceeds the
    machine it would run on. ``here_only``: this machine (``run`` without a launcher), checking its GPU too;
    otherwise the larger of this machine's RAM and the suite's ``resources.<kind>.mem_gb``."""
    ram = machine_ram()
    gpu = _gpu_bytes() if here_only else None
    seen = set()
    for cell, stages in zip(suite.cells, graph.cells):
        for stage in stages.values():
            if (stage.kind, stage.key) in seen:
                continue
            seen.add((stage.kind, stage.key))
            for need in stage_needs(stage):
                requested = suite.resources.get(need.kind, {}).get("mem_gb")
                limit = ram if here_only or not requested else max(ram or 0, requested * GiB)
                over = []
                if limit and need.ram > limit:
                    over.append(f"{_size(need.ram)} of RAM, over the {_size(limit)} "
                                + ("of this machine" if here_only or limit == ram else
                                   f"of resources.{need.kind}.mem_gb"))
                if gpu and need.device > gpu:
                    over.append(f"{_size(need.device)} of GPU memory, over this GPU's {_size(gpu)}")
                if over:
                    where = cell.locate(need.key) or str(suite.path)
                    raise UserError(f"{where}: cell {cell.label}: the {need.kind} stage needs "
                                    f"{' and '.join(over)} ({'; '.join(need.parts)}); {need.fix}")


def empty_pools(suite: Any, graph: Any) -> None:
    """Refuse a cell whose training pool is expected to be empty (clean_only with mix.clean_fraction 0, ...)."""
    for cell, stages in zip(suite.cells, graph.cells):
        mix = stages.get("mix")
        size = work.pool_size(mix) if mix is not None else None
        if size is not None and size.images < 1:
            where = cell.locate(("mix", "clean_fraction")) or str(suite.path)
            raise UserError(f"{where}: cell {cell.label}: the training pool would be empty (mix.clean_fraction "
                            f"{cell.config['mix']['clean_fraction']:g} keeps ≈{size.images:g} of "
                            f"{work.dataset_count(mix.runtime['dataset']):,} images, and method "
                            f"{cell.config['method']['name']} trains on the clean ones only, or discard_rest drops "
                            f"the others); raise mix.clean_fraction")
