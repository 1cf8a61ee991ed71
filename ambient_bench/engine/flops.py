"""Forward FLOPs per image of the networks a stage runs, for ``plan``'s FLOP-scaled estimates.

Our own networks (DDPM++, EDM2, the noise classifier) are counted here as configured, with
``torch.utils.flop_counter.FlopCounterMode`` at batch 1 on the meta device (no weights, no memory;
2 FLOPs per multiply-add of every matrix multiply and convolution). Side by side with EDM2's own
``count_flops.py`` (which counts 1 per multiply-add plus elementwise ops) on EDM2's network:
XS 45.7 vs our 89.9 / 2 = 45.0, XXL 555.1 vs 1093.8 / 2 = 546.9. The feature networks of the
metrics, the CLIP-IQA scorer and the VAE are counted once by ``benchmarks/perf/count_flops.py``;
their figures are in ``throughput.yaml`` (``networks``).

Counts are kept per user in ``$AMBIENT_BENCH_CACHE/flops.json`` (default ``~/.cache/ambient_bench``):
counting imports torch._dynamo (FlopCounterMode; 0.6 s of CPU, a third of a small suite's ``plan``) and
builds paper-size networks on the meta device (seconds). The key holds the network's configuration,
the torch version and the source of the modules that build the networks, so an edit there recounts.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

# the VAE's spatial downsampling and latent channels (latents/vae.py: sd-vae-ft-mse 8×, tiny 4×)
VAE_FACTOR = {"sd-vae-ft-mse": 8, "tiny": 4}
LATENT_CHANNELS = 4


def _count(build, inputs: list[tuple[int, ...]], labels: int = 0) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    for device in ("meta", "cpu"):  # meta: instant; a network whose forward needs real values: CPU
        try:
            with torch.device(device):
                net = build().eval()
            args = [torch.zeros(shape, device=device) for shape in inputs]
            extra = {"class_labels": torch.zeros(1, labels, device=device)} if labels else {}
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                net(*args, **extra)
            return float(counter.get_total_flops())
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


PACKAGE = Path(__file__).resolve().parents[1]
NETWORK_CODE = ("diffusion/*.py", "annotation/classifier_net.py", "training/loop.py", "engine/flops.py")


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for pattern in NETWORK_CODE for p in PACKAGE.glob(pattern)):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _stored(what: list[Any], count: Callable[[], float]) -> float:
    """``count()``, or its value from the per-user cache (see the module's docstring)."""
    from ambient_bench import fileio
    from ambient_bench.datasets.manifest import cache_dir

    key = hashlib.sha256(json.dumps([*what, torch.__version__, _code_hash()]).encode()).hexdigest()[:32]
    path = cache_dir() / "flops.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    if isinstance(table, dict) and isinstance(table.get(key), float) and 0 < table[key] < float("inf"):
        return table[key]  # anything else (damaged, edited to nonsense) is counted again and replaced
    value = float(count())
    try:  # a lost update between two processes only means one more count later
        fileio.write_json(path, {**(table if isinstance(table, dict) else {}), key: value})
    except OSError:
        pass  # a read-only home: counted every time, as before
    return value


@functools.lru_cache(maxsize=None)
def _diffusion_flops(net_json: str, channels: int, resolution: int) -> float:
    from ambient_bench.training.loop import build_network

    net_cfg = json.loads(net_json)
    return _stored(["diffusion", net_json, channels, resolution], lambda: _count(
        lambda: build_network(net_cfg, channels, resolution, 0.5),
        [(1, channels, resolution, resolution), (1,)], net_cfg.get("label_dim") or 0))


@functools.lru_cache(maxsize=None)
def _classifier_flops(cfg_json: str, channels: int, resolution: int) -> float:
    from ambient_bench.annotation.classifier_net import build_classifier

    return _stored(["classifier", cfg_json, channels, resolution], lambda: _count(
        lambda: build_classifier(json.loads(cfg_json), channels, resolution, 0.5),
        [(1, channels, resolution, resolution), (1,)]))


def diffusion_flops(net_cfg: dict[str, Any], channels: int, resolution: int) -> float:
    """FLOPs of one forward pass (one image) of the diffusion network ``net_cfg`` (a train stage's ``network``)."""
    return _diffusion_flops(json.dumps(net_cfg, sort_keys=True), channels, resolution)


def classifier_flops(cfg: dict[str, Any], channels: int, resolution: int) -> float:
    """FLOPs of one forward pass (one input) of the noise classifier ``cfg`` (a classifier stage's ``classifier``)."""
    arch = {k: v for k, v in cfg.items() if k in ("preset", "model_channels", "channel_mult", "num_blocks",
                                                  "attn_resolutions", "dropout")}
    return _classifier_flops(json.dumps(arch, sort_keys=True), channels, resolution)


def preset_flops(stage: str, network: str, channels: int, resolution: int, label_dim: int = 0) -> float:
    """Forward FLOPs of a throughput.yaml entry's network, named by its preset."""
    if stage in ("classifier", "annotate"):
        return classifier_flops({"preset": network}, channels, resolution)
    return diffusion_flops({"preset": network, "label_dim": label_dim}, channels, resolution)
