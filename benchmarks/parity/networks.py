"""Networks with weights transferred from the peers' code: max |ΔD| over several σ.

DDPM++ (EDM's ``SongUNet`` in ``EDMPrecond``, configured as EDM's train.py does for ``--arch=ddpmpp`` on
CIFAR-10) and the release's copy of it (ambient-omni pixel-diffusion), against ours
(``ambient_bench.diffusion.unet`` in ``edm.EDMPrecond``); EDM2's ``Precond`` and the release's copy
(latent-diffusion) against ``ambient_bench.diffusion.edm2``. The peers' networks are built at random,
their weights written into ours by ``transfer``, and both evaluated on the same inputs, one image per σ.
EDM's and EDM2's preconditioners cast to float32, so the float64 rows compare the raw networks F.

    python benchmarks/parity/networks.py --edm PATH --edm2 PATH [--ambient-omni PATH]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import failed_row, parse_peers, peer_import, print_rows, row
from benchmarks.parity.transfer import ddpmpp_state_dict, edm2_state_dict, load_exactly, randomize

NEEDS = ("edm", "edm2")
SIGMAS = (0.002, 0.1, 1.0, 10.0, 80.0)
BOUND_FP32, BOUND_FP64 = 1e-5, 1e-6
# EDM's train.py for --arch=ddpmpp (CIFAR-10): SongUNet, positional embedding, standard encoder and decoder,
# 128 channels × [2, 2, 2], 4 blocks, attention at 16², dropout 0.13, 9 augment labels (--augment > 0)
DDPMPP_CIFAR = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                    decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                    channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16], dropout=0.13, augment_dim=9)
# EDM2 at a CPU size (2 levels, 64 channels: one attention head per 64 channels as EDM2 counts them) and XS
EDM2_SMALL = dict(res=16, label_dim=10, model_channels=64, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8])
EDM2_XS = dict(res=64, label_dim=1000, model_channels=128, channel_mult=[1, 2, 3, 4], num_blocks=3,
               attn_resolutions=[16, 8])


def _inputs(channels: int, res: int, label_dim: int, dtype: torch.dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = len(SIGMAS)
    sigma = torch.tensor(SIGMAS, dtype=dtype)
    x = 0.5 * torch.randn(n, channels, res, res, generator=g, dtype=dtype) + \
        sigma.reshape(-1, 1, 1, 1) * torch.randn(n, channels, res, res, generator=g, dtype=dtype)
    labels = None
    if label_dim:
        labels = torch.nn.functional.one_hot(torch.randint(label_dim, (n,), generator=g), label_dim).to(dtype)
    return x, sigma, labels


def _per_sigma(diff: torch.Tensor) -> tuple[float, str]:
    per = diff.flatten(1).max(1).values
    return float(per.max()), "per σ " + " ".join(f"{s:g}:{float(d):.1e}" for s, d in zip(SIGMAS, per))


def ddpmpp_rows(root: Path, who: str, label_dims: tuple[int, ...] = (0, 10)) -> list[dict]:
    """For each label_dim one network pair: float32 D without and with augment labels (with class labels where
    label_dim > 0), float64 F with augment labels."""
    from ambient_bench.diffusion.edm import EDMPrecond
    from ambient_bench.diffusion.unet import UNet

    rows = []
    networks = peer_import(root, "training.networks")
    for label_dim in label_dims:
        name = f"DDPM++ CIFAR ({who}) " + ("class labels" if label_dim else "no class labels")
        try:
            torch.manual_seed(0)
            theirs = networks.EDMPrecond(img_resolution=32, img_channels=3, label_dim=label_dim, use_fp16=False,
                                         **DDPMPP_CIFAR).eval()
            randomize(theirs, seed=label_dim)
            ours = EDMPrecond(UNet(3, 32, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4,
                                   attn_resolutions=[16], dropout=0.13, augment_dim=9, label_dim=label_dim)).eval()
            load_exactly(ours.net, ddpmpp_state_dict(theirs.model))
            x, sigma, labels = _inputs(3, 32, label_dim, torch.float32)
            aug = 0.5 * torch.randn(len(x), 9, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                for augment in ((None, aug) if label_dim == 0 else (aug,)):
                    d_theirs = theirs(x, sigma, labels, augment_labels=augment)
                    d_ours = ours(x, sigma, augment_labels=augment, class_labels=labels)
                    value, note = _per_sigma((d_theirs - d_ours).abs())
                    what = " + augment labels" if augment is not None else ""
                    rows.append(row(f"{name}{what} float32 max |ΔD|", value, BOUND_FP32, note))
                # float64: EDMPrecond casts to float32, so the raw network F(c_in x, c_noise) of each side
                x64, sigma64, aug64 = x.double(), sigma.double(), aug.double()
                lab64 = labels.double() if labels is not None else None
                c_in = (1 / (0.25 + sigma64 ** 2).sqrt()).reshape(-1, 1, 1, 1)
                c_noise = sigma64.log() / 4
                f_theirs = theirs.model.double()(c_in * x64, c_noise, lab64, augment_labels=aug64)
                f_ours = ours.net.double()(c_in * x64, c_noise, augment_labels=aug64, class_labels=lab64)
                value, note = _per_sigma((f_theirs - f_ours).abs())
                rows.append(row(f"{name} + augment labels float64 max |ΔF|", value, BOUND_FP64,
                                note + "; float32 parts: EDM's attention softmax, our embedding's angles"))
        except Exception as error:  # a failed check is a FAIL row; the other checks still run
            rows.append(failed_row(name, error))
    return rows


def edm2_rows(root: Path, who: str, sizes: dict[str, dict]) -> list[dict]:
    from ambient_bench.diffusion.edm2 import EDM2Precond, EDM2UNet

    rows = []
    networks = peer_import(root, "training.networks_edm2")
    for size, cfg in sizes.items():
        cfg = dict(cfg)
        res, label_dim = cfg.pop("res"), cfg.pop("label_dim")
        name = f"EDM2 {size} ({who}, {4}×{res}², {label_dim} classes)"
        try:
            torch.manual_seed(0)
            theirs = networks.Precond(img_resolution=res, img_channels=4, label_dim=label_dim, use_fp16=False,
                                      **cfg).eval()
            randomize(theirs, seed=3)
            ours = EDM2Precond(EDM2UNet(4, res, label_dim, **cfg)).eval()
            load_exactly(ours, edm2_state_dict(theirs))
            x, sigma, labels = _inputs(4, res, label_dim, torch.float32)
            with torch.no_grad():
                for lab, what in ((labels, "class labels"), (None, "no labels (zeros)"))[:2 if size == "small" else 1]:
                    d_theirs, u_theirs = theirs(x, sigma, lab, return_logvar=True)
                    d_ours, u_ours = ours(x, sigma, class_labels=lab, return_logvar=True)
                    value, note = _per_sigma((d_theirs - d_ours).abs())
                    exact = "bit-identical" if value == 0.0 else "not bit-identical"
                    rows.append(row(f"{name} {what} float32 max |ΔD|", value, BOUND_FP32,
                                    f"{exact}; {note}; max |Δu(σ)| {float((u_theirs - u_ours).abs().max()):.1e}"))
        except Exception as error:
            rows.append(failed_row(name, error))
    return rows


def run(peers: dict[str, Path]) -> list[dict]:
    rows = ddpmpp_rows(peers["edm"], "EDM")
    sizes = {"small": EDM2_SMALL, "XS": EDM2_XS}
    rows += edm2_rows(peers["edm2"], "EDM2", sizes)
    rows.append(row("EDM2 float64", "not run", None, "EDM2's normalize() takes the norm with dtype=float32, "
                    "which torch refuses for float64 input: its network runs in float32 (or fp16) only"))
    if "ambient_omni" in peers:  # the release's copies: DDPM++ with a rewritten attention op, EDM2 + forward_features
        rows += ddpmpp_rows(peers["ambient_omni"] / "pixel-diffusion", "release pixel-diffusion", (0,))
        rows += edm2_rows(peers["ambient_omni"] / "latent-diffusion", "release latent-diffusion",
                          {"small": EDM2_SMALL})
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
