"""Forward FLOPs per image of the networks `plan` scales compute by (ambient_bench/engine/throughput.yaml).

    python benchmarks/perf/count_flops.py          # a few seconds on CPU; nothing is downloaded

torch.utils.flop_counter.FlopCounterMode at batch 1 on the meta device (no weights, no memory): it
counts matrix multiplies and convolutions, 2 FLOPs per multiply-add. The feature networks of the
metrics, the CLIP-IQA scorer and the VAE are built from their architectures alone:
- Inception-v3 (torchvision's; torch-fidelity's TF-1 port has the same layers) at 299²;
- DINOv2 ViT-L/14 (timm, as metrics/fd_dinov2.py builds it) at 224²;
- CLIP RN50's image tower (piq, CLIP-IQA's) at 224²; other sizes scale with the pixel count;
- SD-VAE (stabilityai/sd-vae-ft-mse's architecture, diffusers) encoder and decoder at 512².
Our own networks (DDPM++, the classifier, EDM2) are counted by `plan` itself (ambient_bench/engine/flops.py).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def gflops(net: torch.nn.Module, *inputs: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*inputs)
    return counter.get_total_flops() / 1e9


def image(side: int, channels: int = 3) -> torch.Tensor:
    return torch.zeros(1, channels, side, side, device="meta")


def main() -> None:
    import timm
    import torchvision
    from diffusers import AutoencoderKL
    from piq.feature_extractors.clip import ModifiedResNet

    from ambient_bench.metrics.fd_dinov2 import timm_vit

    with torch.device("meta"):
        inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        clip = ModifiedResNet(layers=(3, 4, 6, 3), output_dim=1024, heads=32, input_resolution=224, width=64)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                            layers_per_block=2, latent_channels=4, sample_size=512)
    del timm  # imported first: a missing timm fails here, not inside timm_vit
    rows = {
        "inception_v3_299": gflops(inception, image(299)),
        "dinov2_vitl14_224": gflops(timm_vit("vitl14").eval(), image(224)),
        "clip_rn50_224": gflops(clip, image(224)),
        "sd_vae_encoder_512": gflops(lambda x: vae.encode(x), image(512)),
        "sd_vae_decoder_512": gflops(lambda z: vae.decode(z), image(64, 4)),
    }
    for name, value in rows.items():
        print(f"{name}: {value:.2f} GFLOP per image (forward, batch 1)")


if __name__ == "__main__":
    main()
