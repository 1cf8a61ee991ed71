"""ambient_bench: can my bad data make my diffusion model better?

The public plugin API: subclass a component base, declare ``params``, register it.
"""
from ambient_bench.components import (Annotation, AnnotationContext, Annotator, ClassifierRequest, Corruption,
                                      Dataset, ImageSet, Method, Metric, MixedData, Objective, Slot, TrainBatch, View)
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import (ANNOTATORS, CORRUPTIONS, DATASETS, METHODS, METRICS, OBJECTIVES, VIEWS,
                                    register_annotator, register_corruption, register_dataset, register_method,
                                    register_metric, register_objective, register_view)

__version__ = "0.1.0"

__all__ = [
    "Annotation", "AnnotationContext", "Annotator", "ClassifierRequest", "Corruption", "Dataset", "ImageSet",
    "Method", "Metric", "MixedData", "Objective", "Param", "Slot", "TrainBatch", "View",
    "UserError", "ANNOTATORS", "CORRUPTIONS", "DATASETS", "METHODS", "METRICS", "OBJECTIVES", "register_annotator",
    "register_corruption", "register_dataset", "register_method", "register_metric", "register_objective",
    "register_view", "VIEWS",
]
