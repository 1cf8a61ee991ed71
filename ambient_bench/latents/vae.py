"""The VAE between pixels and EDM2's latents, through ``diffusers.AutoencoderKL``.

``sd-vae-ft-mse`` is the one EDM2 and the paper use (``stabilityai/sd-vae-ft-mse``: 512 px RGB →
4×64×64). Its encoder's distribution is stored as (mean, std) per image; a training sample is
mean + std·ε, scaled per channel to the network's range the EDM2 way: x = (z - raw_mean)·(0.5/raw_std),
with EDM2's measured raw_mean / raw_std of ImageNet latents. ``tiny`` is a small randomly initialised
AutoencoderKL built here (fixed seed, 4× downsampling), for tests and the CPU projection; its scaling
is measured on the data it encodes.

Weights load the normal way: an explicit folder (``weights``), else the Hugging Face cache
(``HF_HOME``), downloading when online through huggingface_hub; the safetensors file is checked against
the sha256 pinned in ``ambient_bench/weights.py`` (a mismatching download is deleted). Offline
(``--offline`` / ``HF_HUB_OFFLINE=1``) or after a failed download, a one-line error names the files, the
cache folder and the command that fetches them. Stage keys hold the weights' sha256 (the pin while the
file is not cached yet), so ``plan`` never needs the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ambient_bench import weights as weights_registry
from ambient_bench.errors import UserError

SD_VAE_REPO = weights_registry.SD_VAE_REPO
SD_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
# EDM2's per-channel statistics of sd-vae-ft-mse latents of ImageNet-512 (mean and std of the samples)
EDM2_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
EDM2_RAW_STD = (4.17, 4.62, 3.71, 3.28)
FINAL_STD = 0.5
TINY_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [8, 8, 16], "sample_size": 32,
}


def hf_cache_folder(repo: str) -> Path:
    return weights_registry.hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>"


def _autoencoder_kl() -> Any:
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:  # a declared dependency; only a broken install lacks it
        raise UserError(f"latent space needs diffusers ({err}); pip install diffusers") from None
    return AutoencoderKL


def vae_folder(name: str, weights: str | None) -> Path | None:
    """The folder holding the VAE's config and weights (None for ``tiny``, which is built here)."""
    if name == "tiny":
        return None
    if weights is not None:
        folder = Path(os.path.expanduser(weights)).absolute()
        missing = [f for f in SD_VAE_FILES if not (folder / f).is_file()]
        if missing:
            raise UserError(f"latent.weights: {folder} lacks {', '.join(missing)}; download {SD_VAE_REPO} "
                            f"(huggingface-cli download {SD_VAE_REPO} --local-dir {folder})")
        return folder
    from huggingface_hub import snapshot_download

    # the weights first (pinned sha256; inside `plan` this only notes that they are missing), then the folder
    entry = weights_registry.REGISTRY["sd_vae"]
    reason = weights_registry.fetch(entry)
    if reason is None and weights_registry.deferring():  # plan: the weights are cached, config.json comes at run
        return entry.path().parent
    if reason is None:
        try:
            return Path(snapshot_download(SD_VAE_REPO, allow_patterns=list(SD_VAE_FILES), cache_dir=str(
                weights_registry.hf_hub_cache()), local_files_only=bool(weights_registry.offline())))
        except Exception as err:  # noqa: BLE001 — config.json not cached offline / the hub unreachable
            reason = f"{SD_VAE_FILES[0]} not fetched ({type(err).__name__})"
    raise UserError(f"latent.vae sd-vae-ft-mse: weights not found: {', '.join(SD_VAE_FILES)} in "
                    f"{hf_cache_folder(SD_VAE_REPO)} ({reason}); run `python -m ambient_bench weights fetch sd_vae` "
                    f"(or `huggingface-cli download {SD_VAE_REPO}`) on a machine with internet and copy the cache "
                    f"there, or set latent.weights to a folder with both files")


def load_vae(name: str, weights: str | None = None) -> torch.nn.Module:
    """The AutoencoderKL in eval mode, frozen."""
    autoencoder = _autoencoder_kl()
    folder = vae_folder(name, weights)
    if folder is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = autoencoder(**TINY_CONFIG)
    else:
        vae = autoencoder.from_pretrained(folder)
    return vae.eval().requires_grad_(False)


def weights_identity(name: str, weights: str | None = None) -> dict[str, str]:
    """What the latents stage's key holds of the VAE: the weights' content hash, never their path."""
    from ambient_bench.metrics.features import file_sha256

    if name == "tiny":
        return {"vae": "tiny", "config": str(sorted(TINY_CONFIG.items()))}
    if weights is not None:
        return {"vae": name, "sha256": file_sha256(vae_folder(name, weights) / SD_VAE_FILES[1])[:24]}
    entry = weights_registry.REGISTRY["sd_vae"]  # the cached file's hash, or the pin it will have once fetched
    return {"vae": name, "sha256": weights_registry.identity(entry, entry.path())[:24]}


@torch.no_grad()
def encode_moments(vae: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×H×W → the encoder's per-image (mean, std), each N×4×H/f×W/f, float32."""
    x = images.to(next(vae.parameters()).device, torch.float32) / 127.5 - 1
    dist = vae.encode(x).latent_dist
    return dist.mean.float().cpu(), dist.std.float().cpu()


@torch.no_grad()
def decode(vae: torch.nn.Module, latents: torch.Tensor, raw_mean: torch.Tensor, raw_std: torch.Tensor) -> torch.Tensor:
    """Model-space latents → uint8 images (the inverse of ``to_model``)."""
    z = from_model(latents.float(), raw_mean, raw_std).to(next(vae.parameters()).device)
    x = vae.decode(z).sample
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_model(z: torch.Tensor, raw_mean: torch.Tensor, raw_std: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (z - raw_mean.reshape(shape).to(z)) * (FINAL_STD / raw_std.reshape(shape).to(z))


def from_model(x: torch.Tensor, raw_mean: torch.Tensor, raw_std: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return x / (FINAL_STD / raw_std.reshape(shape).to(x)) + raw_mean.reshape(shape).to(x)
