"""One optimisation loop for every network the harness trains (the diffusion model, the noise and
crops classifiers): Adam with warm-up, gradient clipping, EMA, logging, atomic checkpoints, exact resume.

A caller builds its networks and sample stream, restores the checkpoint (``restore_checkpoint``)
and hands ``fit`` an iterator of ``Step``s: each computes one step's loss when it is drawn (lazily,
so the forward pass of step k runs after the update of step k - 1). ``fit`` does the rest. Every
random draw of step k is the caller's, seeded by (seed, k), and the stream's state after the draw is
checkpointed with the weights, so a resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ambient_bench import distributed, fencing, fileio
from ambient_bench.progress import bar
from ambient_bench.training.curves import Curves
from ambient_bench.training.stream import AdmissibleStream

LOG = logging.getLogger("ambient_bench.stage")

CHECKPOINT = "checkpoint.pt"
SCALER = "grad_scaler.pt"  # fp16's loss scale, beside the checkpoint


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or weight: the stage stops (its message is the one-line reason)."""


@dataclass
class Step:
    """One step's loss (the scalar minimised) and the sample stream's state after its draw. With gradient
    accumulation ``loss`` is a callable yielding the micro-batches' parts (summing to the step's loss), each
    computed only when the previous one's backward pass has freed its graph."""

    loss: torch.Tensor | Callable[[], Iterable[torch.Tensor]]
    stream_state: dict[str, Any]
    detail: tuple[torch.Tensor, torch.Tensor] | None = None  # (σ, per-sample loss) for the per-σ curves


def learning_rate(cfg: dict[str, Any], cur_nimg: int) -> float:
    """Linear warm-up over ``warmup_kimg``, then constant, or EDM2's inverse-square-root decay after
    ``lr_ref_kimg`` images: lr / sqrt(max(t / t_ref, 1))."""
    lr = cfg["lr"]
    if cfg.get("lr_ref_kimg"):
        lr /= math.sqrt(max(cur_nimg / (cfg["lr_ref_kimg"] * 1000), 1.0))
    if cfg["warmup_kimg"] <= 0:
        return lr
    return lr * min(1.0, cur_nimg / (cfg["warmup_kimg"] * 1000))


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


def optimizer_step(net: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                   loss: torch.Tensor | Callable[[], Iterable[torch.Tensor]], cfg: dict[str, Any], step: int,
                   ema_update: Callable[[torch.nn.Module, int], None] | None = None,
                   scaler: torch.amp.GradScaler | None = None) -> tuple[float, torch.Tensor, torch.Tensor | None]:
    """One update: learning rate, optional clipping, EMA (``ema_update(net, steps taken)`` when given, e.g. the
    power-function EMA; the half-life EMA otherwise); returns the lr, the loss and the gradient norm (before
    clipping; a tensor, read only when logged). ``scaler``: fp16's loss scaling, which skips a step whose scaled
    gradient overflowed and lowers the scale. Otherwise a non-finite loss or gradient norm stops training
    (TrainingDiverged, naming what diverged): zeroing it, as EDM does, would hide a diverged run behind finite
    numbers."""
    lr = learning_rate(cfg, step * cfg["batch"])
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    parts = loss() if callable(loss) else [loss]
    total = None
    for part in parts:  # one backward pass per micro-batch: gradients accumulate
        part = part.float()
        (scaler.scale(part) if scaler is not None else part).backward()
        total = part.detach() if total is None else total + part.detach()
    if scaler is not None:
        scaler.unscale_(opt)
    named = [(n, p.grad) for n, p in net.named_parameters() if p.grad is not None]
    norms = torch.stack(torch._foreach_norm([g for _, g in named])) if named else None
    total_norm = None if norms is None else norms.norm()
    if scaler is None and norms is not None and not bool(torch.isfinite(total_norm) & torch.isfinite(total).all()):
        raise TrainingDiverged(divergence(net, named, norms, total, step, lr))
    if cfg["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if ema_update is not None:
        ema_update(net, step + 1)
    else:
        update_ema(ema, net, ema_beta(cfg, (step + 1) * cfg["batch"]))
    return lr, total, total_norm


def divergence(net: torch.nn.Module, named: list[tuple[str, torch.Tensor]], norms: torch.Tensor,
               loss: torch.Tensor, step: int, lr: float) -> str:
    """The one-line reason of a step whose loss or gradient norm is not finite: the first of a weight that
    an earlier update made non-finite, the loss, a gradient with a non-finite entry, a parameter whose
    gradient norm overflowed (every entry finite, the sum of squares past float32's range), the total norm."""
    where, fix = f"training diverged at step {step}", f"(lr {lr:g}); lower train.lr or set train.grad_clip"
    for name, weight in net.named_parameters():
        if not bool(torch.isfinite(weight).all()):
            return f"{where}: weight {name} is not finite after the previous update {fix}"
    if not bool(torch.isfinite(loss).all()):
        return f"{where}: the loss is {float(loss)} {fix}"
    for (name, grad), norm in zip(named, norms):
        if not bool(torch.isfinite(grad).all()):
            return f"{where}: the gradient of {name} is not finite {fix}"
        if not bool(torch.isfinite(norm)):
            return (f"{where}: the gradient norm of {name} overflowed (largest entry "
                    f"{float(grad.abs().max()):.3g}) {fix}")
    largest = int(norms.argmax())
    return (f"{where}: the total gradient norm overflowed (largest, {named[largest][0]}: "
            f"{float(norms[largest]):.3g}) {fix}")


def check_finite_weights(net: torch.nn.Module, ema: torch.nn.Module, step: int) -> None:
    for what, module in (("weight", net), ("EMA weight", ema)):
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDiverged(f"training diverged by step {step}: {what} {name} is not finite; "
                                       f"lower train.lr, or set train.grad_clip")


MIN_LOSS_SCALE = 2.0 ** -8  # from 2^16, each overflowed step halves it: ~24 overflows in a row reach this


def check_loss_scale(scaler: torch.amp.GradScaler | None, step: int) -> None:
    """fp16 skips a step whose gradient overflowed and halves the loss scale: a scale that kept falling means
    the updates have stopped, which would otherwise finish as a network that never learnt."""
    if scaler is not None and scaler.is_enabled() and scaler.get_scale() < MIN_LOSS_SCALE:
        raise TrainingDiverged(f"training diverged by step {step}: the fp16 loss scale fell to "
                               f"{scaler.get_scale():.3g} (the gradient overflowed step after step, each update "
                               f"skipped); lower train.lr, set train.grad_clip, or use train.precision bf16")


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


def _logged_step(line: str) -> float:
    """Step of a stats.jsonl line; a line cut short by a kill counts as never logged."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def fit(net: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, cfg: dict[str, Any],
        run_dir: Path, steps: Iterable[Step], *, start: int, total: int, desc: str,
        stop_at_step: int | None = None, snapshots: set[int] = frozenset(),
        save_snapshot: Callable[[int], None] | None = None,
        log_stats: Callable[[], dict[str, float]] | None = None,
        ema_update: Callable[[torch.nn.Module, int], None] | None = None,
        ema_probe: Callable[[], dict[str, Any]] | None = None) -> int:
    """Take the optimizer steps of ``steps`` (steps ``start``, ``start`` + 1, ...); returns the step reached.

    Logs to ``stats.jsonl`` every ``cfg["log_every"]`` steps (``log_stats`` adds the caller's numbers),
    checkpoints every ``cfg["checkpoint_kimg"]``, at ``stop_at_step`` and at the end, and calls
    ``save_snapshot(step)`` after the steps in ``snapshots``; weights are checked finite before either
    is written. ``ema_probe()``, at the same steps, scores the EMA weights (its numbers go to stats.jsonl as
    a line of their own and to TensorBoard). Only rank 0 writes files.
    """
    batch, step, main = cfg["batch"], start, distributed.is_main()
    device = next(net.parameters()).device
    scaler = torch.amp.GradScaler(device.type) if cfg.get("precision") == "fp16" else None
    if scaler is not None and (run_dir / SCALER).exists():  # the loss scale reached, for an exact resume
        scaler.load_state_dict(fileio.torch_load(run_dir / SCALER))
    ckpt_every = max(1, round(cfg["checkpoint_kimg"] * 1000 / batch))
    curves = Curves(run_dir, enabled=main)
    progress = bar(total=total, initial=step, desc=f"{desc} {run_dir.name[:8]}", unit="step", disable=not main)
    with open(run_dir / "stats.jsonl", "a") if main else contextlib.nullcontext() as stats_file, progress:
        t_last = time.perf_counter()
        for item in steps:
            lr, loss, grad_norm = optimizer_step(net, ema, opt, item.loss, cfg, step, ema_update, scaler)
            step += 1
            progress.update(1)
            if item.detail is not None:
                curves.add(*item.detail)
            if step % cfg["log_every"] == 0 or step == total:
                fencing.check()  # a holder presumed dead (frozen, its lock taken over) logs nothing more
                now = time.perf_counter()
                stats = {"step": step, "kimg": step * batch / 1000,
                         "loss": distributed.mean_over_ranks(loss.item()), "lr": lr,
                         "grad_norm": None if grad_norm is None else float(grad_norm),
                         "sec_per_step": (now - t_last) / cfg["log_every"], **(log_stats() if log_stats else {})}
                stats.update(curves.flush(stats))
                t_last = now
                if main:
                    LOG.info(" ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
                                      if not isinstance(v, dict)))
                    stats_file.write(json.dumps(stats) + "\n")
                    stats_file.flush()
                progress.set_postfix(loss=f"{stats['loss']:.3f}")
            checkpoint = step % ckpt_every == 0 or step == total or step == stop_at_step
            if step in snapshots or checkpoint:
                fencing.check(fresh=True)  # still this stage's owner: the checkpoint would overwrite a successor's
                check_finite_weights(net, ema, step)  # nothing non-finite is ever stored
                check_loss_scale(scaler, step)
            if step in snapshots and main and save_snapshot is not None:
                save_snapshot(step)
            if (step in snapshots or checkpoint) and main and ema_probe is not None:
                probe = {"step": step, "kimg": step * batch / 1000, **ema_probe()}
                stats_file.write(json.dumps(probe) + "\n")
                stats_file.flush()
                curves.ema(probe)
            if checkpoint:
                save_checkpoint(run_dir, step, net, ema, opt, item.stream_state)
                if scaler is not None and main:
                    fileio.torch_save(run_dir / SCALER, scaler.state_dict())
    curves.close()
    distributed.barrier()  # rank 0's checkpoint is on disk before any rank returns
    return step
