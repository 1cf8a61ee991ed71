"""The training stage: EDM-preconditioned DDPM++ U-Net, ambient loss, EMA, exact resume.

Re-running with the same ``run_dir`` resumes from ``checkpoint.pt``. Every random draw of step
k (noise levels, noise, augmentation, dropout) is seeded by (seed, k) (dropout also by rank),
and the sample stream's position is part of the checkpoint, so an interrupted and resumed run
ends with the same weights as an uninterrupted one; no RNG state needs saving. Under torchrun
each rank trains on its slice of the global batch (ambient_bench/distributed.py).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ambient_bench import fileio
from ambient_bench.components import TrainBatch
from ambient_bench.diffusion.edm import EDMPrecond
from ambient_bench.diffusion.augment import AugmentPipe
from ambient_bench.diffusion.unet import build_unet
from ambient_bench.progress import bar
from ambient_bench.registry import OBJECTIVES
from ambient_bench.seeding import seed_for, torch_generator
from ambient_bench import distributed
from ambient_bench.data.pool import loader_workers
from ambient_bench.training import batches
from ambient_bench.training.stream import AdmissibleStream

CHECKPOINT, NETWORK = "checkpoint.pt", "network.pt"


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or weight: the stage stops (its message is the one-line reason)."""


def check_finite_loss(per_sample: torch.Tensor, sigma: torch.Tensor, step: int) -> None:
    """Stop at the first step whose loss is not finite, naming the noise level of the sample."""
    flat = per_sample.detach().reshape(len(per_sample), -1).float().sum(dim=1)
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        where = int(torch.nonzero(bad)[0])
        raise TrainingDiverged(f"training diverged at step {step}: the loss is {float(flat[where])} for a sample at "
                               f"σ = {float(sigma[where]):.4g}; lower train.lr, or set train.grad_clip")


def check_finite_weights(net: torch.nn.Module, ema: torch.nn.Module, step: int) -> None:
    for what, module in (("weight", net), ("EMA weight", ema)):
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDiverged(f"training diverged by step {step}: {what} {name} is not finite; "
                                       f"lower train.lr, or set train.grad_clip")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_network(net_cfg: dict[str, Any], img_channels: int, resolution: int,
                  sigma_data: float) -> EDMPrecond:
    return EDMPrecond(build_unet(net_cfg, img_channels, resolution), sigma_data=sigma_data)


def load_network(path: Path, device: torch.device | str = "cpu") -> EDMPrecond:
    """The EMA network written at the end of training."""
    saved = fileio.torch_load(path)
    net = build_network(saved["network_cfg"], saved["img_channels"], saved["resolution"], saved["sigma_data"])
    net.load_state_dict(saved["ema"])
    # a mask-conditioned network takes its masks beside the pixels: it generates image_channels
    net.image_shape = (saved.get("image_channels", saved["img_channels"]), saved["resolution"], saved["resolution"])
    net.sampler = saved.get("sampler")  # None: EDM's Heun sampler on the plain network
    return net.to(device).eval().requires_grad_(False)


def learning_rate(cfg: dict[str, Any], cur_nimg: int) -> float:
    """Linear warm-up over ``warmup_kimg``, then constant."""
    if cfg["warmup_kimg"] <= 0:
        return cfg["lr"]
    return cfg["lr"] * min(1.0, cur_nimg / (cfg["warmup_kimg"] * 1000))


def ema_beta(cfg: dict[str, Any], nimg_after_step: int) -> float:
    """Per-step EMA decay for a half-life in images, ramped up early (as in EDM)."""
    halflife = cfg["ema_halflife_kimg"] * 1000
    if cfg["ema_rampup"] is not None:
        halflife = min(halflife, nimg_after_step * cfg["ema_rampup"])
    return 0.5 ** (cfg["batch"] / max(halflife, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def restore_checkpoint(run_dir: Path, net: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                       stream: AdmissibleStream, log: Callable[[str], None]) -> int:
    """Load ``run_dir/checkpoint.pt`` if there is one; the step to continue from (0 = fresh).

    Stats lines logged after the checkpoint are dropped: those steps run again.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return 0
    state = fileio.torch_load(path)
    net.load_state_dict(state["net"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["opt"])
    stream.load_state_dict(state["stream"])
    log(f"resuming from checkpoint at step {state['step']}")
    stats_path = run_dir / "stats.jsonl"
    if stats_path.exists() and distributed.is_main():
        fileio.write_text(stats_path, "".join(line + "\n" for line in stats_path.read_text().splitlines()
                                              if _logged_step(line) <= state["step"]))
    return state["step"]


def save_checkpoint(run_dir: Path, step: int, net: torch.nn.Module, ema: torch.nn.Module,
                    opt: torch.optim.Optimizer, stream: AdmissibleStream | dict[str, int]) -> None:
    """Atomic (temp file + rename); only rank 0 writes, the state being the same on every rank.
    ``stream``: the sample stream, or its state after step ``step``'s draw (a loader runs ahead)."""
    if not distributed.is_main():
        return
    state = stream if isinstance(stream, dict) else stream.state_dict()
    fileio.torch_save(run_dir / CHECKPOINT, {"step": step, "net": net.state_dict(), "ema": ema.state_dict(),
                                             "opt": opt.state_dict(), "stream": state})


def optimizer_step(net: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                   cfg: dict[str, Any], step: int) -> float:
    """One update: warm-up learning rate, optional clipping, EMA; returns the lr. A non-finite gradient stops
    training (TrainingDiverged): zeroing it, as EDM does, would hide a diverged run behind finite numbers."""
    lr = learning_rate(cfg, step * cfg["batch"])
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
        name = next(n for n, p in net.named_parameters() if p.grad is not None and not p.grad.isfinite().all())
        raise TrainingDiverged(f"training diverged at step {step}: the gradient of {name} is not finite "
                               f"(lr {lr:g}); lower train.lr or set train.grad_clip")
    if cfg["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
    opt.step()
    update_ema(ema, net, ema_beta(cfg, (step + 1) * cfg["batch"]))
    return lr


def _logged_step(line: str) -> float:
    """Step of a stats.jsonl line; a line cut short by a kill counts as never logged."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


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
          init: dict[str, Any] | None = None, objective: dict[str, Any] | None = None) -> bool:
    """Train (or resume) in ``run_dir``; True once ``network.pt`` is written.

    ``init`` is another run's final checkpoint to fine-tune from: its weights and EMA start
    this run, with a fresh optimizer (a new phase on new data); ignored when resuming.

    ``data`` is the annotate stage's training set: uint8 ``images``, fixed ``noise`` Z,
    per-sample ``sigma_min`` / ``sigma_max``. ``objective`` is the resolved training objective
    (``{"name": ..., **params}``; None = plain EDM), whose ``buffer()`` narrows where low-quality
    samples are drawn.
    ``stop_at_step`` ends the call early after checkpointing (for time-sliced jobs and tests).
    """
    device = resolve_device(cfg["device"])
    if distributed.world_size() > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    configure_backends(cfg, device)
    seed, batch, rank = cfg["seed"], cfg["batch"], distributed.rank()
    mine = distributed.local_slice(batch)
    layout = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    streamed = data.get("images") is None  # pixels read from disk (data/pool.py) by training/batches.py
    sigma_min = data["sigma_min"].double()
    objective = OBJECTIVES.build(objective or {"name": "edm"})
    channels, resolution, _ = data["pool_images"].shape if streamed else data["images"].shape[1:]
    net_channels = objective.input_channels(channels)
    sampling = None if net_channels == channels and not data.get("sampler") else \
        {"image_channels": channels, "sampler": data.get("sampler")}
    view = data.get("view") or {}
    torch.manual_seed(seed_for("init", seed))
    net = build_network(net_cfg, net_channels, resolution, cfg["sigma_data"]).to(device, memory_format=layout).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    stream = AdmissibleStream(sigma_min.numpy(), data["sigma_max"].double().numpy(), objective.buffer(), seed)
    augment = AugmentPipe(cfg["augment_p"], xflip=1e8) if cfg["augment_p"] > 0 else None
    if augment is not None and not net.net.augment_dim:
        from ambient_bench.errors import UserError

        raise UserError("train.augment_p > 0 needs augmentation labels: set network.augment_dim: 9")

    if init is not None:
        net.load_state_dict(init["net"])
        ema.load_state_dict(init["ema"])
    classes = class_targets(data, net.label_dim, device)
    step = restore_checkpoint(run_dir, net, ema, opt, stream, log)
    forward = net
    if distributed.world_size() > 1:
        forward = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                            else None)
    if cfg["compile"]:
        forward = torch.compile(forward)
    total = total_steps(cfg)
    ckpt_every = max(1, round(cfg["checkpoint_kimg"] * 1000 / batch))
    snapshots = set(snapshot_steps(cfg, total)[:-1])  # the last one is network.pt
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")
    main = distributed.is_main()

    # the whole global batch is drawn on every rank, so the draws do not depend on the rank count
    steps = range(step, total if stop_at_step is None else min(total, max(step, stop_at_step)))
    whole = augment is not None  # augmentation draws per position of the global batch
    if streamed:
        draws = batches.streamed(data["pool_images"], data["pool_rows"], stream, cfg, steps, mine, whole, device,
                                 workers=cfg.get("loader_workers") if cfg.get("loader_workers") is not None
                                 else loader_workers())
    else:
        draws = batches.in_memory(data["images"], data["noise"], stream, cfg, steps, mine, whole, device)

    with open(run_dir / "stats.jsonl", "a") if main else contextlib.nullcontext() as stats_file, \
            bar(total=total, initial=step, desc=f"train {run_dir.name[:8]}", unit="step", disable=not main) as progress:
        t_last = time.perf_counter()
        for drawn in draws:
            eps = torch.randn((batch, channels, resolution, resolution),
                              generator=torch_generator("eps", seed, step))[mine]
            x0, labels = drawn.x0, None
            if augment is not None:  # also on the global batch: its draws are per position in the batch
                x0, labels = augment(x0, torch_generator("augment", seed, step))
                x0, labels = x0[mine], labels[mine]
            indices, sigma = drawn.indices[mine], torch.from_numpy(drawn.sigmas)[mine]
            idx = torch.from_numpy(indices).to(device)
            torch.manual_seed(seed_for("dropout", seed, rank, step))
            with autocast:
                onehot = None if classes is None else classes[idx]
                loss = objective.loss(lambda x, s: forward(x, s, augment_labels=labels, class_labels=onehot),
                                      TrainBatch(x0.contiguous(memory_format=layout), drawn.z, sigma,
                                                 sigma_min[indices], eps.to(device), cfg["sigma_data"],
                                                 {name: value[torch.from_numpy(indices)].to(device)
                                                  for name, value in view.items()}))
            check_finite_loss(loss, sigma, step)
            loss = loss.mean()
            lr = optimizer_step(net, ema, opt, loss.float(), cfg, step)

            step += 1
            progress.update(1)
            if step % cfg["log_every"] == 0 or step == total:
                now = time.perf_counter()
                stats = {"step": step, "kimg": step * batch / 1000, "loss": distributed.mean_over_ranks(loss.item()),
                         "lr": lr, "sec_per_step": (now - t_last) / cfg["log_every"]}
                t_last = now
                if main:
                    stats_file.write(json.dumps(stats) + "\n")
                    stats_file.flush()
                progress.set_postfix(loss=f"{stats['loss']:.3f}")
            if step in snapshots or step % ckpt_every == 0 or step == total or step == stop_at_step:
                check_finite_weights(net, ema, step)  # nothing non-finite is ever stored
            if step in snapshots and main:
                fileio.torch_save(run_dir / snapshot_name(step * batch / 1000),
                                  _network_record(ema, net_cfg, net_channels, resolution, cfg, step, sampling))
            if step % ckpt_every == 0 or step == total or step == stop_at_step:
                save_checkpoint(run_dir, step, net, ema, opt, drawn.stream_state)
    distributed.barrier()  # rank 0's checkpoint is on disk before any rank returns
    if step < total:
        return False
    if main:
        fileio.torch_save(run_dir / NETWORK, _network_record(ema, net_cfg, net_channels, resolution, cfg, total,
                                                             sampling))
    distributed.barrier()
    return True
