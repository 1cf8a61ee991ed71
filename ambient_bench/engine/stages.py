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
from ambient_bench.config.schema import MIX, NETWORK, SAMPLE, TRAIN, ComponentRef, as_list, spec_label
from ambient_bench.data.images import model_to_uint8
from ambient_bench.data.mixing import mix
from ambient_bench.engine.keys import stage_key
from ambient_bench.engine.previews import save_grid
from ambient_bench.engine.store import RunStore
from ambient_bench.progress import bar
from ambient_bench.registry import CORRUPTIONS, DATASETS, METHODS, METRICS

# Bump a stage's version when its code changes what it writes.
STAGE_VERSIONS = {"mix": 2, "annotate": 2, "train": 1, "sample": 1, "metric_setup": 1, "evaluate": 1}
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


def _describe_mix(dataset: dict[str, Any], mix_cfg: dict[str, Any]) -> str:
    corruptions = " | ".join(spec_label(c) for c in as_list(mix_cfg["corruption"])) or "none"
    text = f"{spec_label(dataset)}, {mix_cfg['clean_fraction']:.0%} clean, "
    text += "rest discarded" if mix_cfg["discard_rest"] else f"corruption {corruptions}"
    return text + "".join(f", + OOD {spec_label(d)}" for d in mix_cfg["ood"])


def cell_stages(cfg: dict[str, Any]) -> dict[str, Stage]:
    """The stages of one cell, by name: mix, annotate, train, sample, setup:<m>, evaluate:<m>."""
    ref = lambda kind, spec: ComponentRef(kind).semantic(spec)  # noqa: E731
    mix_cfg = cfg["mix"]
    if not METHODS.get(cfg["method"]["name"]).uses_bad_data:  # the pool is the clean images alone
        mix_cfg = {**mix_cfg, "corruption": None, "ood": [], "discard_rest": True}
    stages: dict[str, Stage] = {}
    stages["mix"] = Stage(
        "mix", {"dataset": ref("dataset", cfg["dataset"]), "mix": MIX.semantic(mix_cfg)},
        {"dataset": cfg["dataset"], "mix": mix_cfg}, {}, _describe_mix(cfg["dataset"], mix_cfg))
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
                      {"metric": metric, "dataset": cfg["dataset"]}, {},
                      f"{spec_label(metric)} on {spec_label(cfg['dataset'])}")
        stages[f"setup:{metric['name']}"] = setup
        stages[f"evaluate:{metric['name']}"] = Stage(
            "evaluate", {"metric": ref("metric", metric)}, {"metric": metric, "dataset": cfg["dataset"]},
            {"sample": stages["sample"], "setup": setup}, f"{metric['name']} of {spec_label(cfg['method'])}")
    return stages


# --- what each stage does -------------------------------------------------------------------

def run_mix(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    rt = stage.runtime["mix"]
    source = DATASETS.build(stage.runtime["dataset"]).load()
    corruptions = [CORRUPTIONS.build(c) for c in as_list(rt["corruption"])]
    ood = [DATASETS.build(d).load() for d in rt["ood"]]
    mixed = mix(source, rt["clean_fraction"], corruptions, rt["seed"], ood_sources=ood,
                discard_rest=rt["discard_rest"], progress=bar)
    fileio.torch_save(out / "mixed.pt", asdict(mixed))
    # preview: originals of the first corrupted images, their corrupted versions, OOD images
    shown = torch.nonzero(mixed.corrupted & (mixed.corruption >= 0)).flatten()[:16]
    rows = [r for r in (source.images[mixed.index[shown]], mixed.images[shown], mixed.images[mixed.ood][:16]) if len(r)]
    if rows:
        width = max(len(r) for r in rows)
        pad = lambda r: torch.cat([r, torch.zeros((width - len(r), *r.shape[1:]), dtype=torch.uint8)])  # noqa: E731
        save_grid(out / "preview.png", torch.cat([pad(r) for r in rows]), columns=width)
    per_corruption = {spec_label(c): int((mixed.corruption == k).sum()) for k, c in enumerate(as_list(rt["corruption"]))}
    return {"num_images": len(mixed.index), "num_corrupted": int(mixed.corrupted.sum()),
            "num_ood": int(mixed.ood.sum()), "per_corruption": per_corruption,
            "dataset_hash": source.content_hash(), "ood_hashes": [d.content_hash() for d in ood]}


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
                 "corrupted": mixed.corrupted[keep], "ood": mixed.ood[keep], "sigma_min": ann.sigma_min[keep].float(),
                 "sigma_max": ann.sigma_max[keep].float(), "buffer": float(ann.buffer)}
    fileio.torch_save(out / "train_set.pt", train_set)
    rows = ["index,corrupted,ood,kept,sigma_min,sigma_max"] + [
        f"{i},{int(c)},{int(o)},{int(k)},{lo:.6g},{hi:.6g}" for i, c, o, k, lo, hi in
        zip(mixed.index.tolist(), mixed.corrupted.tolist(), mixed.ood.tolist(), keep.tolist(),
            ann.sigma_min.tolist(), ann.sigma_max.tolist())]
    fileio.write_text(out / "annotations.csv", "\n".join(rows) + "\n")
    corrupted, ood = train_set["corrupted"], train_set["ood"]
    mean = lambda v, m: float(v[m].mean()) if m.any() else None  # noqa: E731
    return {"num_kept": int(keep.sum()), "num_clean": int((~corrupted & ~ood).sum()),
            "num_corrupted": int(corrupted.sum()), "num_ood": int(ood.sum()),
            "sigma_min_mean": mean(train_set["sigma_min"], corrupted),
            # OOD samples used at every noise level (all_data) have no sigma_max to report
            "sigma_max_mean": mean(train_set["sigma_max"], ood & (train_set["sigma_min"] > 0)),
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
    reference = DATASETS.build(stage.runtime["dataset"]).load().high_quality()
    info = METRICS.build(stage.runtime["metric"]).setup(reference, out)
    return {**info, "reference_hash": reference.content_hash()}


def run_evaluate(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    samples = fileio.torch_load(ctx.dir(stage.deps["sample"]) / "samples.pt")["images"]
    reference = DATASETS.build(stage.runtime["dataset"]).load().high_quality()
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
