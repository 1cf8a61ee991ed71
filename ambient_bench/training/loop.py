"""The training stage: EDM-preconditioned DDPM++ U-Net, ambient loss, EMA, exact resume.

Re-running with the same ``run_dir`` resumes from ``checkpoint.pt``. Every random draw of step
k (noise levels, noise, augmentation, dropout) is seeded by (seed, k) (dropout also by rank),
and the sample stream's position is part of the checkpoint, so an interrupted and resumed run
ends with the same weights as an uninterrupted one; no RNG state needs saving. Under torchrun
each rank trains on its slice of the global batch (ambient_bench/distributed.py).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ambient_bench import fileio
from ambient_bench.components import TrainBatch
from ambient_bench.diffusion.edm import EDMPrecond
from ambient_bench.diffusion.augment import AugmentPipe
from ambient_bench.diffusion.edm2 import EDM2Precond
from ambient_bench.diffusion.unet import build_unet
from ambient_bench.registry import OBJECTIVES
from ambient_bench.seeding import seed_for, torch_generator
from ambient_bench import distributed
from ambient_bench.data.pool import loader_workers
from ambient_bench.training import batches, curves
from ambient_bench.training.fit import (CHECKPOINT, Step, TrainingDiverged, fit, optimizer_step,  # noqa: F401
                                        restore_checkpoint)
from ambient_bench.training.phema import PowerEMA
from ambient_bench.training.stream import AdmissibleStream

NETWORK = "network.pt"


def check_finite_loss(per_sample: torch.Tensor, sigma: torch.Tensor, step: int) -> None:
    """Stop at the first step whose loss is not finite, naming the noise level of the sample."""
    flat = per_sample.detach().reshape(len(per_sample), -1).float().sum(dim=1)
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        where = int(torch.nonzero(bad)[0])
        raise TrainingDiverged(f"training diverged at step {step}: the loss is {float(flat[where])} for a sample at "
                               f"σ = {float(sigma[where]):.4g}; lower train.lr, or set train.grad_clip")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_network(net_cfg: dict[str, Any], img_channels: int, resolution: int,
                  sigma_data: float) -> torch.nn.Module:
    """EDM's DDPM++ in EDM preconditioning, or EDM2's network (presets ``edm2_*``)."""
    preset = net_cfg.get("preset") or "cpu"
    if preset.startswith("edm2_"):
        from ambient_bench.diffusion.edm2 import build_edm2

        if net_cfg.get("augment_dim"):
            from ambient_bench.errors import UserError

            raise UserError("network.augment_dim: EDM2 networks take no augmentation labels (set it to 0)")
        return build_edm2({**net_cfg, "preset": preset[len("edm2_"):]}, img_channels, resolution,
                          label_dim=net_cfg.get("label_dim") or 0, sigma_data=sigma_data)
    return EDMPrecond(build_unet(net_cfg, img_channels, resolution), sigma_data=sigma_data)


def _network_from_record(saved: dict[str, Any]) -> torch.nn.Module:
    net = build_network(saved["network_cfg"], saved["img_channels"], saved["resolution"], saved["sigma_data"])
    net.load_state_dict(saved["ema"])
    if saved.get("views"):  # a residual network sampled through its frozen view models (bootstrap_views)
        from ambient_bench.diffusion.views import ComposedDenoiser, view_pairs

        # records written before views had kinds hold only the pooling factor
        net = ComposedDenoiser(net, [pair for view in saved["views"]
                                     for pair in view_pairs(view.get("view") or {"factor": view["factor"]},
                                                            _network_from_record(view))])
    return net


def load_network(path: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The EMA network written at the end of training (an EDMPrecond, or the composite of one with its views)."""
    saved = fileio.torch_load(path)
    net = _network_from_record(saved)
    # a mask-conditioned network takes its masks beside the pixels: it generates image_channels
    net.image_shape = (saved.get("image_channels", saved["img_channels"]), saved["resolution"], saved["resolution"])
    net.sampler = saved.get("sampler")  # None: EDM's Heun sampler on the plain network
    return net.to(device).eval().requires_grad_(False)


def snapshot_name(kimg: float) -> str:
    """File of the EMA snapshot after ``kimg`` thousand training images."""
    return f"snapshot-{int(round(kimg * 1000)):09d}.pt"


def total_steps(cfg: dict[str, Any]) -> int:
    return max(1, math.ceil(cfg["duration_kimg"] * 1000 / cfg["batch"]))


def _network_record(ema: torch.nn.Module, net_cfg: dict[str, Any], channels: int, resolution: int,
                    cfg: dict[str, Any], steps: int, sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """``sampling``: for a network that is not a plain denoiser of ``channels`` images, its
    ``image_channels`` and ``sampler`` (see ``load_network``)."""
    return {"ema": ema.state_dict(), "network_cfg": net_cfg, "img_channels": channels, "resolution": resolution,
            "sigma_data": cfg["sigma_data"], "steps": steps, "kimg": steps * cfg["batch"] / 1000, **(sampling or {})}


def profile_name(kimg: float) -> str:
    """File of the power-function EMA averages stored after ``kimg`` thousand training images."""
    return f"phema-{int(round(kimg * 1000)):09d}.pt"


def profile_steps(cfg: dict[str, Any], total: int) -> list[int]:
    """Steps after which the power EMA's averages are stored (every ``ema_profile_kimg``, else 8 over the run;
    the last step always)."""
    every = round(cfg["ema_profile_kimg"] * 1000 / cfg["batch"]) if cfg.get("ema_profile_kimg") else total // 8
    return sorted({*range(max(1, every), total, max(1, every)), total})


def snapshot_steps(cfg: dict[str, Any], total: int) -> list[int]:
    """Steps after which an EMA snapshot is kept (the last step always is)."""
    if cfg.get("snapshot_kimg") is None:
        return [total]
    every = max(1, round(cfg["snapshot_kimg"] * 1000 / cfg["batch"]))
    return sorted({*range(every, total, every), total})


def class_targets(data: dict[str, Any], label_dim: int, device: torch.device) -> torch.Tensor | None:
    """One-hot class labels of the training set for a class-conditional network (None otherwise)."""
    if not label_dim:
        return None
    from ambient_bench.errors import UserError

    labels = data.get("labels")
    if labels is None:
        raise UserError(f"network.label_dim {label_dim}: class-conditional training needs a labelled dataset; "
                        f"this one has no labels (set network.label_dim: 0)")
    if (labels < 0).any():
        raise UserError("network.label_dim: out-of-distribution samples have no class of the target dataset; "
                        "train unconditionally (label_dim: 0) or drop the ood sources")
    if int(labels.max()) >= label_dim:
        raise UserError(f"network.label_dim {label_dim} is too small: the dataset has class {int(labels.max())}; "
                        f"set network.label_dim: {int(labels.max()) + 1}")
    return torch.nn.functional.one_hot(labels.long(), label_dim).float().to(device)


def configure_backends(cfg: dict[str, Any], device: torch.device) -> None:
    """TF32 as the recipe says (it changes the numbers on Ampere and later GPUs); cuDNN autotuning on."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg["tf32"]
        torch.backends.cudnn.allow_tf32 = cfg["tf32"]
        torch.backends.cudnn.benchmark = True


def train(data: dict[str, Any], net_cfg: dict[str, Any], cfg: dict[str, Any], run_dir: Path,
          log: Callable[[str], None] = print, stop_at_step: int | None = None,
          init: dict[str, Any] | None = None, objective: dict[str, Any] | None = None,
          views: list[tuple[dict[str, int], Path]] | None = None) -> bool:
    """Train (or resume) in ``run_dir``; True once ``network.pt`` is written.

    ``init`` is another run's final checkpoint to fine-tune from: its weights and EMA start
    this run, with a fresh optimizer (a new phase on new data); ignored when resuming.

    ``data`` is the annotate stage's training set: uint8 ``images``, fixed ``noise`` Z,
    per-sample ``sigma_min`` / ``sigma_max``. ``objective`` is the resolved training objective
    (``{"name": ..., **params}``; None = plain EDM), whose ``buffer()`` narrows where low-quality
    samples are drawn. ``views``: (view spec, network.pt) of frozen view models the objective composes
    with this network (``batch.aux["views"]``); the written network carries them for sampling.
    ``stop_at_step`` ends the call early after checkpointing (for time-sliced jobs and tests).
    """
    device = resolve_device(cfg["device"])
    if distributed.world_size() > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    configure_backends(cfg, device)
    seed, batch, rank = cfg["seed"], cfg["batch"], distributed.rank()
    mine = distributed.local_slice(batch)
    layout = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    latents = data.get("latents")  # VAE latents in shards (latents/shards.py) instead of pixels
    streamed = latents is None and data.get("images") is None  # pixels read from disk (data/pool.py)
    sigma_min = data["sigma_min"].double()
    objective = OBJECTIVES.build(objective or {"name": "edm"})
    if latents is not None:
        channels, resolution, _ = latents.meta["shape"]
    else:
        channels, resolution, _ = data["pool_images"].shape if streamed else data["images"].shape[1:]
    net_channels = objective.input_channels(channels)
    sampling = None if net_channels == channels and not data.get("sampler") and not views else \
        {"image_channels": channels, "sampler": data.get("sampler")}
    aux: dict[str, Any] = {}
    if views:
        from ambient_bench.diffusion.views import view_pairs

        records = [{"view": spec, **fileio.torch_load(path)} for spec, path in views]
        sampling["views"] = records
        frozen = [_network_from_record(r).to(device).eval().requires_grad_(False) for r in records]
        aux["views"] = [pair for r, net_k in zip(records, frozen) for pair in view_pairs(r["view"], net_k)]
    view = data.get("view") or {}
    torch.manual_seed(seed_for("init", seed))
    net = build_network(net_cfg, net_channels, resolution, cfg["sigma_data"]).to(device, memory_format=layout).train()
    power_ema = PowerEMA(net, cfg["ema_sigma_rels"]) if cfg.get("ema_sigma_rels") else None
    # with the power EMA, the checkpointed "ema" is every stored average; network.pt holds the first
    ema = torch.nn.ModuleList(power_ema.averages) if power_ema else copy.deepcopy(net).eval().requires_grad_(False)
    if distributed.is_main():  # the model's size, for tables (EDM2's Mparams column)
        fileio.write_json(run_dir / "network.json", {"num_parameters": sum(p.numel() for p in net.parameters())})
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], betas=(0.9, cfg.get("adam_beta2", 0.999)), eps=1e-8)
    stream = AdmissibleStream(sigma_min.numpy(), data["sigma_max"].double().numpy(), objective.buffer(), seed)
    augment = AugmentPipe.edm_recipe(cfg["augment_p"]) if cfg["augment_p"] > 0 else None
    if augment is not None and not net.net.augment_dim:
        from ambient_bench.errors import UserError

        raise UserError("train.augment_p > 0 needs augmentation labels: set network.augment_dim: 9")

    if init is not None:
        net.load_state_dict(init["net"])
        if power_ema is None:
            ema.load_state_dict(init["ema"])
        else:  # a fine-tuning phase starts its power averages afresh from the initial weights
            power_ema = PowerEMA(net, cfg["ema_sigma_rels"])
            ema = torch.nn.ModuleList(power_ema.averages)
    classes = class_targets(data, net.label_dim, device)
    step = restore_checkpoint(run_dir, net, ema, opt, stream, log)
    forward = net
    uncertainty = isinstance(net, EDM2Precond)
    if distributed.world_size() > 1:
        forward = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                            else None)
    if cfg["compile"]:
        forward = torch.compile(forward)
    total = total_steps(cfg)
    snapshots = set(snapshot_steps(cfg, total)[:-1])  # the last one is network.pt
    profiles = set(profile_steps(cfg, total)) if power_ema else set()
    autocast = torch.autocast(device.type, dtype=torch.float16 if cfg["precision"] == "fp16" else torch.bfloat16,
                              enabled=cfg["precision"] in ("bf16", "fp16"))
    teacher_net = power_ema.averages[0] if power_ema else ema  # what objectives see as the EMA model

    # the whole global batch is drawn on every rank, so the draws do not depend on the rank count
    steps = range(step, total if stop_at_step is None else min(total, max(step, stop_at_step)))
    whole = augment is not None  # augmentation draws per position of the global batch
    if latents is not None:
        draws = batches.from_latents(latents, data["latent_rows"], data["index"], stream, cfg, steps, mine, whole,
                                     device)
    elif streamed:
        draws = batches.streamed(data["pool_images"], data["pool_rows"], stream, cfg, steps, mine, whole, device,
                                 workers=cfg.get("loader_workers") if cfg.get("loader_workers") is not None
                                 else loader_workers())
    else:
        draws = batches.in_memory(data["images"], data["noise"], stream, cfg, steps, mine, whole, device)

    def losses() -> Iterator[Step]:
        for step, drawn in zip(steps, draws):
            eps = torch.randn((batch, channels, resolution, resolution),
                              generator=torch_generator("eps", seed, step))[mine]
            x0, labels = drawn.x0, None
            if augment is not None:  # also on the global batch: its draws are per position in the batch
                x0, labels = augment(x0, torch_generator("augment", seed, step))
                x0, labels = x0[mine], labels[mine]
            indices, sigma = drawn.indices[mine], torch.from_numpy(drawn.sigmas)[mine]
            idx = torch.from_numpy(indices).to(device)
            torch.manual_seed(seed_for("dropout", seed, rank, step))
            onehot = None if classes is None else classes[idx]
            if onehot is not None and cfg.get("label_dropout"):  # these samples train the unconditional model
                keep = torch.rand(batch, generator=torch_generator("label-dropout", seed, step))[mine] >= \
                    cfg["label_dropout"]
                onehot = onehot * keep.to(onehot).reshape(-1, 1)
            n = len(indices)
            micro = min(n, cfg.get("batch_gpu") or n)
            parts = [slice(start, min(start + micro, n)) for start in range(0, n, micro)]

            def part_loss(part: slice, x0=x0, labels=labels, onehot=onehot, indices=indices, sigma=sigma,
                          eps=eps, z=drawn.z, step=step) -> torch.Tensor:
                """The per-sample losses of rows ``part`` of this rank's batch."""
                cut = lambda t: None if t is None else t[part]  # noqa: E731
                labels_p, onehot_p, rows = cut(labels), cut(onehot), indices[part]
                logvar: list[torch.Tensor] = []

                def denoiser(x: torch.Tensor, s: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
                    pick = lambda t: t if t is None or rows is None else t[rows]  # noqa: E731
                    if uncertainty and rows is None and not logvar:  # the objective's first call: the batch's σ
                        out, u = forward(x, s, augment_labels=pick(labels_p), class_labels=pick(onehot_p),
                                         return_logvar=True)
                        logvar.append(u.flatten())
                        return out
                    return forward(x, s, augment_labels=pick(labels_p), class_labels=pick(onehot_p))

                @torch.no_grad()
                def teacher(x: torch.Tensor, s: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
                    pick = lambda t: t if t is None or rows is None else t[rows]  # noqa: E731
                    return teacher_net(x, s, augment_labels=pick(labels_p), class_labels=pick(onehot_p))

                with autocast:
                    loss = objective.loss(denoiser, TrainBatch(
                        x0[part].contiguous(memory_format=layout), z[part], sigma[part], sigma_min[rows],
                        eps[part].to(device), cfg["sigma_data"],
                        {name: value[torch.from_numpy(rows)].to(device) for name, value in view.items()},
                        teacher, aux))
                if logvar:  # EDM2's learned uncertainty: per element w/e^u·err + u, summed over the sample
                    loss = loss / logvar[0].exp() + logvar[0] * x0[0].numel()
                check_finite_loss(loss, sigma[part], step)
                return loss

            if len(parts) == 1:
                per_sample = part_loss(parts[0])
                yield Step(per_sample.mean(), drawn.stream_state, (sigma, per_sample.detach()))
            else:  # gradient accumulation: micro-batches of batch_gpu, the parts sum to the batch mean
                yield Step(lambda parts=parts, part_loss=part_loss, n=n: (part_loss(p).sum() / n for p in parts),
                           drawn.stream_state)

    final = power_ema.averages[0] if power_ema else ema
    # the EMA probe: pixel-space models trained on in-memory images only
    probe = curves.ema_probe(final, data["images"], sigma_min, classes, cfg["sigma_data"], seed_for("ema-probe", seed),
                             device) if data.get("images") is not None and net_channels == channels and not views \
        else None

    def save_snapshot(step: int) -> None:
        if step in snapshots:
            fileio.torch_save(run_dir / snapshot_name(step * batch / 1000),
                              _network_record(final, net_cfg, net_channels, resolution, cfg, step, sampling))
        if step in profiles:
            fileio.torch_save(run_dir / profile_name(step * batch / 1000), {
                "step": step, "sigma_rels": power_ema.sigma_rels,
                "averages": [average.state_dict() for average in power_ema.averages]})

    try:
        step = fit(net, ema, opt, cfg, run_dir, losses(), start=step, total=total, desc="train",
                   stop_at_step=stop_at_step, snapshots=snapshots | profiles, save_snapshot=save_snapshot,
                   ema_update=power_ema.update if power_ema else None, ema_probe=probe)
    finally:
        draws.close()  # a streamed pool's loader workers stop here, returning or raising
    if step < total:
        return False
    if distributed.is_main():
        fileio.torch_save(run_dir / NETWORK, _network_record(final, net_cfg, net_channels, resolution, cfg, total,
                                                             sampling))
    distributed.barrier()
    return True
