"""The stages of one suite cell and what each one reads.

    mix ─► annotate ─► train ─► sample ─► evaluate(metric) ◄─ metric_setup(metric)

A stage's key hashes exactly the configuration it reads (semantic fields only, component
versions included) plus the keys of its upstream stages. ``clean_only`` never reads the
corruption, so its mix stage — and everything downstream — is shared by every corruption
level of a grid.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ambient_bench import fileio
from ambient_bench.components import Annotation, MixedData
from ambient_bench.config.schema import MIX, NETWORK, SAMPLE, TRAIN, ComponentRef, spec_label
from ambient_bench.data.images import model_to_uint8
from ambient_bench.data.mixing import mix
from ambient_bench.engine.keys import stage_key
from ambient_bench.engine.previews import save_grid
from ambient_bench.engine.store import RunStore
from ambient_bench.progress import bar
from ambient_bench.registry import CORRUPTIONS, DATASETS, METHODS, METRICS

# Bump a stage's version when its code changes what it writes.
STAGE_VERSIONS = {"mix": 1, "annotate": 1, "train": 1, "sample": 1, "metric_setup": 1, "evaluate": 1}
REFSTATS_DIR = "_refstats"  # reference statistics, cached by content hash, shared by all stages


class StageIncomplete(RuntimeError):
    """The stage stopped before finishing (its partial outputs are kept for resuming)."""


@dataclass(eq=False)
class Stage:
    kind: str
    material: dict[str, Any]   # what the stage reads: its identity
    runtime: dict[str, Any]    # full resolved config it needs, non-semantic knobs included
    deps: dict[str, "Stage"]
    describe: str
    key: str = field(init=False)

    def __post_init__(self) -> None:
        upstream = {name: dep.key for name, dep in self.deps.items()}
        self.material = {**self.material, "upstream": upstream}
        self.key = stage_key(self.kind, STAGE_VERSIONS[self.kind], self.material)


@dataclass
class Context:
    store: RunStore
    log: Callable[[str], None] = print

    def dir(self, stage: Stage) -> Path:
        return self.store.dir(stage.kind, stage.key)


def cell_stages(cfg: dict[str, Any]) -> dict[str, Stage]:
    """The stages of one cell, by name: mix, annotate, train, sample, setup:<m>, evaluate:<m>."""
    ref = lambda kind, spec: ComponentRef(kind).semantic(spec)  # noqa: E731
    method_cls = METHODS.get(cfg["method"]["name"])
    corruption = cfg["mix"]["corruption"] if method_cls.reads_corruption else None
    mix_cfg = {**cfg["mix"], "corruption": corruption}
    stages: dict[str, Stage] = {}
    stages["mix"] = Stage(
        "mix", {"dataset": ref("dataset", cfg["dataset"]), "mix": MIX.semantic(mix_cfg)},
        {"dataset": cfg["dataset"], "mix": mix_cfg}, {},
        f"{spec_label(cfg['dataset'])}, {cfg['mix']['clean_fraction']:.0%} clean, corruption {spec_label(corruption)}")
    stages["annotate"] = Stage(
        "annotate", {"method": ref("method", cfg["method"])}, {"method": cfg["method"]},
        {"mix": stages["mix"]}, spec_label(cfg["method"]))
    stages["train"] = Stage(
        "train", {"network": NETWORK.semantic(cfg["network"]), "train": TRAIN.semantic(cfg["train"])},
        {"network": cfg["network"], "train": cfg["train"]}, {"annotate": stages["annotate"]},
        f"{spec_label(cfg['method'])}, seed {cfg['train']['seed']}, {cfg['train']['duration_kimg']:g} kimg")
    stages["sample"] = Stage(
        "sample", {"sample": SAMPLE.semantic(cfg["sample"])}, {"sample": cfg["sample"]},
        {"train": stages["train"]}, f"{cfg['sample']['num']} images, Heun {cfg['sample']['steps']} steps")
    for metric in cfg["evaluate"]["metrics"]:
        setup = Stage("metric_setup", {"metric": ref("metric", metric), "reference": ref("dataset", cfg["dataset"])},
                      {"metric": metric, "dataset": cfg["dataset"]}, {}, f"{spec_label(metric)} on {spec_label(cfg['dataset'])}")
        stages[f"setup:{metric['name']}"] = setup
        stages[f"evaluate:{metric['name']}"] = Stage(
            "evaluate", {"metric": ref("metric", metric)}, {"metric": metric, "dataset": cfg["dataset"]},
            {"sample": stages["sample"], "setup": setup}, f"{metric['name']} of {spec_label(cfg['method'])}")
    return stages


# --- what each stage does -------------------------------------------------------------------

def run_mix(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    rt = stage.runtime
    source = DATASETS.build(rt["dataset"]).load()
    corruption = CORRUPTIONS.build(rt["mix"]["corruption"]) if rt["mix"]["corruption"] else None
    mixed = mix(source, rt["mix"]["clean_fraction"], corruption, rt["mix"]["seed"], progress=bar)
    fileio.torch_save(out / "mixed.pt", asdict(mixed))
    shown = torch.nonzero(mixed.corrupted).flatten()[:16]
    save_grid(out / "preview.png", torch.cat([source.images[shown], mixed.images[shown]]), columns=max(1, len(shown)))
    return {"num_images": len(source), "num_corrupted": int(mixed.corrupted.sum()),
            "dataset_hash": source.content_hash()}


def _check_annotation(ann: Annotation, n: int, method: str) -> None:
    for name in ("keep", "sigma_min", "sigma_max"):
        value = getattr(ann, name)
        if not isinstance(value, torch.Tensor) or value.shape != (n,):
            raise ValueError(f"method '{method}' returned an annotation whose '{name}' is not a tensor of shape ({n},)")


def run_annotate(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    mixed = MixedData(**fileio.torch_load(ctx.dir(stage.deps["mix"]) / "mixed.pt"))
    method = METHODS.build(stage.runtime["method"])
    ann = method.annotate(mixed)
    _check_annotation(ann, len(mixed.index), method.name)
    keep = ann.keep.bool()
    train_set = {"images": mixed.images[keep], "noise": mixed.noise[keep], "index": mixed.index[keep],
                 "corrupted": mixed.corrupted[keep], "sigma_min": ann.sigma_min[keep].float(),
                 "sigma_max": ann.sigma_max[keep].float(), "buffer": float(ann.buffer)}
    fileio.torch_save(out / "train_set.pt", train_set)
    rows = ["index,corrupted,kept,sigma_min,sigma_max"] + [
        f"{i},{int(c)},{int(k)},{lo:.6g},{hi:.6g}" for i, c, k, lo, hi in
        zip(mixed.index.tolist(), mixed.corrupted.tolist(), keep.tolist(), ann.sigma_min.tolist(), ann.sigma_max.tolist())]
    fileio.write_text(out / "annotations.csv", "\n".join(rows) + "\n")
    corrupted = train_set["corrupted"]
    return {"num_kept": int(keep.sum()), "num_clean": int((~corrupted).sum()), "num_corrupted": int(corrupted.sum()),
            "sigma_min_mean": float(train_set["sigma_min"][corrupted].mean()) if corrupted.any() else None,
            "buffer": float(ann.buffer)}


def run_train(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    from ambient_bench.training.loop import train

    data = fileio.torch_load(ctx.dir(stage.deps["annotate"]) / "train_set.pt")
    started = time.perf_counter()
    if not train(data, stage.runtime["network"], stage.runtime["train"], out, log=ctx.log):
        raise StageIncomplete("training stopped before its duration; re-run to resume")
    return {"seconds_this_session": round(time.perf_counter() - started, 1),
            "duration_kimg": stage.runtime["train"]["duration_kimg"], "num_train_images": len(data["images"])}


def run_sample(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    from ambient_bench.diffusion.sampler import heun_sample
    from ambient_bench.seeding import torch_generator
    from ambient_bench.training.loop import NETWORK, load_network, resolve_device

    cfg = stage.runtime["sample"]
    device = resolve_device(cfg["device"])
    net = load_network(ctx.dir(stage.deps["train"]) / NETWORK, device)
    images = []
    for start in bar(range(0, cfg["num"], cfg["batch"]), desc="sample", unit="batch"):
        seeds = range(start, min(start + cfg["batch"], cfg["num"]))
        latents = torch.stack([torch.randn(net.image_shape, generator=torch_generator("sample", cfg["seed"], i))
                               for i in seeds])
        x = heun_sample(net, latents.to(device), cfg["steps"], cfg["sigma_min"], cfg["sigma_max"], cfg["rho"])
        images.append(model_to_uint8(x.cpu()))
    samples = torch.cat(images)
    fileio.torch_save(out / "samples.pt", {"images": samples})
    save_grid(out / "samples.png", samples[:64], columns=8)
    return {"num": len(samples), "steps": cfg["steps"], "nfe": 2 * cfg["steps"] - 1}


def run_metric_setup(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    reference = DATASETS.build(stage.runtime["dataset"]).load()
    info = METRICS.build(stage.runtime["metric"]).setup(reference, out)
    return {**info, "reference_hash": reference.content_hash()}


def run_evaluate(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    samples = fileio.torch_load(ctx.dir(stage.deps["sample"]) / "samples.pt")["images"]
    reference = DATASETS.build(stage.runtime["dataset"]).load()
    metric = METRICS.build(stage.runtime["metric"])
    cache = ctx.store.root / REFSTATS_DIR
    cache.mkdir(parents=True, exist_ok=True)
    values = metric.compute(samples, reference, ctx.dir(stage.deps["setup"]), cache)
    fileio.write_json(out / "metrics.json", values)
    return {"values": values, "protocol": metric.protocol(), "num_samples": len(samples),
            "reference_hash": reference.content_hash()}


WORK: dict[str, Callable[[Stage, Path, Context], dict[str, Any]]] = {
    "mix": run_mix, "annotate": run_annotate, "train": run_train, "sample": run_sample,
    "metric_setup": run_metric_setup, "evaluate": run_evaluate,
}
