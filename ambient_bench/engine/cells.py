"""The stages of one suite cell and what each one reads (the graph; ``stages`` runs them).

    mix ─► annotate ─► train ─► sample ─► evaluate(metric) ◄─ metric_setup(metric)
             ▲           ▲
    mix' ─► classifier   pretrain (a method that fine-tunes another's model: its mix, annotate, train)

(mix' = the pool a requested classifier learns from.) A stage's key hashes exactly the
configuration it reads (semantic fields only, component versions included) plus the keys of
its upstream stages. ``clean_only`` never reads the corruption, so its mix stage — and
everything downstream — is shared by every corruption level of a grid. With
``train.snapshot_kimg`` every EMA snapshot gets its own sample and evaluate stages. A metric named in
``evaluate.per_metric_sample`` is computed on samples of its own (stage ``sample:<metric>``, drawn with
those sample settings: EDM2 reports FID and FD_DINOv2 each at its own EMA width and guidance).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION
from ambient_bench.components import ClassifierRequest
from ambient_bench.config.schema import (LATENT, MIX, NETWORK, SAMPLE, TRAIN, ComponentRef, as_list, brief_label,
                                         spec_label)
from ambient_bench.diffusion.augment import VERSION as AUGMENT_VERSION
from ambient_bench.engine.keys import stage_key
from ambient_bench.registry import DATASETS, METHODS, VIEWS

# Bump a stage's version when its code changes what it writes.
STAGE_VERSIONS = {"mix": 3, "classifier": 3, "annotate": 3, "train": 2, "sample": 1, "metric_setup": 1,
                  "evaluate": 1, "latents": 1, "reconstruct": 1}


def _augmentation(augment_p: float) -> dict[str, Any]:
    """Key material of a training stage's augmentation: its version when it augments (so a change of the pipe
    retrains exactly the augmented models), nothing otherwise (so unaugmented stages keep their keys)."""
    return {"augment_version": AUGMENT_VERSION} if augment_p > 0 else {}


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


def _describe_mix(dataset: dict[str, Any], mix_cfg: dict[str, Any]) -> str:
    corruptions = " | ".join(spec_label(c) for c in as_list(mix_cfg["corruption"])) or "none"
    text = f"{brief_label('dataset', dataset)}, {mix_cfg['clean_fraction']:.0%} clean, "
    text += "rest discarded" if mix_cfg["discard_rest"] else f"corruption {corruptions}"
    return text + "".join(f", + OOD {spec_label(d)}" for d in mix_cfg["ood"])


def _classifier_pool(mix_cfg: dict[str, Any], request: ClassifierRequest, dataset: dict[str, Any]) -> dict[str, Any]:
    """The mix section of the pool a requested classifier learns from (see ClassifierRequest)."""
    if request.pool == "target_vs_ood":
        return {**mix_cfg, "clean_fraction": 1.0, "corruption": None, "discard_rest": False}
    if request.pool == "balanced" and not DATASETS.get(dataset["name"]).provides_sources:
        return {**mix_cfg, "clean_fraction": 0.5, "discard_rest": False, "ood": []}
    return mix_cfg  # "diffusion", or data that labels its own low-quality images


def dataset_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """A dataset in a stage key: its semantic parameters, plus what identifies its files when the
    parameters do not (stand-in data; see Dataset.fingerprint). Real data keep their old keys."""
    identity = ComponentRef("dataset").semantic(spec)
    fingerprint = DATASETS.build(spec).fingerprint()
    return {**identity, "fingerprint": fingerprint} if fingerprint else identity


def _pool_text(request: ClassifierRequest, mix_cfg: dict[str, Any], dataset: dict[str, Any]) -> str:
    """What a classifier really learns from (a balanced pool needs a coin: data that labels its own
    low-quality images is used as it comes, and the class-balanced loss evens it out)."""
    if request.pool == "target_vs_ood":
        return "target vs out-of-distribution images"
    if DATASETS.get(dataset["name"]).provides_sources:
        return "the dataset's own good / low-quality images, in the ratio it has them"
    if request.pool == "balanced":
        return "the balanced pool (a 50% clean coin)"
    return f"the training pool ({mix_cfg['clean_fraction']:.0%} clean coin)"


def _mix_stage(dataset: dict[str, Any], mix_cfg: dict[str, Any]) -> Stage:
    material = {"dataset": dataset_identity(dataset), "mix": MIX.semantic(mix_cfg)}
    ood = [DATASETS.build(d).fingerprint() for d in mix_cfg["ood"]]
    if any(ood):
        material["ood_fingerprints"] = ood
    return Stage("mix", material, {"dataset": dataset, "mix": mix_cfg}, {}, _describe_mix(dataset, mix_cfg))


def cell_stages(cfg: dict[str, Any]) -> dict[str, Stage]:
    """The stages of one cell, by name: mix, pool:<c>, classifier:<c>, annotate, train, sample,
    setup:<m>, evaluate:<m>."""
    ref = lambda kind, spec: ComponentRef(kind).semantic(spec)  # noqa: E731
    mix_cfg = cfg["mix"]
    method = METHODS.build(cfg["method"])
    if not method.uses_bad_data:  # the pool is the clean images alone
        mix_cfg = {**mix_cfg, "corruption": None, "ood": [], "discard_rest": True}
    stages: dict[str, Stage] = {"mix": _mix_stage(cfg["dataset"], mix_cfg)}
    for name, request in method.classifiers(cfg["dataset"].get("resolution")).items():
        pool = _classifier_pool(mix_cfg, request, cfg["dataset"])
        pool_stage = stages["mix"] if pool == mix_cfg else _mix_stage(cfg["dataset"], pool)
        if pool_stage is not stages["mix"]:
            stages[f"pool:{name}"] = pool_stage
        what = f"{'crops' if request.crop_size else 'noise'} classifier"
        stages[f"classifier:{name}"] = Stage(
            "classifier", {"pool": request.pool, "crop_size": request.crop_size,
                           "classifier": CLASSIFIER_SECTION.semantic(request.config),
                           **_augmentation(request.config.get("augment_p", 0))},
            {"pool": request.pool, "crop_size": request.crop_size, "classifier": request.config},
            {"mix": pool_stage}, f"{what}{f' {request.crop_size}×{request.crop_size}' if request.crop_size else ''}"
                                 f" on {_pool_text(request, mix_cfg, cfg['dataset'])}, "
                                 f"{'class-balanced loss' if request.config['class_balance'] else 'plain BCE'}, "
                                 f"{'the whole pool, ' if request.config['holdout_fraction'] == 0 else ''}"
                                 f"{request.config['duration_kimg']:g} kimg")
    stages["annotate"] = Stage(
        "annotate", {"method": method.annotation_spec()}, {"method": cfg["method"]},
        {"mix": stages["mix"], **{k: v for k, v in stages.items() if k.startswith("classifier:")}},
        brief_label("method", cfg["method"]))
    train_cfg, train_deps = cfg["train"], {"annotate": stages["annotate"]}
    pretraining = method.pretraining()
    if pretraining is not None:  # the other method's own stages, so its cached model is reused
        spec, overrides = pretraining
        before = cell_stages({**cfg, "method": ComponentRef("method").resolve(spec, ("method",))})
        stages.update({f"pretrain:{name}": stage for name, stage in before.items() if name in ("mix", "annotate")})
        stages["pretrain:train"] = train_deps["pretrain"] = before["train"]
        train_cfg = {**train_cfg, **overrides}
    for k, spec in enumerate(method.view_models()):  # keyed by the mix, not the method: shared across its settings
        plain, view = {"name": "edm"}, VIEWS.build(spec)
        network = {**cfg["network"], "label_dim": view.label_dim()} if view.label_dim() else cfg["network"]
        stages[f"view:{k}"] = train_deps[f"view:{k}"] = Stage(
            "train", {"network": NETWORK.semantic(network), "train": TRAIN.semantic(train_cfg),
                      "objective": ref("objective", plain), "view": view.spec(),
                      **_augmentation(train_cfg["augment_p"])},
            {"network": network, "train": train_cfg, "objective": plain, "view": spec}, {"mix": stages["mix"]},
            f"view model ({view.describe()}), seed {train_cfg['seed']}, {train_cfg['duration_kimg']:g} kimg")
    objective = method.objective_spec()
    if cfg["latent"]["vae"] is not None:  # EDM2's latent space: the pool encoded once, shared by every method
        stages["latents"] = train_deps["latents"] = _latents_stage(cfg["latent"], stages["mix"])
    stages["train"] = Stage(
        "train", {"network": NETWORK.semantic(cfg["network"]), "train": TRAIN.semantic(train_cfg),
                  "objective": ref("objective", objective), **_augmentation(train_cfg["augment_p"])},
        {"network": cfg["network"], "train": train_cfg, "objective": objective}, train_deps,
        f"{brief_label('method', cfg['method'])}, seed {train_cfg['seed']}, {train_cfg['duration_kimg']:g} kimg"
        + (" from the pretrained model" if pretraining is not None else ""))
    sample_deps = _sample_deps(stages, cfg, cfg["sample"], train_cfg, "")
    own = {name: (sample_cfg, _sample_deps(stages, cfg, sample_cfg, train_cfg, f"{name}:"))
           for name, sample_cfg in metric_samples(cfg).items()}
    names = [m["name"] for m in cfg["evaluate"]["metrics"]]
    for name in cfg["evaluate"]["against_training"]:
        if name not in names:
            from ambient_bench.errors import UserError

            raise UserError(f"evaluate.against_training: '{name}' is not one of the cell's metrics "
                            f"({', '.join(names)}); add it to evaluate.metrics or remove it")
    # "" is the final network; each earlier EMA snapshot gets its own sample and evaluate stages
    for suffix, kimg in [("", None)] + [(f"@{k:g}", k) for k in evaluated_snapshots(train_cfg, cfg["evaluate"])]:
        stages[f"sample{suffix}"] = _sample_stage(cfg["sample"], sample_deps, kimg, stages["train"])
        for name, (sample_cfg, deps) in own.items():  # evaluate.per_metric_sample: that metric's own samples
            stages[f"sample:{name}{suffix}"] = _sample_stage(sample_cfg, deps, kimg, stages["train"])
        for metric in cfg["evaluate"]["metrics"]:
            sample = stages.get(f"sample:{metric['name']}{suffix}", stages[f"sample{suffix}"])
            setup = Stage("metric_setup", {"metric": ref("metric", metric),
                                           "reference": dataset_identity(cfg["dataset"])},
                          {"metric": metric, "dataset": cfg["dataset"]}, {},
                          f"{brief_label('metric', metric)} on {brief_label('dataset', cfg['dataset'])}")
            stages[f"setup:{metric['name']}"] = setup
            training = metric["name"] in cfg["evaluate"]["against_training"]  # the pool's clean images
            stages[f"evaluate:{metric['name']}{suffix}"] = Stage(
                "evaluate", {"metric": ref("metric", metric), **({"reference": "training"} if training else {})},
                {"metric": metric, "dataset": cfg["dataset"]},
                {"sample": sample, "setup": setup, **({"mix": stages["mix"]} if training else {})},
                f"{metric['name']} of {brief_label('method', cfg['method'])}" + (f" at {kimg:g} kimg" if kimg else "")
                + (" against its clean training images" if training else ""))
            heldout = cfg["evaluate"]["heldout_reference"]
            if heldout is not None:  # the same samples against a second reference (e.g. the test split)
                stages[f"heldout:{metric['name']}{suffix}"] = Stage(
                    "evaluate", {"metric": ref("metric", metric), "reference": dataset_identity(heldout)},
                    {"metric": metric, "dataset": heldout}, {"sample": sample, "setup": setup},
                    f"{metric['name']} of {brief_label('method', cfg['method'])} against "
                    f"{brief_label('dataset', heldout)}" + (f" at {kimg:g} kimg" if kimg else ""))
    return stages


def metric_samples(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sample section of each metric that ``evaluate.per_metric_sample`` gives samples of its own (EDM2's
    per-metric presets: FID and FD_DINOv2 each at their own EMA width and guidance), by metric name."""
    overrides = cfg["evaluate"].get("per_metric_sample") or {}
    return {name: {**cfg["sample"], **overrides[name]} for name in [m["name"] for m in cfg["evaluate"]["metrics"]]
            if name in overrides}


def _sample_deps(stages: dict[str, Stage], cfg: dict[str, Any], sample_cfg: dict[str, Any],
                 train_cfg: dict[str, Any], prefix: str) -> dict[str, Stage]:
    """What a sample stage of ``sample_cfg`` reads: the network (its EMA reconstructed at ema_sigma_rel), the
    guide (reconstructed at guide_sigma_rel) when guided, the VAE latents' stage in latent space."""
    deps = {"train": _reconstructed(stages, prefix, stages["train"], sample_cfg["ema_sigma_rel"])}
    if sample_cfg["guidance"] != 1:
        deps["guide"] = _guide_stages(stages, {**cfg, "sample": sample_cfg}, train_cfg, prefix)
    if "latents" in stages:
        deps["latents"] = stages["latents"]
    return deps


def _sample_stage(sample_cfg: dict[str, Any], deps: dict[str, Stage], kimg: float | None, train: Stage) -> Stage:
    """Sampling the final network (kimg None: through ``deps``' reconstruction) or the EMA snapshot at kimg."""
    what = f"{sample_cfg['num']} images, Heun {sample_cfg['steps']} steps"
    if sample_cfg["ema_sigma_rel"] is not None and kimg is None:
        what += f", EMA σ_rel {sample_cfg['ema_sigma_rel']:g}"
    if sample_cfg["guidance"] != 1:
        what += f", guidance {sample_cfg['guidance']:g}"
        if sample_cfg["guide_sigma_rel"] is not None:
            what += f" (guide σ_rel {sample_cfg['guide_sigma_rel']:g})"
    return Stage("sample", {"sample": SAMPLE.semantic(sample_cfg), **({"snapshot_kimg": kimg} if kimg else {})},
                 {"sample": sample_cfg, "snapshot_kimg": kimg}, deps if kimg is None else {**deps, "train": train},
                 what + (f", snapshot at {kimg:g} kimg" if kimg else ""))


def _latents_stage(latent_cfg: dict[str, Any], mix: Stage) -> Stage:
    from ambient_bench.latents.vae import weights_identity

    # the VAE by its weights' content (a missing file stops plan here, with the one-line error)
    material = {"latent": {**LATENT.semantic(latent_cfg), **weights_identity(latent_cfg["vae"], latent_cfg["weights"])}}
    return Stage("latents", material, {"latent": latent_cfg}, {"mix": mix},
                 f"{latent_cfg['vae']} latents of the pool" + (" and its mirror images" if latent_cfg["xflip"] else ""))


def _reconstructed(stages: dict[str, Stage], prefix: str, train: Stage, sigma_rel: float | None) -> Stage:
    """The train stage itself, or its power EMA reconstructed at ``sigma_rel`` (a stage of its own)."""
    if sigma_rel is None:
        return train
    stages[f"{prefix}reconstruct"] = stage = Stage(
        "reconstruct", {"sigma_rel": sigma_rel}, {"sigma_rel": sigma_rel, "network": train.runtime["network"]},
        {"train": train}, f"post-hoc EMA at σ_rel {sigma_rel:g}")
    return stage


def _guide_stages(stages: dict[str, Stage], cfg: dict[str, Any], train_cfg: dict[str, Any], prefix: str = "") -> Stage:
    """The guide network of ``sample.guidance``: the cell trained again with ``sample.guide``'s overrides
    (``network``, ``train``, and ``method``, e.g. EDM2's small unconditional all-data guide), through the
    same stages a cell of that configuration has, so every row that names the same guide shares it."""
    from ambient_bench.errors import UserError

    overrides = cfg["sample"]["guide"]
    if not overrides:
        raise UserError(f"sample.guidance {cfg['sample']['guidance']:g} needs sample.guide: the guide's network and "
                        f"train overrides, e.g. {{network: {{preset: edm2_xs, label_dim: 0}}}}; or set guidance: 1")
    unknown = sorted(set(overrides) - {"network", "train", "method"})
    if unknown:
        raise UserError(f"sample.guide: unknown key '{unknown[0]}'; it takes network, train and method overrides")
    guide_cfg = {**cfg, "network": NETWORK.resolve({**cfg["network"], **overrides.get("network", {})},
                                                   ("sample", "guide", "network")),
                 "train": TRAIN.resolve({**train_cfg, **overrides.get("train", {})}, ("sample", "guide", "train")),
                 "sample": {**cfg["sample"], "guidance": 1.0, "guide": None, "ema_sigma_rel": None},
                 "evaluate": {**cfg["evaluate"], "metrics": [], "heldout_reference": None}}
    if "method" in overrides:
        guide_cfg["method"] = ComponentRef("method").resolve(overrides["method"], ("sample", "guide", "method"))
    trained = cell_stages(guide_cfg)
    for name, stage in trained.items():
        if not name.startswith(("sample", "reconstruct")):
            stages[f"guide:{name}"] = stage
    return _reconstructed(stages, f"{prefix}guide:", trained["train"], cfg["sample"]["guide_sigma_rel"])


def evaluated_snapshots(train_cfg: dict[str, Any], evaluate_cfg: dict[str, Any]) -> list[float]:
    """Training lengths (kimg) of the EMA snapshots that are sampled and evaluated, the final network not
    included (it always is)."""
    span = evaluate_cfg.get("snapshot_range_kimg")
    kimgs = snapshot_kimgs(train_cfg)[:-1]
    if span is None:
        return kimgs
    return [k for k in kimgs if span[0] - 1e-6 <= k <= span[1] + 1e-6]


def snapshot_kimgs(train_cfg: dict[str, Any]) -> list[float]:
    """Training lengths (kimg) of the kept EMA snapshots, the final network last."""
    from ambient_bench.training.loop import snapshot_steps, total_steps

    return [step * train_cfg["batch"] / 1000 for step in snapshot_steps(train_cfg, total_steps(train_cfg))]
