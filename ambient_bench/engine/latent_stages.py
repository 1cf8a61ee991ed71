"""The stages of the latent (EDM2) graph:

    mix ─► latents ─► train ─► reconstruct(σ_rel) ─► sample (guided by another train ─► reconstruct) ─► …

``latents`` encodes every pool image once with the VAE into shards (resumable shard by shard);
``reconstruct`` rebuilds the power-function EMA of one σ_rel from the averages the training stored.
Sampling decodes back to pixels, so annotation and evaluation see images as in pixel space.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ambient_bench import fileio
from ambient_bench.engine.cells import Stage
from ambient_bench.latents.shards import META, LatentShards, write_meta, write_shards
from ambient_bench.latents.vae import EDM2_RAW_MEAN, EDM2_RAW_STD, decode, encode_moments, load_vae


def _device(name: str) -> torch.device:
    from ambient_bench.training.loop import resolve_device

    return resolve_device(name)


def run_latents(stage: Stage, out: Path, ctx: Any) -> dict[str, Any]:
    from ambient_bench.engine.stages import load_mixed

    cfg = stage.runtime["latent"]
    mixed = load_mixed(stage.deps["mix"], ctx)
    vae = load_vae(cfg["vae"], cfg["weights"]).to(_device(cfg["device"]))
    folder = out / "shards"

    def encode(rows: range) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(rows.start, rows.stop, cfg["batch"]):
            images = mixed.images[start:min(start + cfg["batch"], rows.stop)]
            batches = {"": images, "_flip": images.flip(-1)} if cfg["xflip"] else {"": images}
            for suffix, pixels in batches.items():
                mean, std = encode_moments(vae, pixels)
                parts.setdefault(f"mean{suffix}", []).append(mean.half())
                parts.setdefault(f"std{suffix}", []).append(std.half())
        return {name: torch.cat(values) for name, values in parts.items()}

    count = len(mixed.index)
    write_shards(folder, count, cfg["shard_size"], encode, log=ctx.log)
    names = ["mean", "std"] + (["mean_flip", "std_flip"] if cfg["xflip"] else [])
    sample = load_file(str(folder / "shard-00000.safetensors"))  # shapes and statistics, before meta exists
    shape = list(sample["mean"].shape[1:])
    if cfg["vae"] == "sd-vae-ft-mse":
        raw_mean, raw_std = list(EDM2_RAW_MEAN), list(EDM2_RAW_STD)
    else:  # a VAE without published statistics: measured on the first shard (mean and std of samples)
        mean, std = sample["mean"].float(), sample["std"].float()
        raw_mean = mean.mean(dim=(0, 2, 3)).tolist()
        raw_std = (mean.var(dim=(0, 2, 3)) + std.pow(2).mean(dim=(0, 2, 3))).sqrt().tolist()
    write_meta(folder, count, cfg["shard_size"], shape, names, raw_mean, raw_std, {"vae": cfg["vae"]})
    return {"num_images": count, "latent_shape": shape, "raw_mean": raw_mean, "raw_std": raw_std,
            "shards": len(list(folder.glob("shard-*.safetensors")))}


def latent_training_data(stage: Stage, data: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The train stage's training set with its latents: the shards and each training row's pool row."""
    from ambient_bench.engine.stages import load_mixed

    shards = LatentShards(ctx.dir(stage.deps["latents"]) / "shards")
    pool_index = load_mixed(stage.deps["latents"].deps["mix"], ctx).index
    if data.get("pool_rows") is not None:
        rows = data["pool_rows"]
    else:  # the annotate stage kept rows in pool order: match them by dataset index, in order
        keep_rows, cursor, wanted = [], 0, data["index"].tolist()
        for row, value in enumerate(pool_index.tolist()):
            if cursor < len(wanted) and value == wanted[cursor]:
                keep_rows.append(row)
                cursor += 1
        rows = torch.tensor(keep_rows)
    return {**data, "latents": shards, "latent_rows": rows, "images": None}


def run_reconstruct(stage: Stage, out: Path, ctx: Any) -> dict[str, Any]:
    from ambient_bench.training.loop import NETWORK
    from ambient_bench.training.phema import reconstruct

    train_dir = ctx.dir(stage.deps["train"])
    snapshots = []
    for path in sorted(train_dir.glob("phema-*.pt")):
        saved = fileio.torch_load(path)
        snapshots += [(saved["step"], rel, state) for rel, state in zip(saved["sigma_rels"], saved["averages"])]
    if not snapshots:
        from ambient_bench.errors import UserError

        raise UserError("sample.ema_sigma_rel needs a network trained with train.ema_sigma_rels (the power EMA)")
    record = fileio.torch_load(train_dir / NETWORK)
    sigma_rel = stage.runtime["sigma_rel"]
    record["ema"] = reconstruct(snapshots, sigma_rel)
    record["ema_sigma_rel"] = sigma_rel
    fileio.torch_save(out / NETWORK, record)
    return {"sigma_rel": sigma_rel, "profiles_used": len(snapshots)}


def latent_decoder(stage: Stage, ctx: Any, device: torch.device) -> Any:
    """For a sample stage of a latent cell: model-space latents → uint8 images (None in pixel space)."""
    latent_stage = stage.deps.get("latents")
    if latent_stage is None:
        return None
    meta = json.loads((ctx.dir(latent_stage) / "shards" / META).read_text())
    cfg = latent_stage.runtime["latent"]
    vae = load_vae(cfg["vae"], cfg["weights"]).to(device)
    raw_mean, raw_std = torch.tensor(meta["raw_mean"]), torch.tensor(meta["raw_std"])
    return lambda x: torch.cat([decode(vae, x[i:i + cfg["batch"]], raw_mean, raw_std)
                                for i in range(0, len(x), cfg["batch"])])
