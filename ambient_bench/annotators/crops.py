"""sigma_max of out-of-distribution samples from crops classifiers (paper §3.2, Table 2(b)).

For every crop size K a classifier learns "target distribution vs out-of-distribution" on
zero-padded K×K windows; each OOD image's tiles are scored at sigma = 0.001 and the largest K
whose mean P(target) exceeds the threshold sets sigma_max = table[K].
"""
from __future__ import annotations

import numpy as np
import torch

from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION, load_classifier
from ambient_bench.annotation.crops import (PAPER_CROP_SIZES_64, choose_sigma_max, scaled_crop_sizes, scaled_table,
                                            tile_origins, tile_probabilities)
from ambient_bench.annotators.quality import sigma_table_problem
from ambient_bench.components import (Annotation, AnnotationContext, Annotator, ClassifierRequest, MixedData,
                                      PoolSize)
from ambient_bench.data.images import uint8_to_model
from ambient_bench.params import Param
from ambient_bench.registry import register_annotator
from ambient_bench.seeding import torch_generator
from ambient_bench.training.loop import resolve_device


def crop_classifier_name(size: int) -> str:
    return f"crops{size}"


@register_annotator("crops")
class CropsSigmaMax(Annotator):
    """OOD samples used below a per-image sigma_max: the largest crop still judged in-distribution."""

    version = 1
    role = "ood"
    params = {
        "crop_sizes": Param(None, "crop sizes with a classifier each (null = the paper's 4/8/16/24 at 64 px, "
                                  "scaled to the resolution)", kind=list, item=int, nullable=True),
        "crop_sigma_table": Param(None, "crop size → sigma_max (null = the official 64 px table scaled to the "
                                        "resolution; benchmarks/tools/context_probe.py measures one)",
                                  kind=dict, nullable=True, check=sigma_table_problem),
        "crops_threshold": Param(0.25, "K* = largest crop size whose mean P(target) over tiles exceeds this",
                                 gt=0, lt=1),
        "crops_classifier": Param({}, "crops classifiers: architecture and training recipe",
                                  kind=CLASSIFIER_SECTION),
    }
    test_params = {"crop_sizes": [2, 4], "crops_classifier": {"duration_kimg": 0.032, "batch": 16,
                                                              "model_channels": 8}}

    def _sizes(self, resolution: int | None) -> list[int]:
        if self.p.crop_sizes is not None:
            return sorted(set(self.p.crop_sizes))
        if resolution is None:
            raise ValueError("crops annotation needs crop_sizes when the dataset declares no resolution")
        return scaled_crop_sizes(resolution, PAPER_CROP_SIZES_64)

    def classifiers(self, resolution: int | None) -> dict[str, ClassifierRequest]:
        return {crop_classifier_name(size): ClassifierRequest("target_vs_ood", self.p.crops_classifier, crop_size=size)
                for size in self._sizes(resolution)}

    def annotation_work(self, pool: PoolSize) -> dict[str, float]:
        if pool.resolution is None:
            return {}
        # every tile of every OOD image, once per crop size (alone on a full-size canvas: a full-size input)
        return {"classifier_inputs": pool.ood * sum(len(tile_origins(pool.resolution, k))
                                                    for k in self._sizes(pool.resolution))}

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        from ambient_bench.annotation.figures import plot_patch_probabilities

        if ctx is None:
            raise ValueError("crops annotation needs the harness's AnnotationContext")
        resolution = data.images.shape[-1]
        sizes = self._sizes(resolution)
        table = self.p.crop_sigma_table or scaled_table(resolution)
        device = resolve_device(ctx.device)
        ood = torch.nonzero(data.ood).flatten()
        images = uint8_to_model(data.images[ood]).to(device)
        means: dict[int, np.ndarray] = {}
        for size in sizes:
            classifier = load_classifier(ctx.classifiers[crop_classifier_name(size)], device)
            probs = tile_probabilities(classifier, images, size, torch_generator("crops-annotate", size, device=device))
            means[size] = probs.mean(dim=1).double().numpy()
            column = torch.full((len(data.index),), float("nan"), dtype=torch.float64)
            column[ood] = torch.from_numpy(means[size])
            ann.columns[f"p_target_crop{size}"] = column
            if len(ood):
                rows = len(range(0, resolution, size))
                plot_patch_probabilities(ctx.workdir / f"patch_probabilities_crop{size}.png", data.images[ood[0]],
                                         probs[0].reshape(rows, rows).numpy(), size,
                                         title=f"OOD image {int(data.index[ood[0]])}, {size}×{size} crops")
        ann.sigma_min[ood] = float("inf")
        if len(ood):
            ann.sigma_max[ood] = torch.from_numpy(choose_sigma_max(means, table, self.p.crops_threshold)).to(
                ann.sigma_max.dtype)
            ann.keep[ood] = True
        ann.summary.update({"crop_sizes": sizes, "crop_sigma_table": {str(k): v for k, v in table.items()},
                            "crops_threshold": self.p.crops_threshold, "tiles_per_crop":
                                {str(k): len(tile_origins(resolution, k)) for k in sizes}})
