"""What a suite cell may contain: sections, their keys, defaults and validation.

A resolved cell is a plain dict with the sections below. Components (dataset, corruption,
method, metrics) are written as a name or ``{name: ..., <params>}`` and validated against
the parameters their class declares.
"""
from __future__ import annotations

from typing import Any, Callable

from ambient_bench.diffusion.edm2 import EDM2_PRESETS
from ambient_bench.diffusion.unet import NETWORK_PRESETS
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, resolve_params, semantic_view
from ambient_bench.registry import REGISTRIES


class Section:
    """A nested mapping with declared keys; ``check`` vets combinations of them."""

    def __init__(self, what: str, params: dict[str, Param],
                 check: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None) -> None:
        self.what, self.params, self.check = what, params, check
        self.__name__ = "mapping"

    def resolve(self, value: Any, key: tuple) -> dict[str, Any]:
        out = resolve_params(self.params, {} if value is None else value, key, what=f"'{self.what}'")
        problem = self.check(out) if self.check else None
        if problem:
            raise ParamError(key + (problem[0],), problem[1])
        return out

    def semantic(self, value: dict[str, Any]) -> dict[str, Any]:
        return semantic_view(self.params, value)


def _default(param: Param, key: tuple) -> Any:
    if param.default is not None and hasattr(param.kind, "resolve"):
        return param.kind.resolve(param.default, key)
    return param.default


class ComponentRef:
    """A registered component: ``name`` or ``{name: ..., **params}``."""

    def __init__(self, kind: str) -> None:
        self.kind, self.__name__ = kind, kind

    def component_class(self, name: str, key: tuple) -> type:
        try:
            return REGISTRIES[self.kind].get(name)
        except UserError as err:
            raise ParamError(key, str(err)) from None

    def resolve(self, value: Any, key: tuple) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ParamError(key, f"expected a {self.kind} name or a mapping with 'name', got {value!r}")
        cls = self.component_class(value["name"], key + ("name",))
        params = {k: v for k, v in value.items() if k != "name"}
        resolved = cls.resolve(params, key)
        unused, declared = cls.unused_params(resolved), cls.params_for(resolved)
        for name in params:  # a value equal to the default changes nothing (a resolved cell resolves again)
            if name in unused and resolved[name] != _default(declared[name], key + (name,)):
                raise ParamError(key + (name,), f"{self.kind} '{cls.name}' does not read {name} with {unused[name]}; "
                                                f"remove it (or change {unused[name].split(':')[0]})")
        return {"name": value["name"], **resolved}

    def semantic(self, value: dict[str, Any]) -> dict[str, Any]:
        cls = REGISTRIES[self.kind].get(value["name"])
        params = {k: v for k, v in value.items() if k != "name"}
        spec = {"name": value["name"], "version": cls.key_version(), "params": cls.key_params(params)}
        components = cls.component_versions(params)
        if components:
            spec["components"] = components
        content = cls(**params).content_identity()
        return {**spec, "content": content} if content else spec


class ComponentList:
    """A list of components of one kind."""

    def __init__(self, kind: str, allow_empty: bool = False) -> None:
        self.ref, self.allow_empty, self.__name__ = ComponentRef(kind), allow_empty, f"list[{kind}]"

    def resolve(self, value: Any, key: tuple) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not (value or self.allow_empty):
            raise ParamError(key, f"expected a {'' if self.allow_empty else 'non-empty '}list of "
                                  f"{self.ref.kind} names, got {value!r}")
        return [self.ref.resolve(v, key + (i,)) for i, v in enumerate(value)]

    def semantic(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.ref.semantic(v) for v in value]


class ComponentOrList:
    """One component, or a list of them (e.g. corruptions chosen uniformly per image)."""

    def __init__(self, kind: str) -> None:
        self.one, self.many, self.__name__ = ComponentRef(kind), ComponentList(kind), f"{kind} or list[{kind}]"

    def resolve(self, value: Any, key: tuple) -> dict[str, Any] | list[dict[str, Any]]:
        return self.many.resolve(value, key) if isinstance(value, list) else self.one.resolve(value, key)

    def semantic(self, value: dict[str, Any] | list[dict[str, Any]]) -> Any:
        return self.many.semantic(value) if isinstance(value, list) else self.one.semantic(value)


def as_list(value: dict[str, Any] | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A ComponentOrList value as a list (None → [])."""
    return [] if value is None else value if isinstance(value, list) else [value]


def spec_label(value: Any) -> str:
    """``gaussian_blur(sigma=0.6, truncate=4.0)`` for a component mapping; ``none`` for None."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" in value:
        args = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value['name']}({args})" if args else str(value["name"])
    return str(value)


def brief_label(kind: str, value: dict[str, Any]) -> str:
    """``ambient_o(annotate=classifier, classifier={duration_kimg: 10})``: only what differs from
    the defaults (for progress lines and plans; results keep the full configuration)."""
    cls = REGISTRIES[kind].get(value["name"])
    declared = cls.params_for(value)
    args = []
    for name, v in value.items():
        param = declared.get(name)
        if name == "name" or param is None:
            continue
        default = param.default
        if hasattr(param.kind, "resolve") and isinstance(default, dict):
            default = param.kind.resolve(default, (name,))
        if isinstance(v, dict) and isinstance(default, dict):
            changed = {k: x for k, x in v.items() if default.get(k) != x}
            if changed:
                args.append(f"{name}={{" + ", ".join(f"{k}: {x}" for k, x in changed.items()) + "}")
        elif v != default:
            args.append(f"{name}={v}")
    return f"{value['name']}({', '.join(args)})" if args else str(value["name"])


def _range(value: list) -> str | None:
    return None if len(value) == 2 and 0 <= value[0] <= value[1] else "expected [from, to] with 0 ≤ from ≤ to"


def _positive_ints(value: list) -> str | None:
    return None if all(v >= 1 for v in value) else "entries must be ≥ 1"


NETWORK = Section("network", {
    "preset": Param("cpu", "architecture preset (EDM's DDPM++: cpu, paper_cifar, paper_64; EDM2's magnitude-"
                           "preserving U-Net: edm2_xs … edm2_xxl, edm2_tiny); keys below override it",
                    kind=str, choices=tuple(NETWORK_PRESETS) + tuple(f"edm2_{p}" for p in EDM2_PRESETS)),
    "model_channels": Param(None, "channels at the first resolution", kind=int, ge=4, nullable=True),
    "channel_mult": Param(None, "channel multiplier per resolution level", kind=list, item=int, nullable=True,
                          check=lambda v: None if v and min(v) >= 1 else "need at least one entry, all ≥ 1"),
    "num_blocks": Param(None, "residual blocks per resolution", kind=int, ge=1, nullable=True),
    "attn_resolutions": Param(None, "resolutions with self-attention", kind=list, item=int, check=_positive_ints,
                              nullable=True),
    "dropout": Param(None, "dropout probability", ge=0, lt=1, nullable=True),
    "label_dim": Param(None, "class-conditional on this many classes (0 = unconditional, as the paper's "
                             "CIFAR/FFHQ/AFHQ scripts)", kind=int, ge=0, nullable=True),
    "augment_dim": Param(None, "augmentation-label inputs (EDM: 9 when augmenting; 0 = none)", kind=int, ge=0,
                         nullable=True),
})

TRAIN = Section("train", {
    "seed": Param(0, "training seed (noise levels, noise, data order, init)", kind=int, ge=0),
    "batch": Param(128, "images per step", kind=int, ge=1, le=1 << 20),
    "duration_kimg": Param(help="training length in thousands of images", gt=0, le=1e7),
    "lr": Param(2e-3, "Adam learning rate", gt=0),
    "warmup_kimg": Param(0.0, "linear learning-rate warm-up length", ge=0),
    "ema_halflife_kimg": Param(10.0, "EMA half-life in thousands of images", gt=0),
    "ema_rampup": Param(0.05, "EMA half-life ≤ rampup × images seen (null = off)", gt=0, nullable=True),
    "grad_clip": Param(None, "max global gradient norm (null = off)", gt=0, nullable=True),
    "P_mean": Param(-1.2, "mean of ln(sigma) during training"),
    "P_std": Param(1.2, "std of ln(sigma) during training", gt=0),
    "sigma_data": Param(0.5, "EDM's data standard deviation", gt=0),
    "augment_p": Param(0.0, "EDM's non-leaky augmentation, its train.py recipe at probability p (paper: 0.12 "
                            "CIFAR, 0.15 at 64 px; half the images mirrored, each other transform with "
                            "probability p; 0 = off; needs network.augment_dim 9)", ge=0, le=1),
    "lr_ref_kimg": Param(None, "EDM2's decay: lr / sqrt(max(kimg / lr_ref_kimg, 1)) after the warm-up (null = "
                               "constant; EDM2-512: 70k batches of 2048 = 143360)", gt=0, nullable=True,
                         omit_default=True),
    "adam_beta2": Param(0.999, "Adam's second-moment decay (EDM2: 0.99)", gt=0, lt=1, omit_default=True),
    "ema_sigma_rels": Param(None, "power-function EMA (EDM2): the relative widths of the averages kept, e.g. "
                                  "[0.05, 0.10]; any other is reconstructed after training (sample.ema_sigma_rel)."
                                  " null = the classic EMA (ema_halflife_kimg)", kind=list, item=float,
                            nullable=True, omit_default=True,
                            check=lambda v: None if v and all(0 < x < 0.3 for x in v) else "entries in (0, 0.3)"),
    "ema_profile_kimg": Param(None, "power EMA: store both averages every this many kimg (the post-hoc "
                                    "reconstruction's basis; null = 8 snapshots over the run)", gt=0,
                              nullable=True, omit_default=True),
    "label_dropout": Param(0.0, "probability of training a sample without its class (a class-conditional network "
                                "then also denoises unconditionally: a guide for classifier-free guidance)",
                           ge=0, lt=1, omit_default=True),
    "snapshot_kimg": Param(None, "keep the EMA network every this many kimg, each sampled and evaluated "
                                 "(null = only the final one)", gt=0, nullable=True),
    "precision": Param("fp32", "fp32, bf16 autocast, or fp16 autocast with loss scaling (CUDA)", kind=str,
                       choices=("fp32", "bf16", "fp16")),
    "batch_gpu": Param(None, "images per forward/backward pass on each device: the batch is accumulated over "
                             "passes when it does not fit (EDM2-XXL: 2048 = 8 GPUs × 8 passes × 32); null = the "
                             "whole share at once", kind=int, ge=1, nullable=True, semantic=False),
    "tf32": Param(False, "allow TF32 matmuls and convolutions on CUDA (paper: off)", kind=bool),
    "channels_last": Param(False, "channels-last memory layout (faster convolutions on GPUs)", kind=bool,
                           semantic=False),
    "compile": Param(False, "torch.compile the network's training forward pass", kind=bool, semantic=False),
    "checkpoint_kimg": Param(10.0, "checkpoint interval", gt=0, semantic=False),
    "log_every": Param(50, "steps between log lines", kind=int, ge=1, semantic=False),
    "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
    "loader_workers": Param(None, "DataLoader workers reading a pool streamed from disk (null = "
                                  "$AMBIENT_BENCH_LOADER_WORKERS, else up to 8 of the cores)", kind=int, ge=0,
                            nullable=True, semantic=False),
})

SAMPLE = Section("sample", {
    "num": Param(1000, "images generated per model", kind=int, ge=2, le=10_000_000),
    "seed": Param(0, "image i starts from the noise of seed (seed, i)", kind=int, ge=0),
    "steps": Param(18, "Heun steps (2·steps - 1 network evaluations)", kind=int, ge=1),
    "sigma_min": Param(0.002, "lowest noise level of the schedule", gt=0),
    "sigma_max": Param(80.0, "highest noise level of the schedule", gt=0),
    "rho": Param(7.0, "schedule curvature", gt=0),
    "ema_sigma_rel": Param(None, "a network trained with train.ema_sigma_rels: sample the EMA of this relative "
                                 "width, reconstructed post hoc (EDM2-XXL on ImageNet-512: 0.015); null = the "
                                 "first stored average", gt=0, lt=0.3, nullable=True, semantic=False),
    "guidance": Param(1.0, "D_g + w·(D − D_g) with the guide network (sample.guide); 1 = no guidance (the paper: "
                           "1.2 for FID, 1.7 for FD_DINOv2)", ge=0, omit_default=True),
    "guide": Param(None, "the guide: the cell trained again with these network / train overrides, e.g. {network: "
                         "{preset: edm2_xs, label_dim: 0}, train: {duration_kimg: 1000}}, sampled at "
                         "guide_sigma_rel", kind=dict, nullable=True, semantic=False),
    "guide_sigma_rel": Param(None, "the guide's reconstructed EMA width (null = its first stored average)", gt=0,
                             lt=0.3, nullable=True, semantic=False),
    "batch": Param(250, "images per sampler batch", kind=int, ge=1, semantic=False),
    "export": Param("none", "also write the samples as PNG files (images/) or an EDM-style samples.npz "
                            "(N×H×W×C uint8); metrics read them from memory either way", kind=str,
                    choices=("none", "png", "npz"), semantic=False),
    "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
})

MIX = Section("mix", {
    "clean_fraction": Param(0.1, "fraction of images kept clean (per-image coin)", ge=0, le=1),
    "corruption": Param(None, "corruption of the other images; a list = one drawn uniformly per image",
                        kind=ComponentOrList("corruption"), nullable=True),
    "discard_rest": Param(False, "drop the images the coin does not keep clean instead of corrupting them",
                          kind=bool),
    "max_clean": Param(None, "keep at most this many clean images (those the coin trusts most: the clean sets of "
                             "growing values are nested) and drop the rest; the corrupted images stay as they are "
                             "(a data-size axis with a fixed bad pool)", kind=int, ge=1, nullable=True,
                       omit_default=True),
    "ood": Param([], "out-of-distribution datasets added to the pool with their own label",
                 kind=ComponentList("dataset", allow_empty=True)),
    "seed": Param(0, "seed of the per-image coin, corruption randomness and fixed noise", kind=int, ge=0),
}, check=lambda m: ("discard_rest", "discard_rest drops the images a corruption would apply to; set "
                                    "corruption: null or discard_rest: false")
   if m["discard_rest"] and m["corruption"] else None)

LATENT = Section("latent", {
    "vae": Param(None, "train in a VAE's latent space: sd-vae-ft-mse (EDM2 / the paper's ImageNet-512: 512 px → "
                       "4×64×64) or tiny (a small random AutoencoderKL for CPU tests); null = pixel space",
                 kind=str, choices=("sd-vae-ft-mse", "tiny"), nullable=True),
    "weights": Param(None, "folder with the VAE's config.json and diffusion_pytorch_model.safetensors (null = the "
                           "Hugging Face cache)", kind=str, nullable=True, semantic=False),
    "xflip": Param(False, "also encode each image mirrored; training draws either with probability 1/2",
                   kind=bool),
    "shard_size": Param(1024, "images per shard file", kind=int, ge=1, semantic=False),
    "batch": Param(32, "images per encoder / decoder call", kind=int, ge=1, semantic=False),
    "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
})

EVALUATE = Section("evaluate", {
    "metrics": Param(help="metrics computed on the samples", kind=ComponentList("metric")),
    "heldout_reference": Param(None, "a second reference, e.g. {name: cifar10, split: test}: every metric is "
                                     "also computed against it as <quantity>_heldout (the paper's Test FID "
                                     "beside Train FID)", kind=ComponentRef("dataset"), nullable=True),
    "against_training": Param([], "names of metrics computed against the clean images this cell trained on (the "
                                  "pool's clean images) instead of the dataset: memorization under mix.max_clean",
                              kind=list, item=str, omit_default=True),
    "per_metric_sample": Param({}, "metric name → overrides of the sample section (ema_sigma_rel, guidance, "
                                   "guide_sigma_rel): that metric is computed on samples of its own, drawn so (EDM2's "
                                   "per-metric presets, e.g. {fd_dinov2: {ema_sigma_rel: 0.2}}); the other metrics, "
                                   "the model columns and the table rows use the cell's sample section",
                               kind=dict, omit_default=True),
    "select": Param("best", "with train.snapshot_kimg: the snapshot a table reports, best (by the first "
                            "metric, as the paper) or last", kind=str, choices=("best", "last")),
    "snapshot_range_kimg": Param(None, "[from, to]: only the EMA snapshots taken in this range are sampled and "
                                       "evaluated (the final network always is); null = every snapshot",
                                 kind=list, item=float, nullable=True, check=_range),
})

CELL = {
    "dataset": Param(help="source of clean images", kind=ComponentRef("dataset")),
    "mix": Param({}, "clean/corrupted mixture", kind=MIX),
    "method": Param(help="training method", kind=ComponentRef("method")),
    "network": Param({}, "denoiser architecture", kind=NETWORK),
    "latent": Param({}, "latent space (EDM2): encode the pool once with a VAE, train and sample there", kind=LATENT),
    "train": Param({}, "training recipe", kind=TRAIN),
    "sample": Param({}, "generation protocol", kind=SAMPLE),
    "evaluate": Param({}, "evaluation protocol", kind=EVALUATE),
}

SECTION_NAMES = tuple(CELL)


PER_METRIC_SAMPLE_KEYS = ("ema_sigma_rel", "guidance", "guide_sigma_rel")


def _check_per_metric_sample(cell: dict[str, Any]) -> None:
    """Each override names one of the cell's metrics and only the keys that pick the network and guidance
    (the samples' count and seeds stay the cell's, so every metric sees the same noise)."""
    names = [m["name"] for m in cell["evaluate"]["metrics"]]
    for name, override in cell["evaluate"]["per_metric_sample"].items():
        key = ("evaluate", "per_metric_sample", name)
        if name not in names:
            raise ParamError(key, f"'{name}' is not one of the cell's metrics ({', '.join(names)})")
        if not isinstance(override, dict) or not set(override) <= set(PER_METRIC_SAMPLE_KEYS):
            raise ParamError(key, f"expected a mapping of {', '.join(PER_METRIC_SAMPLE_KEYS)}, got {override!r}")
        SAMPLE.resolve({**cell["sample"], **override}, key)


def resolve_cell(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a merged cell; raises ParamError with the path of the first problem."""
    cell = resolve_params(CELL, data, (), what="the suite's defaults")
    _check_per_metric_sample(cell)
    mix = cell["mix"]
    if REGISTRIES["dataset"].get(cell["dataset"]["name"]).provides_sources and mix["clean_fraction"] < 1 \
            and mix["corruption"] is None and not mix["discard_rest"]:
        raise ParamError(("mix", "clean_fraction"), f"dataset '{cell['dataset']['name']}' marks its own low-quality "
                         f"images; set mix.clean_fraction: 1.0 so that no high-quality image is flagged as bad")
    return cell
