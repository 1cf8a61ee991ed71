"""Random-weight stand-ins for the pretrained feature networks, for offline end-to-end tests.

Files of the right architecture and key layout placed where the metrics look for them
($TORCH_HOME/hub/checkpoints): the pipelines load and run them, but the numbers they give are
NOT FID or FD_DINOv2 (loading checks only); nothing computed with them is ever committed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ambient_bench.metrics import fd_dinov2, inception


def random_inception_state() -> dict[str, torch.Tensor]:
    """State dict of torch-fidelity's InceptionV3 with random init: no download, no loading."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe_module, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(fe_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = fe_module.FeatureExtractorInceptionV3(inception.EXTRACTOR, [inception.LAYER])
    return model.state_dict()


def write_random_weights(torch_home: Path) -> Path:
    """Random Inception (FID, KID) and DINOv2 ViT-S/14 (FD_DINOv2 at the tiny profile) weights under
    ``torch_home``; returns the checkpoint folder."""
    from test_metrics_dinov2 import original_state_dict

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(random_inception_state(), folder / inception.WEIGHTS_FILE)
    torch.save(original_state_dict(), folder / fd_dinov2.checkpoint_name("vits14"))
    return folder
