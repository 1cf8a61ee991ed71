"""Training-step cost: the ambient loss against the plain EDM loss, and network throughput.

    python benchmarks/perf/train_step.py [--resolution 32] [--batch 128] [--skip-cifar]
    torchrun --nproc_per_node=N benchmarks/perf/train_step.py --gpu-only   # DDP throughput on N GPUs

(a) One full training step (batch selection, loss, backward, Adam, EMA) with the ambient
    machinery (sigma-first admissible sampling over annotated samples, annotation noise,
    ambient loss) divided by the same step with plain EDM training (uniform batch, EDM loss),
    same network, batch and device. The two are timed alternately, many times, and the
    medians compared, so machine noise hits both alike. Target (issue 5): ≤ 1.03.
(b) Images/second of the paper's CIFAR-10 network (DDPM++, 55.7 M parameters) forward +
    backward at batch 64 on CPU.
(c) With CUDA: the CIFAR network at batch 512 in fp32, bf16 autocast, and bf16 + torch.compile;
    under torchrun, the same with DistributedDataParallel over the ranks.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import numpy as np
import torch

from ambient_bench.allocator import retain_freed_memory
from ambient_bench.diffusion.edm import EDMPrecond
from ambient_bench.diffusion.loss import ambient_edm_loss, annotation_noise
from ambient_bench.diffusion.unet import build_unet, parameter_count
from ambient_bench import distributed
from ambient_bench.training.loop import optimizer_step
from ambient_bench.training.stream import AdmissibleStream

RECIPE = dict(lr=1e-3, warmup_kimg=0.0, grad_clip=1.0, ema_halflife_kimg=500.0, ema_rampup=0.05)


def edm_loss(denoiser, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor, sigma_data: float = 0.5):
    """The plain EDM loss (Karras et al. 2022), the reference the ambient step is compared with."""
    s = sigma.reshape(-1, 1, 1, 1)
    weight = (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2
    return (weight * (denoiser(x0 + s * eps, sigma) - x0) ** 2).flatten(1).sum(1)


def loss_ratio(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    n, shape = 2048, (3, args.resolution, args.resolution)
    x_all, z_all = torch.rand(n, *shape) * 2 - 1, torch.randn(n, *shape)
    # the paper's mix: 10% clean (sigma_min 0), 90% annotated, sigma_min spread as a classifier gives
    sigma_min = torch.where(torch.rand(n) < 0.1, 0.0, torch.exp(torch.randn(n) * 0.5)).double()
    stream = AdmissibleStream(sigma_min.numpy(), np.zeros(n), math.sqrt(4 / 3), seed=0)
    net = EDMPrecond(build_unet({"preset": "cpu"}, 3, args.resolution)).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cfg = {**RECIPE, "batch": args.batch}
    rng = np.random.default_rng(0)

    def ambient_step(step: int) -> None:
        indices, sigmas = stream.batch(lambda: math.exp(-1.2 + 1.2 * rng.standard_normal()), args.batch)
        idx, sigma = torch.from_numpy(indices), torch.from_numpy(sigmas)
        sigma_n = annotation_noise(sigma, sigma_min[idx])
        loss = ambient_edm_loss(net, x_all[idx], z_all[idx], sigma.float(), sigma_n.float(),
                                torch.randn(args.batch, *shape)).mean()
        optimizer_step(net, ema, opt, loss, cfg, step)

    def edm_step(step: int) -> None:
        idx = torch.from_numpy(rng.integers(0, n, args.batch))
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(args.batch))
        loss = edm_loss(net, x_all[idx], sigma, torch.randn(args.batch, *shape)).mean()
        optimizer_step(net, ema, opt, loss, cfg, step)

    times: dict[str, list[float]] = {"ambient": [], "edm": []}
    for step in range(2 * args.steps + 4):
        for name, fn in (("ambient", ambient_step), ("edm", edm_step)) if step % 2 else \
                (("edm", edm_step), ("ambient", ambient_step)):
            start = time.perf_counter()
            fn(step)
            if step >= 4:  # warm-up steps are not timed
                times[name].append(time.perf_counter() - start)
    amb, edm = statistics.median(times["ambient"]), statistics.median(times["edm"])
    print(f"(a) training step, cpu preset ({parameter_count(net):,} parameters), {args.resolution}×"
          f"{args.resolution}, batch {args.batch}, {torch.get_num_threads()} threads, median of "
          f"{len(times['edm'])} alternating steps each:")
    print(f"    ambient {amb * 1e3:.1f} ms, plain EDM {edm * 1e3:.1f} ms, ratio {amb / edm:.3f} "
          f"(target ≤ 1.03: {'met' if amb / edm <= 1.03 else 'NOT met'})")


def throughput(net: torch.nn.Module, batch: int, device: torch.device, repeats: int,
               precision: str = "fp32", compile_net: bool = False) -> float:
    """Images/second of forward + backward on random data (weights do not change the cost)."""
    model = torch.compile(net) if compile_net else net
    x = torch.randn(batch, 3, 32, 32, device=device)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(batch, device=device))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, sigma).float().square().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def cifar_network(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return EDMPrecond(build_unet({"preset": "paper_cifar", "dropout": 0.0}, 3, 32)).to(device).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128, help="batch of the loss-ratio steps (a)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per side in (a)")
    parser.add_argument("--skip-cifar", action="store_true", help="skip (b), about a minute on 2 CPU cores")
    parser.add_argument("--gpu-only", action="store_true", help="only (c)")
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does
    distributed.init_from_env()
    if not args.gpu_only:
        loss_ratio(args)
        if not args.skip_cifar:
            net = cifar_network(torch.device("cpu"))
            rate = throughput(net, 64, torch.device("cpu"), repeats=2)
            print(f"(b) CIFAR-10 DDPM++ ({parameter_count(net) / 1e6:.2f} M parameters), forward + backward, "
                  f"batch 64, cpu, {torch.get_num_threads()} threads: {rate:.1f} images/s")
    if not torch.cuda.is_available():
        print("(c) no CUDA device: GPU throughput not measured")
        return
    device = torch.device("cuda", torch.cuda.current_device())
    world = distributed.world_size()
    net = cifar_network(device)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index])
    per_rank = 512 // world
    for precision, compile_net in (("fp32", False), ("bf16", False), ("bf16", True)):
        rate = throughput(net, per_rank, device, repeats=10, precision=precision, compile_net=compile_net)
        rate = distributed.mean_over_ranks(rate) * world
        if distributed.is_main():
            print(f"(c) CIFAR-10 DDPM++ batch 512 over {world} × {torch.cuda.get_device_name(device)}, {precision}"
                  f"{' + compile' if compile_net else ''}: {rate:,.0f} images/s "
                  f"({1000 / rate:.2f} s per 1k images; paper: 0.8 s on 8×V100)")


if __name__ == "__main__":
    main()
