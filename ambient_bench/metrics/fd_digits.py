"""Fréchet distance in the feature space of a digit classifier (the usual "MNIST FID").

This is *not* FID: the features come from a small CNN trained on the clean reference digits,
not from Inception. Features come from torch-fidelity's feature-extractor registry and
the number from torch-fidelity's statistics and Fréchet formula; reference features are cached
under the content hashes of the reference images and of the classifier weights, so changed
data or weights never hit a stale cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ambient_bench import fileio
from ambient_bench.components import ImageSet, Metric
from ambient_bench.data.images import uint8_to_model
from ambient_bench.metrics import features
from ambient_bench.params import Param
from ambient_bench.progress import bar
from ambient_bench.registry import register_metric
from ambient_bench.seeding import numpy_rng, seed_for

EXTRACTOR = "digits-cnn"
LAYER = "penultimate"
BATCH = 256  # images per extractor pass (torch-fidelity's calculate_metrics used the same)
CLASSIFIER = "classifier.pt"


class DigitClassifier(nn.Module):
    def __init__(self, channels: int, feature_dim: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


class DigitFeatureExtractor(features.Extractor):
    """torch-fidelity adapter: uint8 N×C×H×W → (penultimate features, logits)."""

    layers, isc_layer, dummy_shape = ("penultimate", "logits"), "logits", (1, 16, 16)
    takes_grey = True  # grey samples of a grey dataset as they are; RGB ones are averaged in forward

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{EXTRACTOR} needs feature_extractor_weights_path (the trained classifier)")
        saved = fileio.torch_load(Path(feature_extractor_weights_path))
        self.resolution, self.channels = saved["resolution"], saved["channels"]
        self.net = DigitClassifier(self.channels, saved["feature_dim"])
        self.net.load_state_dict(saved["state"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = uint8_to_model(x)
        if x.shape[1] != self.channels:  # RGB samples of a grey dataset: compare luminance
            x = x.mean(dim=1, keepdim=True).expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              antialias=True, align_corners=False)
        features, logits = self.net(x)
        by_name = {"penultimate": features, "logits": logits}
        return tuple(by_name[name] for name in self.features_list)


features.register_extractor(EXTRACTOR, DigitFeatureExtractor)


@register_metric("fd_digits")
class FDDigits(Metric):
    """Fréchet distance on the 128-d features of a CNN trained on the clean reference digits."""

    version = 1
    params = {
        "epochs": Param(30, "training epochs of the feature classifier", kind=int, ge=1),
        "feature_dim": Param(128, "width of the penultimate (feature) layer", kind=int, ge=8),
        "seed": Param(0, "seed of the classifier's initialisation and batches", kind=int, ge=0),
        "bootstrap": Param(0, features.BOOTSTRAP_HELP, kind=int, ge=0, omit_default=True),
    }
    test_params = {"epochs": 2}

    def setup(self, reference: ImageSet, workdir: Path) -> dict[str, Any]:
        if reference.labels is None:
            raise ValueError("fd_digits needs a labelled reference dataset to train its classifier")
        torch.manual_seed(seed_for("fd-digits-init", self.p.seed))
        channels, resolution = reference.images.shape[1], reference.images.shape[-1]
        net = DigitClassifier(channels, self.p.feature_dim)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = uint8_to_model(reference.images), reference.labels
        for epoch in bar(range(self.p.epochs), desc="fd_digits classifier", unit="epoch"):
            order = torch.from_numpy(numpy_rng("fd-digits-epoch", self.p.seed, epoch).permutation(len(x)))
            for start in range(0, len(x), 64):
                idx = order[start:start + 64]
                loss = F.cross_entropy(net(x[idx])[1], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            accuracy = (net.eval()(x)[1].argmax(1) == y).float().mean().item()
        fileio.torch_save(workdir / CLASSIFIER, {"state": net.state_dict(), "channels": channels,
                                                 "resolution": resolution, "feature_dim": self.p.feature_dim})
        return {"train_accuracy": accuracy, "num_reference": len(x)}

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

        weights = str(setup_dir / CLASSIFIER)
        # features.extract rather than torch_fidelity.calculate_metrics: the same extractor through
        # torch-fidelity's registry and the same batches, but split across ranks under torchrun, and
        # the reference cached by content (torch-fidelity's own cache would load a pickle unguarded)
        ref, _ = features.reference_features(reference, cache_dir, EXTRACTOR, LAYER, torch.device("cpu"), BATCH,
                                             identity={"weights_sha256": features.file_sha256(Path(weights))},
                                             feature_extractor_weights_path=weights)
        gen = features.extract(samples, EXTRACTOR, LAYER, torch.device("cpu"), BATCH,
                               feature_extractor_weights_path=weights)
        # float32 features into torch-fidelity's statistics, exactly as calculate_metrics hands them
        stats = [fid_features_to_statistics(torch.from_numpy(f.astype("float32"))) for f in (gen, ref)]
        value = float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])
        return features.with_bootstrap("fd_digits", value, gen, lambda g: features.frechet_distance(g, ref),
                                       self.p.bootstrap)

    def protocol(self) -> dict[str, Any]:
        protocol = {"feature_extractor": f"{EXTRACTOR}: {self.p.feature_dim}-d penultimate layer of a 3-conv CNN "
                                         f"trained on all clean reference images (not Inception)",
                    "implementation": f"torch-fidelity {features.torch_fidelity_version()}"}
        return features.bootstrap_note(protocol, self.p.bootstrap)
