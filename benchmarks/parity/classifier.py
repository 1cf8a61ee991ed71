"""The noise classifier's logits: the release's ``EDMPrecondCLS`` (pixel-diffusion/training/ambient_networks.py:
the DDPM++ encoder "SongHalfUNet", global average pooling, Linear(256, 1)) against ours
(``ambient_bench.annotation.classifier_net``), weights transferred, at the CIFAR-10 configuration the release's
train.py builds for ``--precond=edmcls --arch=ddpmpp`` (128 channels × [2, 2, 2], 4 blocks, attention at 16²,
dropout 0.13, 9 augment labels): max |Δlogit| over several σ, with and without augment labels.

    python benchmarks/parity/classifier.py --ambient-omni PATH
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import failed_row, parse_peers, peer_import, print_rows, row
from benchmarks.parity.transfer import half_unet_state_dict, load_exactly, randomize

NEEDS = ("ambient_omni",)
SIGMAS = (0.002, 0.1, 1.0, 10.0, 80.0)
BOUND = 1e-5
CIFAR_CLS = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
                 channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2],
                 dropout=0.13, augment_dim=9, num_classes=1)


def run(peers: dict[str, Path]) -> list[dict]:
    from ambient_bench.annotation.classifier_net import HalfUNet, NoiseConditionalClassifier

    rows = []
    try:
        networks = peer_import(peers["ambient_omni"] / "pixel-diffusion", "training.ambient_networks")
        torch.manual_seed(0)
        theirs = networks.EDMPrecondCLS(img_resolution=32, img_channels=3, label_dim=0, use_fp16=False,
                                        **CIFAR_CLS).eval()
        randomize(theirs, seed=4)
        ours = NoiseConditionalClassifier(HalfUNet(3, 32, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4,
                                                   attn_resolutions=[16], dropout=0.13, augment_dim=9)).eval()
        load_exactly(ours.net, half_unet_state_dict(theirs))
        g = torch.Generator().manual_seed(9)
        sigma = torch.tensor(SIGMAS).repeat_interleave(2)
        x = (torch.rand(len(sigma), 3, 32, 32, generator=g) * 2 - 1) + sigma.reshape(-1, 1, 1, 1) * \
            torch.randn(len(sigma), 3, 32, 32, generator=g)
        aug = 0.5 * torch.randn(len(sigma), 9, generator=g)
        with torch.no_grad():
            for labels, what in ((None, "no augment labels"), (aug, "augment labels")):
                kwargs = {} if labels is None else {"augment_labels": labels}
                logit_theirs = theirs(x, sigma, **kwargs)["cls_logits"].flatten()
                logit_ours = ours(x, sigma, labels)
                diff = (logit_theirs - logit_ours).abs()
                per = " ".join(f"{s:g}:{float(d):.1e}" for s, d in zip(SIGMAS, diff.reshape(-1, 2).max(1).values))
                rows.append(row(f"noise classifier CIFAR (19.6 M), {what}: max |Δlogit|", float(diff.max()), BOUND,
                                f"logits ±{float(logit_theirs.abs().max()):.2g}; per σ {per}"))
    except Exception as error:
        rows.append(failed_row("noise classifier", error))
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
