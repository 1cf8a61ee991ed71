"""Training and sampling images/s of the paper's networks on this GPU, printed as throughput.yaml entries.

    python benchmarks/perf/throughput_entries.py            # one CUDA GPU, about 3 minutes on an H100
    python benchmarks/perf/throughput_entries.py --tiny     # CPU check of the script: tiny networks, tiny sizes

Measures, on one device, with synthetic data (no data loading, no augmentation pipe, no EMA):
- DDPM++ CIFAR-10 (preset paper_cifar, 32 px): training steps in fp32 with TF32 off (the Table 2(a)
  suite's precision), EDM loss, Adam; sampling with Heun 18 steps (35 NFE) in fp32, as the harness samples;
- EDM2-XS on ImageNet-512 latents (4×64×64, 1000 classes): training in bf16 (Table 1's precision), EDM2
  loss with the learned uncertainty, Adam; sampling with Heun 32 steps (63 NFE) in fp32, unguided and
  guided by an unconditional XS (126 evaluations).
Prints one YAML entry per figure (kind measured, with date, device and settings) to paste under
``measurements:`` in ambient_bench/engine/throughput.yaml; `plan --gpu KIND` then uses them as measured.
"""
from __future__ import annotations

import argparse
import datetime
import time
from typing import Callable

import torch

from ambient_bench.diffusion.guidance import guided
from ambient_bench.diffusion.sampler import heun_sample
from ambient_bench.training.loop import build_network

KINDS = ("v100", "a100", "h100", "h200")


def device_kind(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    return next((k for k in KINDS if k in name.lower()), name.lower().replace(" ", "_"))


def seconds(run: Callable[[], None], warmup: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Mean seconds of ``run`` after ``warmup`` (kernels, allocator, autotuning), synchronised."""
    warmup()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def train_seconds(net: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor | None, precision: str,
                  p_mean: float, p_std: float, repeats: int) -> float:
    """Seconds per optimiser step on the batch ``x0``: the EDM loss (EDM2's with its learned uncertainty)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    extra = {"class_labels": labels} if labels is not None else {}
    edm2 = hasattr(net, "logvar_fourier") or "edm2" in type(net).__module__

    def step() -> None:
        sigma = (torch.randn(len(x0), device=x0.device) * p_std + p_mean).exp()
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (s ** 2 + 0.25) / (s * 0.5) ** 2
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            noisy = x0 + s * torch.randn_like(x0)
            if edm2:
                denoised, logvar = net(noisy, sigma, return_logvar=True, **extra)
                loss = (weight / logvar.exp() * (denoised.float() - x0) ** 2 + logvar).mean()
            else:
                loss = (weight * (net(noisy, sigma, **extra).float() - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    return seconds(step, step, repeats, x0.device)


def sample_seconds(denoiser: Callable, noise: torch.Tensor, steps: int, repeats: int) -> float:
    with torch.no_grad():
        return seconds(lambda: heun_sample(denoiser, noise, steps), lambda: heun_sample(denoiser, noise, 2),
                       repeats, noise.device)


def entry(stage: str, network: str, resolution: int, channels: int, precision: str, kind: str, s_per_img: float,
          note: str, **extra: object) -> str:
    fields = {"kind": "measured", "stage": stage, "network": network, "resolution": resolution, "channels": channels,
              **extra, "precision": "half" if precision == "bf16" else "fp32", "device": kind, "devices": 1,
              "seconds_per_kimg": float(f"{s_per_img * 1000:.4g}"), "date": datetime.date.today().isoformat()}
    body = ", ".join(f"{k}: {v}" if not isinstance(v, str) or k != "date" else f'{k}: "{v}"' for k, v in fields.items())
    return f"  - {{{body},\n     source: \"benchmarks/perf/throughput_entries.py: {note}\"}}"


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU check: tiny networks and sizes (not a measurement)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 5 training, 1 sampling)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the suites' tf32: false
    torch.backends.cudnn.benchmark = True
    kind = device_kind(device)
    where = f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}"
    train_repeats, sample_repeats = args.repeats or (1 if args.tiny else 5), args.repeats or 1
    cifar = ("cpu", 8, 4, 4, 2) if args.tiny else ("paper_cifar", 32, 256, 128, 18)
    edm2 = ("edm2_tiny", 8, 4, 4, 2) if args.tiny else ("edm2_xs", 64, 128, 64, 32)
    lines = []

    preset, res, train_batch, sample_batch, steps = cifar
    net = build_network({"preset": preset}, 3, res, 0.5).to(device)
    t = train_seconds(net, torch.randn(train_batch, 3, res, res, device=device), None, "fp32", -1.2, 1.2, train_repeats)
    lines.append(entry("train", preset, res, 3, "fp32", kind, t / train_batch,
                       f"{where}, batch {train_batch}, fp32 tf32 off, synthetic data"))
    net.eval()
    t = sample_seconds(lambda x, s: net(x, s), torch.randn(sample_batch, 3, res, res, device=device), steps,
                       sample_repeats)
    lines.append(entry("sample", preset, res, 3, "fp32", kind, t / sample_batch,
                       f"{where}, batch {sample_batch}, Heun {steps} steps, fp32", nfe=2 * steps - 1, guided=False))
    del net

    preset, res, train_batch, sample_batch, steps = edm2
    net = build_network({"preset": preset, "label_dim": 1000}, 4, res, 0.5).to(device)
    labels = torch.nn.functional.one_hot(torch.randint(1000, (train_batch,)), 1000).float().to(device)
    t = train_seconds(net, torch.randn(train_batch, 4, res, res, device=device), labels, "bf16", -0.4, 1.0,
                      train_repeats)
    lines.append(entry("train", preset, res, 4, "bf16", kind, t / train_batch,
                       f"{where}, batch {train_batch}, bf16 autocast, synthetic latents", label_dim=1000))
    net.eval()
    guide = build_network({"preset": preset, "label_dim": 0}, 4, res, 0.5).to(device).eval()
    onehot = labels[:sample_batch]
    main_d = lambda x, s: net(x, s, class_labels=onehot)  # noqa: E731
    noise = torch.randn(sample_batch, 4, res, res, device=device)
    for is_guided, denoiser in ((False, main_d), (True, guided(main_d, lambda x, s: guide(x, s), 1.2))):
        t = sample_seconds(denoiser, noise, steps, sample_repeats)
        lines.append(entry("sample", preset, res, 4, "fp32", kind, t / sample_batch,
                           f"{where}, batch {sample_batch}, Heun {steps} steps, fp32, latents only (no VAE decode)"
                           + (", guided by an unconditional XS" if is_guided else ""),
                           label_dim=1000, nfe=2 * steps - 1, guided=is_guided))
    print(f"# paste under measurements: in ambient_bench/engine/throughput.yaml ({where})"
          + ("  -- TINY CPU CHECK, NOT A MEASUREMENT" if args.tiny else ""))
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
