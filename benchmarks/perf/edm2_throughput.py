"""EDM2 training and sampling throughput (issue 18): images per second of an EDM2 preset on ImageNet-512
latents (4×64×64, 1000 classes), for plan's compute estimates (ambient_bench/engine/throughput.yaml).

    python benchmarks/perf/edm2_throughput.py                       # edm2_xs on CUDA, bf16
    python benchmarks/perf/edm2_throughput.py --preset tiny --device cpu --resolution 8 --batch 8   # CPU smoke

Training: one optimiser step = forward + backward of the EDM2 loss with the learned uncertainty
(w/e^u·‖D − x0‖² + u), Adam, the power EMA update of two profiles, on random latents. Sampling:
Heun 32 steps (63 NFE), unguided and guided by a second network of the same preset (126 NFE).
Both are timed after warm-up steps, synchronised; the numbers are this machine's, printed with it.
"""
from __future__ import annotations

import argparse
import time

import torch

from ambient_bench.diffusion.edm2 import build_edm2
from ambient_bench.diffusion.guidance import guided
from ambient_bench.diffusion.sampler import heun_sample
from ambient_bench.training.phema import PowerEMA


def timed(step, repeats: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up: kernels, allocator, autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="xs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolution", type=int, default=64, help="latent side (ImageNet-512: 64)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_edm2({"preset": args.preset}, 4, args.resolution, label_dim=1000).to(device)
    ema = PowerEMA(net, [0.05, 0.10])
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99))
    x0 = torch.randn(args.batch, 4, args.resolution, args.resolution, device=device)
    labels = torch.nn.functional.one_hot(torch.randint(1000, (args.batch,)), 1000).float().to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    count = sum(p.numel() for p in net.parameters())
    steps = [0]

    def train_step() -> None:
        sigma = (torch.randn(args.batch, device=device) * 1.0 - 0.4).exp()
        s = sigma.reshape(-1, 1, 1, 1)
        with autocast:
            denoised, logvar = net(x0 + s * torch.randn_like(x0), sigma, class_labels=labels, return_logvar=True)
        weight = (s ** 2 + 0.25) / (s * 0.5) ** 2
        loss = (weight / logvar.exp() * (denoised.float() - x0) ** 2 + logvar).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps[0] += 1
        ema.update(net, steps[0])

    train_s = timed(train_step, args.repeats, device)
    net.eval()
    guide = build_edm2({"preset": args.preset}, 4, args.resolution, label_dim=0).to(device).eval()
    main_d = lambda x, s: net(x, s, class_labels=labels)  # noqa: E731
    guide_d = lambda x, s: guide(x, s)  # noqa: E731
    noise = torch.randn_like(x0)
    with torch.no_grad(), autocast:
        plain_s = timed(lambda: heun_sample(main_d, noise, 32), max(1, args.repeats // 2), device)
        guided_s = timed(lambda: heun_sample(guided(main_d, guide_d, 1.2), noise, 32), max(1, args.repeats // 2),
                         device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; EDM2-{args.preset.upper()} ({count / 1e6:.1f} M parameters), latents 4×{args.resolution}²,"
          f" batch {args.batch}, {args.precision}")
    print(f"training: {args.batch / train_s:.1f} img/s ({train_s * 1000:.0f} ms per step, power EMA of 2 profiles)")
    print(f"sampling, Heun 32 steps: {args.batch / plain_s:.1f} img/s unguided (63 NFE), "
          f"{args.batch / guided_s:.1f} img/s guided (126 NFE); guided / unguided time {guided_s / plain_s:.2f}")


if __name__ == "__main__":
    main()
