"""What several checks share: a CPU-sized DDPM++ from EDM's code with its weights copied into ours."""
from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.parity.peers import peer_import
from benchmarks.parity.transfer import ddpmpp_state_dict, load_exactly, randomize

# DDPM++ as EDM's train.py builds it, at a CPU size (EDM's own code at every other setting)
SMALL_DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                    decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=32,
                    channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0, augment_dim=9)
SMALL_RES = 16


def small_ddpmpp_pair(edm_root: Path, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(EDM's EDMPrecond, ours) at SMALL_DDPMPP, random weights, the same in both; eval mode."""
    from ambient_bench.diffusion.edm import EDMPrecond
    from ambient_bench.diffusion.unet import UNet

    networks = peer_import(edm_root, "training.networks")
    torch.manual_seed(seed)
    theirs = networks.EDMPrecond(img_resolution=SMALL_RES, img_channels=3, label_dim=0, use_fp16=False,
                                 **SMALL_DDPMPP).eval()
    randomize(theirs, seed)
    ours = EDMPrecond(UNet(3, SMALL_RES, model_channels=32, channel_mult=[1, 2], num_blocks=1,
                           attn_resolutions=[8], dropout=0.0, augment_dim=9)).eval()
    load_exactly(ours.net, ddpmpp_state_dict(theirs.model))
    return theirs, ours
