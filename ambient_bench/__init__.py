"""ambient_bench: can my bad data make my diffusion model better?

The public plugin API: subclass a component base, declare ``params``, register it.

The names below are imported on first use (PEP 562): the component bases import torch, and
``python -m ambient_bench --help`` (or ``plan`` of a suite) should not pay for it up front.
``from ambient_bench import Method, register_method`` works as before.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_COMPONENTS = ("Annotation", "AnnotationContext", "Annotator", "ClassifierRequest", "Corruption", "Dataset",
               "ImageSet", "Method", "Metric", "MixedData", "Objective", "Slot", "TrainBatch", "View")
_REGISTRY = ("ANNOTATORS", "CORRUPTIONS", "DATASETS", "METHODS", "METRICS", "OBJECTIVES", "VIEWS",
             "register_annotator", "register_corruption", "register_dataset", "register_method",
             "register_metric", "register_objective", "register_view")
_HOME = {**{name: "ambient_bench.components" for name in _COMPONENTS},
         **{name: "ambient_bench.registry" for name in _REGISTRY},
         "Param": "ambient_bench.params", "UserError": "ambient_bench.errors"}

__all__ = [*_COMPONENTS, *_REGISTRY, "Param", "UserError"]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from ambient_bench.components import (Annotation, AnnotationContext, Annotator, ClassifierRequest,  # noqa: F401
                                          Corruption, Dataset, ImageSet, Method, Metric, MixedData, Objective,
                                          Slot, TrainBatch, View)
    from ambient_bench.errors import UserError  # noqa: F401
    from ambient_bench.params import Param  # noqa: F401
    from ambient_bench.registry import (ANNOTATORS, CORRUPTIONS, DATASETS, METHODS, METRICS,  # noqa: F401
                                        OBJECTIVES, VIEWS, register_annotator, register_corruption,
                                        register_dataset, register_method, register_metric, register_objective,
                                        register_view)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'ambient_bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
