"""What each stage computes, counted from its configuration and the datasets' sizes: images trained,
samples × network evaluations, classifier inputs, images encoded or scored, and the FLOPs of it all.

Sizes are the real datasets': where the data root holds stand-ins, a dataset's ``nominal_count``
(its official size) replaces the files' count, so a plan on stand-ins budgets the paper's work.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ambient_bench.components import PoolSize
from ambient_bench.diffusion.unet import NETWORK_PRESETS
from ambient_bench.engine import flops
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.keys import canonical_json
from ambient_bench.registry import DATASETS, METHODS

# The stage kinds of the summary, in the order they are printed
KINDS = {"train": "diffusion training", "classifier": "classifier training", "annotate": "annotation",
         "latents": "latents encoding", "sample": "sampling", "metric_setup": "feature extraction",
         "evaluate": "feature extraction", "reconstruct": "reconstruct (CPU)", "mix": "mixing (CPU)"}
HALF = ("bf16", "fp16")


@dataclass
class Work:
    """One stage's work: ``flops`` on the GPU (0 with ``gpu`` False), ``units`` thousands of the
    throughput entry ``lookup``'s unit, the precision class it runs at (fp32 | half)."""

    text: str
    kind: str
    flops: float = 0.0
    units: float = 0.0
    precision: str = "fp32"
    lookup: dict[str, Any] | None = None
    gpu: bool = True
    totals: dict[str, float] = field(default_factory=dict)  # category → amount, for the work line


@functools.lru_cache(maxsize=None)
def _count(key: str) -> tuple[int | None, bool]:
    """(images, nominal): the real size where the files are stand-ins and the dataset knows it."""
    dataset = DATASETS.build(json.loads(key))
    if dataset.fingerprint().get("standin") and dataset.nominal_count() is not None:
        return dataset.nominal_count(), True
    return dataset.count(), False


def dataset_count(spec: dict[str, Any]) -> int | None:
    return _count(canonical_json(spec))[0]


@functools.lru_cache(maxsize=None)
def _reference_count(key: str) -> int | None:
    dataset = DATASETS.build(json.loads(key))
    count = getattr(dataset, "reference_count", None)
    return count() if count is not None else _count(key)[0]


def reference_count(spec: dict[str, Any]) -> int | None:
    """The images a metric scores as its reference: the high-quality ones of a dataset that marks them
    (user_folders: the good folder, not the whole pool), else the whole dataset."""
    return _reference_count(canonical_json(spec))


def forget() -> None:
    """Count the files again (a new data root)."""
    _count.cache_clear()
    _reference_count.cache_clear()


def resolution_of(spec: dict[str, Any]) -> int | None:
    return spec.get("resolution") or getattr(DATASETS.get(spec["name"]), "native_resolution", None)


def network_name(net_cfg: dict[str, Any], presets: dict[str, dict[str, Any]]) -> str:
    """The preset's name when nothing that changes compute overrides it (dropout and overrides equal to
    the preset's values are fine)."""
    preset = presets.get(net_cfg["preset"])
    if preset is None:  # an EDM2 preset (edm2_xs ...): named as such unless its channels are overridden
        return "custom" if net_cfg.get("model_channels") else net_cfg["preset"]
    changed = [k for k, v in net_cfg.items()
               if k in preset and k != "dropout" and v is not None and v != preset[k]]
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


def _mix_of(stage: Stage) -> Stage:
    if stage.kind == "mix":
        return stage
    if "mix" in stage.deps:
        return stage.deps["mix"]
    return _mix_of(stage.deps["annotate"] if "annotate" in stage.deps else stage.deps["train"])


def _channels(spec: dict[str, Any]) -> int:
    return spec.get("channels") or (1 if spec["name"] == "digits" else 3)


def network_input(train: Stage) -> tuple[int, int | None, str | None]:
    """(channels, resolution, VAE name or None) of what a train stage's network sees."""
    dataset = _mix_of(train).runtime["dataset"]
    resolution = resolution_of(dataset)
    if "latents" in train.deps:
        vae = train.deps["latents"].runtime["latent"]["vae"]
        return flops.LATENT_CHANNELS, resolution and resolution // flops.VAE_FACTOR.get(vae, 8), vae
    view = train.runtime.get("view")
    if resolution is not None and view:  # a pooled view or a grid cell: that many times smaller
        resolution //= view.get("factor") or view["grid"]
    return _channels(dataset), resolution, None


def _precision(cfg: dict[str, Any]) -> str:
    return "half" if cfg.get("precision") in HALF else "fp32"


def vae_flops(networks: dict[str, float], vae: str, part: str, pixels: int) -> float:
    if vae != "sd-vae-ft-mse":  # the tiny test VAE
        return 0.0
    return networks[f"sd_vae_{part}_512"] * 1e9 * (pixels / 512) ** 2


def stage_work(stage: Stage, networks: dict[str, float], metric_networks: dict[str, str],
               shared: set[str]) -> Work:
    """``networks``: feature-network GFLOP per image; ``shared``: features already counted (a second metric
    on the same features reuses them: the reference cache, and the last extraction in one process)."""
    rt, kind = stage.runtime, KINDS.get(stage.kind, stage.kind)
    if stage.kind == "mix":
        size = pool_size(stage)
        return Work(f"≈{size.images:,} images" if size else "? images", kind, gpu=False)
    if stage.kind == "train":
        cfg, (ch, res, _) = rt["train"], network_input(stage)
        name = network_name(rt["network"], NETWORK_PRESETS)
        per_image = 3 * flops.diffusion_flops(rt["network"], ch, res) if res else 0.0  # forward + backward ≈ 3×
        return Work(f"{cfg['duration_kimg']:,.6g} kimg trained", kind, per_image * cfg["duration_kimg"] * 1000,
                    cfg["duration_kimg"], _precision(cfg),
                    {"stage": "train", "network": name, "resolution": res, "precision": _precision(cfg)},
                    totals={"kimg trained (diffusion)": cfg["duration_kimg"]})
    if stage.kind == "classifier":
        from ambient_bench.annotation.classifier_net import PRESETS

        cfg = rt["classifier"]
        dataset = _mix_of(stage).runtime["dataset"]
        res = resolution_of(dataset)  # a crops classifier sees its crops on a full-size canvas
        per_image = 3 * flops.classifier_flops(cfg, _channels(dataset), res) if res else 0.0
        return Work(f"{cfg['duration_kimg']:,.6g} kimg trained", kind, per_image * cfg["duration_kimg"] * 1000,
                    cfg["duration_kimg"], _precision(cfg),
                    {"stage": "classifier", "network": network_name(cfg, PRESETS), "resolution": res,
                     "precision": _precision(cfg)}, totals={"kimg trained (classifiers)": cfg["duration_kimg"]})
    if stage.kind == "annotate":
        return _annotate_work(stage, networks)
    if stage.kind == "latents":
        size, latent = pool_size(stage.deps["mix"]), rt["latent"]
        if size is None:
            return Work("? images encoded", kind)
        images = size.images * (2 if latent.get("xflip") else 1)
        return Work(f"≈{images:,} images encoded", kind,
                    images * vae_flops(networks, latent["vae"], "encoder", size.resolution or 0),
                    gpu=latent["vae"] != "tiny", totals={"images encoded (VAE)": images})
    if stage.kind == "sample":
        return _sample_work(stage, networks)
    if stage.kind in ("metric_setup", "evaluate"):
        metric = rt["metric"]["name"]
        network = metric_networks.get(metric)
        if stage.kind == "metric_setup":
            n = reference_count(rt["dataset"])
            what, source = "reference images", canonical_json(rt["dataset"])
        else:
            n, what, source = stage.deps["sample"].runtime["sample"]["num"], "samples", stage.deps["sample"].key
        if n is None:
            return Work(f"? {what} scored", kind)
        if network is None or (metric == "clip_iqa" and not rt["metric"].get("scorer", "clip_iqa").startswith("clip")):
            return Work(f"{n:,} {what} scored (CPU)", kind, gpu=False)
        parts = []
        if f"{source}|{network}" not in shared:
            shared.add(f"{source}|{network}")
            parts.append((n, what))
        reference = canonical_json(rt["dataset"])
        if stage.kind == "evaluate" and f"{reference}|{network}" not in shared:  # a reference no setup stage
            shared.add(f"{reference}|{network}")                                # scored: its first evaluate does
            parts.append((reference_count(rt["dataset"]) or 0, "reference images"))
        if not parts:
            return Work(f"{n:,} {what}: features shared", kind, gpu=False)
        n = sum(count for count, _ in parts)
        per_image = networks[network] * 1e9
        if network.startswith("clip"):  # CLIP-IQA runs at the image's size, at least CLIP's 224²
            per_image *= max(1.0, ((resolution_of(rt["dataset"]) or 224) / 224) ** 2)
        return Work(" + ".join(f"{c:,} {w}" for c, w in parts) + " scored", kind, per_image * n, n / 1000, "fp32",
                    {"stage": "score", "network": network}, totals={f"images through {network}": n})
    return Work("–", kind, gpu=False)


def _sample_work(stage: Stage, networks: dict[str, float]) -> Work:
    cfg, train = stage.runtime["sample"], stage.deps["train"]
    while train.kind != "train":  # a post-hoc EMA reconstruction of the trained network
        train = train.deps["train"]
    nfe = 2 * cfg["steps"] - 1
    ch, res, vae = network_input(train)
    per_eval = flops.diffusion_flops(train.runtime["network"], ch, res) if res else 0.0
    guided = "guide" in stage.deps
    if guided and res:  # every evaluation also runs the guide network
        per_eval += flops.diffusion_flops(stage.deps["guide"].runtime["network"], ch, res)
    pixels = resolution_of(_mix_of(train).runtime["dataset"]) or 0
    decode = vae_flops(networks, vae, "decoder", pixels) if vae else 0.0
    evaluations = cfg["num"] * nfe * (2 if guided else 1)
    return Work(f"{cfg['num']:,} samples × {nfe} NFE" + (" × 2 (guide)" if guided else ""), KINDS["sample"],
                cfg["num"] * (nfe * per_eval + decode), cfg["num"] / 1000, "fp32",
                {"stage": "sample", "network": network_name(train.runtime["network"], NETWORK_PRESETS),
                 "resolution": res, "nfe": nfe, "guided": guided, **({"vae": vae} if vae else {})},
                totals={"samples generated": cfg["num"], "M network evaluations (sampling)": evaluations / 1e6})


def _annotate_work(stage: Stage, networks: dict[str, float]) -> Work:
    from ambient_bench.annotation.classifier_net import PRESETS

    size = pool_size(stage.deps["mix"])
    if size is None:
        return Work("? classifier inputs", KINDS["annotate"])
    work = METHODS.build(stage.runtime["method"]).annotation_work(size)
    inputs, clip_pixels = work.get("classifier_inputs", 0), work.get("clip_pixels", 0)
    total, lookup, texts = 0.0, None, []
    if inputs:
        classifiers = [d for n, d in stage.deps.items() if n.startswith("classifier:")]
        cfg = classifiers[0].runtime["classifier"]
        res, ch = size.resolution, _channels(stage.deps["mix"].runtime["dataset"])
        per_input = flops.classifier_flops(cfg, ch, res) if res else 0.0
        total += per_input * inputs
        names = {network_name(d.runtime["classifier"], PRESETS) for d in classifiers}
        lookup = {"stage": "annotate", "network": names.pop() if len(names) == 1 else "mixed", "resolution": res,
                  "precision": "fp32"}
        texts.append(f"≈{inputs / 1e6:,.4g} M classifier inputs")
    if clip_pixels:
        total += networks["clip_rn50_224"] * 1e9 * clip_pixels / 224 ** 2
        texts.append(f"≈{clip_pixels / 224 ** 2 / 1e6:,.4g} M CLIP-IQA inputs (224² equivalents)")
    if not texts:
        return Work("–", KINDS["annotate"], gpu=False)
    return Work("; ".join(texts), KINDS["annotate"], total, inputs / 1000, "fp32", lookup if not clip_pixels else None,
                totals={"M classifier inputs (annotation)": inputs / 1e6} if inputs else
                {"M CLIP-IQA inputs (annotation, 224² equivalents)": clip_pixels / 224 ** 2 / 1e6})
