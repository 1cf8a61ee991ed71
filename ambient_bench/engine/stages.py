"""What each stage does: mix, classifier, annotate, train, sample, metric_setup, evaluate.

Each ``run_<kind>(stage, out, ctx)`` reads its upstream stages' outputs, writes its own into
``out`` and returns the summary the run store keeps. ``engine/cells.py`` builds the graph of
stages a suite cell needs.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ambient_bench import fencing, fileio
from ambient_bench.components import HIGH_QUALITY, Annotation, AnnotationContext, ImageSet, MixedData
from ambient_bench.config.schema import as_list, spec_label
from ambient_bench.data.images import model_to_uint8, uint8_to_model
from ambient_bench.data import mixing, pool
from ambient_bench.data.mixing import mix
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.latent_stages import latent_decoder, latent_training_data, run_latents, run_reconstruct
from ambient_bench.engine.previews import save_grid
from ambient_bench.engine.store import STAGE_LOG, RunStore
from ambient_bench.errors import UserError
from ambient_bench.progress import bar
from ambient_bench.registry import CORRUPTIONS, DATASETS, METHODS, METRICS, VIEWS
from ambient_bench import distributed
from ambient_bench.training.loop import resolve_device

REFSTATS_DIR = "_refstats"  # reference statistics, cached by content hash, shared by all stages
PER_SAMPLE = "per_sample.npz"  # per-sample scores an evaluate stage keeps (see _save_per_sample)


class SamplingFailed(RuntimeError):
    """The network produced non-finite samples."""


class StageIncomplete(RuntimeError):
    """The stage stopped before finishing (its partial outputs are kept for resuming)."""


@dataclass
class Context:
    store: RunStore
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:  # every line a stage logs also goes to its log.txt
        console = self.log

        def log(line: str) -> None:
            console(line)
            STAGE_LOG.info(line)

        self.log = log

    def dir(self, stage: Stage) -> Path:
        return self.store.dir(stage.kind, stage.key)


def _pool_readers(mix_stage: Stage) -> list[Any]:
    """Readers of the dataset and its OOD sources (None for one that only loads whole)."""
    datasets = [DATASETS.build(mix_stage.runtime["dataset"])]
    datasets += [DATASETS.build(d) for d in mix_stage.runtime["mix"]["ood"]]
    return [d.reader() for d in datasets]


def _streamed_pool(mix_stage: Stage, layout: pool.PoolLayout, readers: list[Any] | None = None) -> pool.PoolImages:
    rt = mix_stage.runtime["mix"]
    corruptions = [CORRUPTIONS.build(c) for c in as_list(rt["corruption"])]
    return pool.PoolImages(readers or _pool_readers(mix_stage), corruptions, rt["seed"], layout)


def load_mixed(mix_stage: Stage, ctx: Context) -> MixedData:
    """The mix stage's pool; a streamed one (``data/pool.py``) with images read on demand and no noise."""
    saved = fileio.torch_load(ctx.dir(mix_stage) / "mixed.pt")
    if saved["images"] is not None:
        return MixedData(**saved)
    layout = pool.PoolLayout(saved["index"], saved["corrupted"], saved["ood"], saved["corruption"], saved["labels"])
    return MixedData(**{**saved, "images": pool.LazyImages(_streamed_pool(mix_stage, layout))})


def _run_mix_streamed(stage: Stage, out: Path, readers: list[Any]) -> dict[str, Any]:
    """The pool's layout only; its pixels are read from the dataset's files when used."""
    rt = stage.runtime["mix"]
    source, ood = readers[0], readers[1:]
    n = len(source)
    origin = source.source if source.source is not None else torch.full((n,), HIGH_QUALITY, dtype=torch.int8)
    layout = mixing.layout(n, origin, source.labels, rt["clean_fraction"], len(as_list(rt["corruption"])), rt["seed"],
                           [len(r) for r in ood], rt["discard_rest"], rt.get("max_clean"))
    fileio.torch_save(out / "mixed.pt", {"images": None, "noise": None, "index": layout.rows,
                                         "corrupted": layout.corrupted, "ood": layout.ood,
                                         "corruption": layout.corruption, "labels": layout.labels})
    images = pool.LazyImages(_streamed_pool(stage, layout, readers))
    shown = torch.nonzero(layout.corruption >= 0).flatten()[:16]
    if len(shown):
        save_grid(out / "preview.png", images[shown], columns=len(shown))
    per_corruption = {spec_label(c): int((layout.corruption == k).sum())
                      for k, c in enumerate(as_list(rt["corruption"]))}
    return {"num_images": len(layout.rows), "num_corrupted": int(layout.corrupted.sum()),
            "num_ood": int(layout.ood.sum()), "per_corruption": per_corruption, "streamed": True,
            "dataset_hash": pool.content_hash(source), "ood_hashes": [pool.content_hash(r) for r in ood]}


def run_mix(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    rt = stage.runtime["mix"]
    readers = _pool_readers(stage)
    if pool.streams(readers):
        ctx.log(f"      streaming the pool from disk: its pixels exceed ${pool.LIMIT_ENV} "
                f"({pool.in_memory_limit_bytes() / 2 ** 30:g} GiB)")
        return _run_mix_streamed(stage, out, readers)
    source = DATASETS.build(stage.runtime["dataset"]).load()
    corruptions = [CORRUPTIONS.build(c) for c in as_list(rt["corruption"])]
    ood = [DATASETS.build(d).load() for d in rt["ood"]]
    mixed = mix(source, rt["clean_fraction"], corruptions, rt["seed"], ood_sources=ood,
                discard_rest=rt["discard_rest"], progress=bar, max_clean=rt.get("max_clean"))
    fileio.torch_save(out / "mixed.pt", asdict(mixed))
    # preview: originals of the first corrupted images, their corrupted versions, OOD images
    shown = torch.nonzero(mixed.corrupted & (mixed.corruption >= 0)).flatten()[:16]
    rows = [r for r in (source.images[mixed.index[shown]], mixed.images[shown], mixed.images[mixed.ood][:16]) if len(r)]
    if rows:
        width = max(len(r) for r in rows)
        pad = lambda r: torch.cat([r, torch.zeros((width - len(r), *r.shape[1:]), dtype=torch.uint8)])  # noqa: E731
        save_grid(out / "preview.png", torch.cat([pad(r) for r in rows]), columns=width)
    per_corruption = {spec_label(c): int((mixed.corruption == k).sum())
                      for k, c in enumerate(as_list(rt["corruption"]))}
    return {"num_images": len(mixed.index), "num_corrupted": int(mixed.corrupted.sum()),
            "num_ood": int(mixed.ood.sum()), "per_corruption": per_corruption,
            "dataset_hash": source.content_hash(), "ood_hashes": [d.content_hash() for d in ood]}


def run_classifier(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    from ambient_bench.annotation import classifier_quality
    from ambient_bench.annotation.classifier_training import CLASSIFIER, load_classifier, train_classifier
    from ambient_bench.annotation.figures import plot_classifier_quality

    mixed = load_mixed(stage.deps["mix"], ctx)
    rt, cfg = stage.runtime, stage.runtime["classifier"]
    if rt["pool"] == "target_vs_ood":
        chosen, labels = ~mixed.corrupted, ~mixed.ood        # label 1 = in distribution
    else:
        chosen, labels = ~mixed.ood, mixed.corrupted         # label 1 = corrupted
    images, labels = mixed.images[chosen], labels[chosen]
    held, measured = classifier_quality.split(mixed.index[chosen], cfg["holdout_fraction"], cfg["seed"])
    trained = labels[~held]
    if trained.all() or not trained.any():
        raise UserError(f"{stage.describe}: its pool has only one class among the {len(trained)} images it trains "
                        f"on; it needs both clean and low-quality (or in- and out-of-distribution) images")
    if not train_classifier(images[~held], trained, cfg, cfg, out, crop_size=rt["crop_size"], log=ctx.log,
                            class_balanced=cfg["class_balance"]):
        raise StageIncomplete("classifier training stopped before its duration; re-run to resume")
    net = load_classifier(out / CLASSIFIER, resolve_device(cfg["device"]))
    quality = classifier_quality.measure(net, uint8_to_model(images[measured]).to(next(net.parameters()).device),
                                         labels[measured], cfg["P_mean"], cfg["P_std"], cfg["seed"], rt["crop_size"])
    quality["in_sample"] = not bool(held.any())  # holdout_fraction 0: measured on images it trained on
    fileio.write_json(out / "quality.json", quality)
    plot_classifier_quality(out / "classifier_quality.png", quality, stage.describe, classifier_quality.LOW_LEVELS)
    if rt["crop_size"] is None:
        classifier_quality.check(quality, cfg["min_auc"], stage.describe)
    lines = (out / "stats.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {"num_images": int(len(trained)), "num_positive": int(trained.sum()),
            "prior": float(trained.float().mean()),
            "objective": "class-balanced BCE (each class weighs ½)" if cfg["class_balance"] else "plain BCE",
            "parameters": fileio.torch_load(out / CLASSIFIER)["parameters"],
            "final_loss": last.get("loss"), "final_train_accuracy": last.get("train_accuracy"), "quality": quality}


def _check_annotation(ann: Annotation, n: int, method: str) -> None:
    for name in ("keep", "sigma_min", "sigma_max"):
        value = getattr(ann, name)
        if not isinstance(value, torch.Tensor) or value.shape != (n,):
            raise ValueError(f"method '{method}' returned an annotation whose '{name}' is not a tensor of shape ({n},)")


def _annotation_figures(mixed: MixedData, ann: Annotation, corruptions: list[str], out: Path) -> list[str]:
    """Usable samples per noise level (paper Fig. 15) and the sigma_min histogram per corruption."""
    from ambient_bench.annotation.figures import plot_sigma_min_histogram, plot_usable_samples

    keep = ann.keep.bool()
    clean = ~mixed.corrupted & ~mixed.ood
    groups = {"clean": (clean & keep).numpy(), "low quality": (mixed.corrupted & keep).numpy(),
              "out of distribution": (mixed.ood & keep).numpy()}
    groups = {name: mask for name, mask in groups.items() if mask.any()}
    reference = int((~mixed.ood).sum())
    # as annotated: the objective's buffer (a train-stage setting) narrows the high-noise ranges further
    written = [plot_usable_samples(out / "usable_samples.png", ann.sigma_min.double().numpy(),
                                   ann.sigma_max.double().numpy(), 1.0, groups, max(reference, 1))]
    low = mixed.corrupted & ~mixed.ood
    if low.any() and keep[low].any() and not ann.sigma_min[low].eq(ann.sigma_min[low][0]).all():
        by_group = {label: ann.sigma_min[low & (mixed.corruption == k) & keep].double().numpy()
                    for k, label in enumerate(corruptions or ["low quality"])}
        if not corruptions:  # the data marked its own low-quality images
            by_group = {"low quality": ann.sigma_min[low & keep].double().numpy()}
        dropped = {label: int((low & ~keep & (mixed.corruption == k)).sum()) for k, label in enumerate(corruptions)}
        written.append(plot_sigma_min_histogram(out / "sigma_min_histogram.png", by_group, dropped))
    return [p.name for p in written]


def run_annotate(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    mixed = load_mixed(stage.deps["mix"], ctx)
    method = METHODS.build(stage.runtime["method"])
    deps = {name.split(":", 1)[1]: dep for name, dep in stage.deps.items() if name.startswith("classifier:")}
    classifiers = {name: ctx.dir(dep) / "classifier.pt" for name, dep in deps.items()}
    quality = {name: ctx.store.summary(dep.kind, dep.key).get("quality") for name, dep in deps.items()}
    corruptions = as_list(stage.deps["mix"].runtime["mix"]["corruption"])
    ann = method.annotate(mixed, AnnotationContext(workdir=out, classifiers=classifiers, classifier_quality=quality,
                                                   corruptions=corruptions,
                                                   mix_seed=stage.deps["mix"].runtime["mix"]["seed"]))
    if not distributed.is_main():  # under torchrun the others scored their share of the images; rank 0 writes
        return {}
    _check_annotation(ann, len(mixed.index), method.name)
    keep = ann.keep.bool()
    streamed = isinstance(mixed.images, pool.LazyImages)  # the pool's rows, not its pixels
    train_set = {"images": None if streamed else mixed.images[keep], "noise": None if streamed else mixed.noise[keep],
                 "pool_rows": torch.nonzero(keep).flatten() if streamed else None, "index": mixed.index[keep],
                 "corrupted": mixed.corrupted[keep], "ood": mixed.ood[keep], "sigma_min": ann.sigma_min[keep].float(),
                 "sigma_max": ann.sigma_max[keep].float(),
                 "view": {name: value[keep] for name, value in ann.view.items()}, "sampler": method.sampler(ann),
                 "labels": None if mixed.labels is None else mixed.labels[keep]}
    fileio.torch_save(out / "train_set.pt", train_set)
    table = {"index": mixed.index, "corrupted": mixed.corrupted.int(), "corruption": mixed.corruption.int(),
             "ood": mixed.ood.int(), "kept": keep.int(), "sigma_min": ann.sigma_min, "sigma_max": ann.sigma_max,
             **ann.columns}
    rows = [",".join(table)] + [",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)
                                for values in zip(*(column.tolist() for column in table.values()))]
    fileio.write_text(out / "annotations.csv", "\n".join(rows) + "\n")
    corruptions = [spec_label(c) for c in as_list(stage.deps["mix"].runtime["mix"]["corruption"])]
    figures = _annotation_figures(mixed, ann, corruptions, out)
    corrupted, ood = train_set["corrupted"], train_set["ood"]
    mean = lambda v, m: float(v[m].mean()) if m.any() else None  # noqa: E731
    low = mixed.corrupted & ~mixed.ood
    return {"num_kept": int(keep.sum()), "num_clean": int((~corrupted & ~ood).sum()),
            "num_corrupted": int(corrupted.sum()), "num_ood": int(ood.sum()),
            "num_dropped_low_quality": int((low & ~keep).sum()),
            "sigma_min_mean": mean(train_set["sigma_min"], corrupted & ~ood),
            # OOD samples used at every noise level (all_data) have no sigma_max to report
            "sigma_max_mean": mean(train_set["sigma_max"], ood & (train_set["sigma_min"] > 0)),
            "figures": sorted(figures + [p.name for p in out.glob("*.png") if p.name not in figures]),
            **ann.summary}


def _view_training_set(stage: Stage, ctx: Context) -> dict[str, Any]:
    """The view model's images: the view of every in-distribution pool image (``View.training_set``)."""
    mixed = load_mixed(stage.deps["mix"], ctx)
    if isinstance(mixed.images, pool.LazyImages):
        raise UserError("view models need the pool in memory; raise AMBIENT_BENCH_IN_MEMORY_GB")
    mix = stage.deps["mix"].runtime["mix"]
    data = VIEWS.build(stage.runtime["view"]).training_set(mixed, as_list(mix["corruption"]), mix["seed"])
    n = len(data["images"])
    return {**data, "noise": torch.zeros(data["images"].shape), "sigma_min": torch.zeros(n),
            "sigma_max": torch.zeros(n)}


def run_train(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    from ambient_bench.training.loop import CHECKPOINT, NETWORK, train

    if stage.runtime.get("view"):  # a view model: the pooled images of the whole pool, before any annotation
        data = _view_training_set(stage, ctx)
    else:
        data = fileio.torch_load(ctx.dir(stage.deps["annotate"]) / "train_set.pt")
        if "latents" in stage.deps:  # latent space: the loop reads the kept rows' latents from the shards
            data = latent_training_data(stage, data, ctx)
        elif data["images"] is None:  # a streamed pool: the loop reads the kept rows from disk
            data["pool_images"] = load_mixed(stage.deps["annotate"].deps["mix"], ctx).images.source
    init = fileio.torch_load(ctx.dir(stage.deps["pretrain"]) / CHECKPOINT) if "pretrain" in stage.deps else None
    views = [(VIEWS.build(dep.runtime["view"]).spec(), ctx.dir(dep) / NETWORK) for name, dep in stage.deps.items()
             if name.startswith("view:")]
    started = time.perf_counter()
    if not train(data, stage.runtime["network"], stage.runtime["train"], out, log=ctx.log, init=init,
                 objective=stage.runtime["objective"], views=views):
        raise StageIncomplete("training stopped before its duration; re-run to resume")
    info = out / "network.json"
    return {"seconds_this_session": round(time.perf_counter() - started, 1),
            "num_parameters": json.loads(info.read_text())["num_parameters"] if info.is_file() else None,
            "torch_threads": torch.get_num_threads(),  # CPU results depend on it at float level
            "duration_kimg": stage.runtime["train"]["duration_kimg"], "num_train_images": len(data["index"])}


def _last_training_loss(train_dir: Path) -> str:
    """What a network that samples NaN ended its training at, from its stats.jsonl: a run diverging within its
    last steps leaves finite but huge weights (lr 1e5 on a 2-step run: loss 9e13, no step non-finite)."""
    last = None
    with contextlib.suppress(OSError):
        for line in (train_dir / "stats.jsonl").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                entry = json.loads(line)
                last = entry if "loss" in entry else last
    if last is None:
        return f" (see its training's {train_dir / 'stats.jsonl'})"
    lr = last.get("lr")
    return (f"; its training ended at loss {float(last['loss']):.3g} (step {last.get('step')}"
            + (f", train.lr {lr:g}" if isinstance(lr, (int, float)) else "") + f"; {train_dir / 'stats.jsonl'})")


def run_sample(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    from ambient_bench.diffusion.guidance import guided
    from ambient_bench.diffusion.sampler import fixed_mask_denoiser, heun_sample
    from ambient_bench.seeding import torch_generator
    from ambient_bench.training.loop import NETWORK, load_network, resolve_device, snapshot_name

    cfg = stage.runtime["sample"]
    device = resolve_device(cfg["device"])
    kimg = stage.runtime.get("snapshot_kimg")
    net = load_network(ctx.dir(stage.deps["train"]) / (snapshot_name(kimg) if kimg else NETWORK), device)
    guide = load_network(ctx.dir(stage.deps["guide"]) / NETWORK, device) if "guide" in stage.deps else None
    to_pixels = latent_decoder(stage, ctx, device)  # latent cells decode their samples with the VAE
    if net.sampler and net.sampler["name"] != "fixed_mask":
        raise UserError(f"unknown sampler {net.sampler['name']!r} recorded with the network")
    # Under torchrun every rank samples every world-th batch of seeds (the batches are those of one
    # process, so each image is computed exactly as there; distributed.split_map gathers them in order).
    rank, world = distributed.rank(), distributed.world_size()
    started = time.perf_counter()
    starts = list(range(0, cfg["num"], cfg["batch"]))
    progress = bar(total=len(starts[rank::world]), desc="sample", unit="batch", disable=rank != 0)

    def sample_batch(b: int) -> torch.Tensor:
        seeds = range(starts[b], min(starts[b] + cfg["batch"], cfg["num"]))
        latents = torch.stack([torch.randn(net.image_shape, generator=torch_generator("sample", cfg["seed"], i))
                               for i in seeds])
        denoiser, guide_denoiser = net, guide
        if net.label_dim:  # sample i's class is drawn from its own seed, uniformly over the classes
            classes = torch.tensor([int(torch.randint(net.label_dim, (), generator=torch_generator(
                "sample-class", cfg["seed"], i))) for i in seeds])
            onehot = torch.nn.functional.one_hot(classes, net.label_dim).float().to(device)
            denoiser = lambda x, s: net(x, s, class_labels=onehot)  # noqa: E731
            if guide is not None and guide.label_dim:  # a class-conditional guide is told the same class
                guide_denoiser = lambda x, s: guide(x, s, class_labels=onehot)  # noqa: E731
        denoiser = guided(denoiser, guide_denoiser, cfg.get("guidance", 1.0))
        if net.sampler:  # fixed_mask: one mask per seed, at the training survival
            masks = torch.stack([torch.rand((1, *net.image_shape[1:]), generator=torch_generator(
                "sample-mask", cfg["seed"], i)) < net.sampler["survival"] for i in seeds]).to(device)
            denoiser = fixed_mask_denoiser(denoiser, masks, net.image_shape[0])
        x = heun_sample(denoiser, latents.to(device), cfg["steps"], cfg["sigma_min"], cfg["sigma_max"], cfg["rho"])
        if not bool(torch.isfinite(x).all()):  # uint8 conversion would turn NaN into plausible pixels
            first = seeds[int(torch.nonzero(~torch.isfinite(x.flatten(1)).all(dim=1))[0])]
            raise SamplingFailed(f"sample {first} has non-finite pixels: the network outputs NaN or inf"
                                 f"{_last_training_loss(ctx.dir(stage.deps['train']))}; no metric is computed on it")
        progress.update(1)
        return to_pixels(x) if to_pixels is not None else model_to_uint8(x.cpu())

    with progress:
        images = distributed.split_map(sample_batch, len(starts))
    if world > 1:
        mine = starts[rank::world]
        count = sum(min(cfg["batch"], cfg["num"] - start) for start in mine)
        print(f"rank {rank} of {world}: sampled {count} images ({len(mine)} of {len(starts)} batches)", flush=True)
        if rank != 0:
            return {}
    samples = torch.cat(images)
    fileio.torch_save(out / "samples.pt", {"images": samples})
    export_samples(samples, out, cfg["export"])
    save_grid(out / "samples.png", samples[:64], columns=8)
    return {"num": len(samples), "steps": cfg["steps"], "nfe": 2 * cfg["steps"] - 1, "ranks": world,
            "guidance": cfg.get("guidance", 1.0),
            "seconds_sampling": round(time.perf_counter() - started, 3)}


def export_samples(samples: torch.Tensor, out: Path, form: str) -> None:
    """PNG files named by seed index, or an npz with ``samples`` N×H×W×C uint8 (EDM's layout)."""
    if form == "npz":
        import numpy as np

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
                np.savez(f, samples=samples.permute(0, 2, 3, 1).numpy())

        fileio.atomic_write(out / "samples.npz", write)
    elif form == "png":
        from PIL import Image

        folder = out / "images"
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(samples.permute(0, 2, 3, 1).numpy()):
            fencing.check()  # written in place, not through fileio: the stage must still be ours
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:06d}.png")


def run_metric_setup(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    reference = DATASETS.build(stage.runtime["dataset"]).load().high_quality()
    info = METRICS.build(stage.runtime["metric"]).setup(reference, out)
    return {**info, "reference_hash": reference.content_hash()}


def run_evaluate(stage: Stage, out: Path, ctx: Context) -> dict[str, Any]:
    samples = fileio.torch_load(ctx.dir(stage.deps["sample"]) / "samples.pt")["images"]
    if "mix" in stage.deps:  # evaluate.against_training: the clean images the cell trained on
        mixed = load_mixed(stage.deps["mix"], ctx)
        clean = ~mixed.corrupted & ~mixed.ood
        reference = ImageSet(images=mixed.images[torch.nonzero(clean).flatten()],
                             labels=None if mixed.labels is None else mixed.labels[clean])
    else:
        reference = DATASETS.build(stage.runtime["dataset"]).load().high_quality()
    metric = METRICS.build(stage.runtime["metric"])
    cache = ctx.store.root / REFSTATS_DIR
    cache.mkdir(parents=True, exist_ok=True)
    values = metric.compute(samples, reference, ctx.dir(stage.deps["setup"]), cache)
    if not distributed.is_main():  # under torchrun the others extracted their share of the features
        return {}
    fileio.write_json(out / "metrics.json", values)
    summary = {"values": values, "protocol": metric.protocol(), "num_samples": len(samples),
               "reference_hash": reference.content_hash()}
    per_sample = _save_per_sample(metric, len(samples), out)
    return {**summary, "per_sample": per_sample} if per_sample else summary


def _save_per_sample(metric: Any, num: int, out: Path) -> list[str]:
    """Store the optional ``metric.per_sample()`` arrays (name → one score per sample, sample i at
    index i) as PER_SAMPLE in the stage folder; the names stored. Pairwise comparisons between
    models (win-rates, ``results.collect``) read them: every model samples image i from seed i."""
    arrays = metric.per_sample() if callable(getattr(metric, "per_sample", None)) else {}
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in (arrays or {}).items()}
    for name, value in arrays.items():
        if value.shape != (num,):
            raise ValueError(f"metric '{metric.name}': per_sample()['{name}'] has shape {value.shape}, "
                             f"expected one score per sample ({num},)")
    if arrays:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
                np.savez(f, **arrays)
        fileio.atomic_write(out / PER_SAMPLE, write)
    return sorted(arrays)


WORK: dict[str, Callable[[Stage, Path, Context], dict[str, Any]]] = {
    "mix": run_mix, "classifier": run_classifier, "annotate": run_annotate, "train": run_train, "sample": run_sample,
    "metric_setup": run_metric_setup, "evaluate": run_evaluate, "latents": run_latents, "reconstruct": run_reconstruct,
}
