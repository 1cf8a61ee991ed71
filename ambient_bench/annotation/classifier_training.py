"""Training the noise classifier (sigma_min) and the crops classifiers (sigma_max).

Both are noise-conditional binary classifiers trained with a class-balanced BCE (each class weighs
half whatever its share of the pool, so the output is the posterior under equal priors: a monotone
map of the likelihood ratio, and a 10/90 pool gives the same annotations as a 50/50 one; with
``class_balance: false`` the release's plain BCE, whose output is the posterior under the pool's ratio) on
x_t = x_0 + sigma·eps,
ln(sigma) ~ N(P_mean, P_std²) (paper §3.1, §3.2), with EDM's non-leaky augmentation of x_0 when
``augment_p`` > 0 (``AugmentPipe.edm_recipe``: the paper's classifiers use the diffusion recipe, p = 0.12,
0.15 at 64 px, as the release's train.py builds it for both).
The crops classifier sees one random K×K window of x_t per image with everything outside set to 0,
the same zero-padded form it is given at annotation time (the official release trained it on full
images by mistake).

The steps run through the diffusion model's own loop (``training/fit.py``: Adam, warm-up, clipping,
EMA, checkpoints, logging); every draw of step k is seeded by (seed, k) and the data order is part of
the checkpoint, so an interrupted run ends with the same weights.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ambient_bench import fileio
from ambient_bench.annotation.classifier_net import (PRESETS, NoiseConditionalClassifier, build_classifier,
                                                    parameter_count)
from ambient_bench.annotation.crops import window_mask
from ambient_bench.config.schema import Section
from ambient_bench.diffusion.augment import AugmentPipe
from ambient_bench.data.images import uint8_to_model
from ambient_bench.params import Param
from ambient_bench.seeding import numpy_rng, seed_for, torch_generator
from ambient_bench.training.fit import Step, fit, restore_checkpoint
from ambient_bench.training.loop import configure_backends, resolve_device
from ambient_bench.training.stream import AdmissibleStream

CLASSIFIER = "classifier.pt"


def random_windows(resolution: int, crop: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    top, left = rng.integers(0, resolution - crop + 1, size=(2, count))
    return top, left


def train_classifier(images: torch.Tensor, labels: torch.Tensor, net_cfg: dict[str, Any], cfg: dict[str, Any],
                     run_dir: Path, crop_size: int | None = None, log: Callable[[str], None] = print,
                     stop_at_step: int | None = None, class_balanced: bool = True) -> bool:
    """Train (or resume) a classifier in ``run_dir``; True once ``classifier.pt`` is written.

    ``images`` uint8 N×C×H×W, ``labels`` 0/1 per image (1 = the class whose probability the
    classifier outputs). ``crop_size`` None trains on whole images. ``class_balanced=False`` is the
    official release's plain BCE, whose output carries the pool's class ratio (for comparisons).
    """
    prior = float(labels.float().mean())
    if not 0 < prior < 1:
        raise ValueError(f"a classifier needs both classes; {len(labels)} images, positive fraction {prior}")
    device = resolve_device(cfg["device"])
    configure_backends({"tf32": False}, device)  # the paper's classifiers: fp32, TF32 off (as the denoiser)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed, batch = cfg["seed"], cfg["batch"]
    x_all, y_all = uint8_to_model(images).to(device), labels.float().to(device)
    weight_all = torch.where(y_all > 0, 0.5 / prior, 0.5 / (1 - prior))  # class-balanced: each class weighs ½
    if not class_balanced:
        weight_all = torch.ones_like(y_all)
    _, channels, resolution, _ = x_all.shape
    torch.manual_seed(seed_for("classifier-init", seed))
    net = build_classifier(net_cfg, channels, resolution, cfg["sigma_data"]).to(device).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    everyone = np.zeros(len(x_all))
    stream = AdmissibleStream(everyone, everyone, 1.0, seed_for("classifier-order", seed))
    augment = AugmentPipe.edm_recipe(cfg["augment_p"]) if cfg["augment_p"] > 0 else None

    step = restore_checkpoint(run_dir, net, ema, opt, stream, log)
    total = max(1, math.ceil(cfg["duration_kimg"] * 1000 / batch))
    tally = {"correct": 0, "seen": 0}

    def losses() -> Iterator[Step]:
        for step in range(step_from, total if stop_at_step is None else min(total, max(step_from, stop_at_step))):
            rng = numpy_rng("classifier-sigma", seed, step)
            indices, sigmas = stream.batch(lambda: math.exp(cfg["P_mean"] + cfg["P_std"] * rng.standard_normal()),
                                           batch)
            idx = torch.from_numpy(indices).to(device)
            sigma = torch.from_numpy(sigmas).float().to(device)
            eps = torch.randn((batch, *x_all.shape[1:]), generator=torch_generator("classifier-eps", seed, step))
            x0, augment_labels = x_all[idx], None
            if augment is not None:
                x0, augment_labels = augment(x0, torch_generator("classifier-augment", seed, step))
            x_t = x0 + sigma.reshape(-1, 1, 1, 1) * eps.to(device)
            if crop_size is not None:
                top, left = random_windows(resolution, crop_size, batch, numpy_rng("classifier-crop", seed, step))
                x_t = x_t * window_mask(resolution, crop_size, torch.from_numpy(top), torch.from_numpy(left)).to(device)
            torch.manual_seed(seed_for("classifier-dropout", seed, step))
            logits = net(x_t, sigma, augment_labels)
            tally["correct"] += int(((logits > 0).float() == y_all[idx]).sum())
            tally["seen"] += batch
            yield Step(F.binary_cross_entropy_with_logits(logits, y_all[idx], weight=weight_all[idx]),
                       stream.state_dict())

    def accuracy() -> dict[str, float]:
        value = tally["correct"] / max(tally["seen"], 1)
        tally.update(correct=0, seen=0)
        return {"train_accuracy": value}

    step_from = step
    step = fit(net, ema, opt, cfg, run_dir, losses(), start=step, total=total, desc="classifier",
               stop_at_step=stop_at_step, log_stats=accuracy)
    if step < total:
        return False
    fileio.torch_save(run_dir / CLASSIFIER, {"ema": ema.state_dict(), "network_cfg": net_cfg, "img_channels": channels,
                                             "resolution": resolution, "sigma_data": cfg["sigma_data"],
                                             "crop_size": crop_size, "parameters": parameter_count(ema)})
    return True


def load_classifier(path: Path, device: torch.device | str = "cpu") -> NoiseConditionalClassifier:
    """The EMA classifier written at the end of training, in eval mode, channels-last.

    Channels-last lets oneDNN run the convolutions without reordering each batch: about 1.4×
    faster annotation on CPU (benchmarks/perf/annotate.py).
    """
    saved = fileio.torch_load(path)
    net = build_classifier(saved["network_cfg"], saved["img_channels"], saved["resolution"], saved["sigma_data"])
    net.load_state_dict(saved["ema"])
    net.crop_size = saved["crop_size"]
    return net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


# The classifier's architecture and training recipe: the `classifier` / `crops_classifier`
# parameters of the Ambient-o methods.
CLASSIFIER_SECTION = Section("classifier", {
    "preset": Param("cpu", "architecture preset (cpu, paper_cifar, paper_64); keys below override it",
                    kind=str, choices=tuple(PRESETS)),
    "model_channels": Param(None, "channels at the first resolution", kind=int, ge=4, nullable=True),
    "channel_mult": Param(None, "channel multiplier per level", kind=list, item=int, nullable=True),
    "num_blocks": Param(None, "residual blocks per level", kind=int, ge=1, nullable=True),
    "attn_resolutions": Param(None, "resolutions with self-attention", kind=list, item=int, nullable=True),
    "dropout": Param(None, "dropout probability", ge=0, lt=1, nullable=True),
    "augment_p": Param(0.0, "EDM's non-leaky augmentation (its train.py recipe) at probability p (paper: the "
                            "diffusion recipe's 0.12, 0.15 at 64 px); > 0 adds the 9 augmentation-label inputs",
                       ge=0, le=1, omit_default=True),
    "duration_kimg": Param(20.0, "training length in thousands of images (paper: ~15 Mimg)", gt=0, le=1e7),
    "batch": Param(128, "images per step (paper: 512)", kind=int, ge=1, le=1 << 20),
    "lr": Param(1e-3, "Adam learning rate (paper: 1e-4 noise, 1e-3 crops)", gt=0),
    "warmup_kimg": Param(0.0, "linear learning-rate warm-up (paper: 10 Mimg)", ge=0),
    "ema_halflife_kimg": Param(2.0, "EMA half-life (paper: 500 kimg)", gt=0),
    "ema_rampup": Param(0.05, "EMA half-life ≤ rampup × images seen (null = off)", gt=0, nullable=True),
    "grad_clip": Param(1.0, "max global gradient norm (null = off)", gt=0, nullable=True),
    "P_mean": Param(-1.2, "mean of ln(sigma) during training"),
    "P_std": Param(1.2, "std of ln(sigma) during training", gt=0),
    "sigma_data": Param(0.5, "EDM's data standard deviation (input scaling)", gt=0),
    "seed": Param(0, "training seed (also of the held-out split)", kind=int, ge=0),
    "holdout_fraction": Param(0.1, "share of the pool held out of training to measure the classifier (ROC-AUC per "
                                   "noise level); 0 = train on the whole pool (the paper), the measurement and the "
                                   "min_auc gate then in-sample, on a 10% coin of the training images", ge=0, lt=1,
                             check=lambda v: None if v == 0 or v >= 0.01 else "0 (no hold-out) or at least 0.01"),
    "class_balance": Param(True, "class-balanced BCE (each class weighs ½ whatever its share of the pool); false = "
                                 "plain BCE, the official release's, whose output carries the pool's class ratio "
                                 "(App. D's unbalanced classifier)", kind=bool, omit_default=True),
    "min_auc": Param(0.6, "a noise classifier whose held-out ROC-AUC at the lowest noise levels is below this fails "
                          "its stage (0 = never; crops classifiers are measured, not gated)", ge=0, le=1,
                     semantic=False),
    "checkpoint_kimg": Param(5.0, "checkpoint interval", gt=0, semantic=False),
    "log_every": Param(50, "steps between log lines", kind=int, ge=1, semantic=False),
    "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
})
