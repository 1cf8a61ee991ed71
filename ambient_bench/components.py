"""The plugin API: base classes for the four kinds of registered component.

Data flows through them as follows (one suite cell)::

    Dataset.load() ─► ImageSet ─► mixing (per-image coin, Corruption.apply) ─► MixedData
        ─► Method.annotate() ─► Annotation ─► training ─► samples ─► Metric.compute()

Image conventions: datasets and samples are uint8 N×C×H×W (like PNG files); corruptions see
float32 in [0, 1]; the diffusion model sees float32 in [-1, 1] (x / 127.5 - 1).
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from ambient_bench.recipes import Recipe, Slot  # noqa: F401  (Slot: part of the plugin API)
from ambient_bench.registry import Component


# Where an image comes from (ImageSet.source): a dataset of the user's own data can say which
# images are good, which are bad in an unknown way, and which are out of distribution.
HIGH_QUALITY, LOW_QUALITY, OUT_OF_DISTRIBUTION = 0, 1, 2


@dataclass
class ImageSet:
    """A dataset in memory: uint8 images N×C×H×W, optional integer labels and sources."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    source: torch.Tensor | None = None  # int8 per image (HIGH_QUALITY, ...); None = all high quality

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSet needs uint8 N×C×H×W images, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        # loaders often build images from H×W×C arrays; NCHW-contiguous memory keeps every
        # batched corruption and network on its fast path
        self.images = self.images.contiguous()
        for name in ("labels", "source"):
            value = getattr(self, name)
            if value is not None and value.shape != (len(self.images),):
                raise ValueError(f"ImageSet.{name} needs one entry per image, got shape {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def high_quality(self) -> "ImageSet":
        """The images marked high quality (all of them when the dataset has no sources):
        the clean reference that metrics compare samples with."""
        if self.source is None:
            return self
        keep = self.source == HIGH_QUALITY
        return ImageSet(self.images[keep], None if self.labels is None else self.labels[keep], self.source[keep])

    def content_hash(self) -> str:
        """sha256 of shape and pixels: identifies the data itself, whatever produced it.

        Remembered per image tensor (image sets are not modified in place): metrics key their
        reference caches by it, and hashing a large reference on every evaluation adds up.
        """
        memo = getattr(self, "_content_hash", None)
        if memo is not None and memo[0] is self.images:
            return memo[1]
        digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        self._content_hash = (self.images, digest.hexdigest())
        return self._content_hash[1]


@dataclass
class MixedData:
    """A training pool: the dataset after the clean/corrupted coin flip, then the
    out-of-distribution sources, in that order."""

    images: torch.Tensor      # uint8 N×C×H×W: the clean or the corrupted version of each image
    corrupted: torch.Tensor   # bool N: low quality (the coin chose a corruption, or the data said so)
    ood: torch.Tensor         # bool N: from an out-of-distribution source
    noise: torch.Tensor       # float32 N×C×H×W: fixed Gaussian draw Z_i of each image
    index: torch.Tensor       # int64 N: position in the pool (dataset first, then each OOD source)
    corruption: torch.Tensor  # int8 N: which listed corruption was applied (-1: none)
    labels: torch.Tensor | None = None  # int64 N: the dataset's class labels (-1: none, e.g. OOD); None: unlabelled


@dataclass
class Annotation:
    """Which samples a method trains on, and at which noise levels.

    Sample i is admissible at noise level sigma when
    ``sigma > buffer * sigma_min[i]`` (high-noise use of low-quality data; the buffer b >= 1 is
    the objective's, ``Objective.buffer``) or ``sigma < sigma_max[i]`` (low-noise use of
    out-of-distribution data). Clean samples have sigma_min = 0 and are admissible everywhere.
    """

    keep: torch.Tensor       # bool N: the sample enters the training set at all
    sigma_min: torch.Tensor  # float32 N
    sigma_max: torch.Tensor  # float32 N
    # per-sample diagnostics written beside the annotation table (e.g. classifier crossings)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    # the data view: per-sample tensors (N×...) the objective reads besides the pixels (e.g. masks)
    view: dict[str, torch.Tensor] = field(default_factory=dict)
    # scalars for the stage summary (e.g. number of samples whose classifier curve never crossed)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassifierRequest:
    """A classifier a method needs trained before it annotates; the harness trains and caches it.

    ``pool`` says which images it learns from:
    ``balanced``: the dataset with a 50/50 clean/corrupted coin (same coin and corruption as the
    training pool; paper §2.4), label 1 = corrupted;
    ``diffusion``: the training pool itself without OOD images (paper App. D), label 1 = corrupted;
    ``target_vs_ood``: every dataset image clean plus the OOD sources, label 1 = in distribution.
    """

    pool: str
    config: dict[str, Any]         # the classifier's network and training recipe
    crop_size: int | None = None   # train on zero-padded crop_size×crop_size windows


@dataclass(frozen=True)
class PoolSize:
    """Expected image counts of a training pool, for compute estimates (``plan``)."""

    images: int        # pool images (dataset images kept, plus out-of-distribution ones)
    low_quality: int   # expected number the coin corrupts
    ood: int           # out-of-distribution images
    resolution: int | None


@dataclass
class AnnotationContext:
    """What the harness hands a method at annotation time."""

    workdir: Path                  # the annotate stage's folder: figures and extra files go here
    classifiers: dict[str, Path]   # request name → trained classifier file
    device: str = "auto"
    # request name → the classifier stage's held-out measurement (classifier_quality.measure)
    classifier_quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the mix's corruptions, resolved specs in the order of MixedData.corruption's ids, and its seed
    corruptions: list[dict[str, Any]] = field(default_factory=list)
    mix_seed: int = 0


class Dataset(Component):
    """Source of clean images.

    Stage keys identify a dataset by ``spec()`` (name, version, semantic parameters) plus
    ``fingerprint()``. Where the files live is not semantic, so the same parameters can point
    at the real data or at synthetic stand-ins (``ambient_bench.datasets.standins``): stand-in
    data must never share a stage key with real data, which is what ``fingerprint()`` is for.
    """

    kind = "dataset"
    # True when load() itself marks images as high/low quality or out of distribution
    # (``ImageSet.source``): suites then keep every high-quality image clean.
    provides_sources: ClassVar[bool] = False

    def check(self) -> None:
        """Raise ``UserError`` if the data cannot be loaded (a missing file or folder).

        Called by ``plan`` and ``run`` before anything runs, so it must be cheap: look for the
        files, do not read them. The message names what is expected, where it comes from
        (a URL) and where to put it.
        """

    def count(self) -> int | None:
        """The number of images ``load()`` returns, found without decoding images; None = unknown.

        Called by ``plan`` to estimate compute, so it must be cheap (list files, read labels).
        Missing files raise the same ``UserError`` as ``check()``.
        """
        return None

    def nominal_count(self) -> int | None:
        """The number of images ``load()`` returns on the real, published data (its official size,
        ``limit`` applied), for ``plan``'s estimate when the files on disk are stand-ins; None = not
        known (``plan`` then counts the files). Reads nothing."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data on disk beyond the parameters ({} = nothing); enters stage keys.

        File-based datasets of the paper return ``{"standin": <marker hash>}`` when their data
        root holds synthetic stand-ins, and {} for real data (so the keys of real data do not
        change). Must be cheap: it is computed whenever a key is.
        """
        return {}

    @abstractmethod
    def load(self) -> ImageSet:
        """All images of the dataset, in a fixed order."""

    def reader(self) -> "ImageReader | None":
        """The images one at a time, in ``load()``'s order and bit-identical to it, read from disk on
        demand; None when the dataset only loads whole (generated or small data). Datasets larger
        than the in-memory limit are streamed through it (``ambient_bench.data.pool``)."""
        return None


class ImageReader(torch.utils.data.Dataset, ABC):
    """Per-image access to a dataset on disk: ``reader[i]`` is image i as uint8 C×H×W.

    A ``torch.utils.data.Dataset``, so DataLoader workers read in parallel; it must pickle (open
    files lazily, per process). ``labels`` and ``source`` are as in ``ImageSet``, known without
    decoding any image.
    """

    shape: tuple[int, int, int]             # C, H, W of every image
    labels: torch.Tensor | None = None
    source: torch.Tensor | None = None

    @abstractmethod
    def __len__(self) -> int:
        """The number of images."""

    @abstractmethod
    def __getitem__(self, i: int) -> torch.Tensor:
        """Image i, uint8 C×H×W."""


class Corruption(Component):
    """A degradation applied to a batch of images."""

    kind = "corruption"
    random: ClassVar[bool] = False  # True: the output depends on the per-image generators
    # Parameter settings shown as rows by `python -m ambient_bench show corruptions`,
    # weakest first (the paper's strengths where it used the corruption).
    gallery: ClassVar[list[dict[str, Any]]] = []

    @abstractmethod
    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """Corrupt ``x`` (float32 N×C×H×W in [0, 1]); ``rngs[i]`` is image i's own generator."""

    def dropped(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray | None:
        """H×W bool: the pixels ``apply`` removes from the image whose generator is ``rng`` (a fresh one,
        seeded as ``apply``'s was), for methods that train on the observed pixels only; None for a
        corruption that removes no pixels."""
        return None


class Annotator(Component):
    """Decides at which noise levels one kind of sample is used: low-quality images (their
    sigma_min) or out-of-distribution ones (their sigma_max). A recipe method runs its annotators
    in turn on one ``Annotation``."""

    kind = "annotator"
    role: ClassVar[str] = "low_quality"  # or "ood"

    def check(self) -> None:
        """Raise ``UserError`` if something needed is missing (e.g. scorer weights); called by ``plan``."""

    def classifiers(self, resolution: int | None) -> dict[str, ClassifierRequest]:
        """Classifiers to train before ``annotate`` (name → request), as ``Method.classifiers``."""
        return {}

    def annotation_work(self, pool: "PoolSize") -> dict[str, float]:
        """What ``annotate`` computes, for ``plan``'s estimate (as ``Method.annotation_work``)."""
        return {}

    @abstractmethod
    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        """Set ``ann``'s sigma_min / sigma_max / keep (and columns, summary) for the samples of its role."""


class View(Component):
    """A known linear view of the data whose own diffusion model a composite score reuses
    (Bootstrapping Diffusion's partial data): f×f average pooling, disjoint crops. The view model
    trains in its own stage on every in-distribution pool image's views; ``spec()`` is that stage's
    key (and what the written network records to rebuild its operators)."""

    kind = "view"

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """What the view stage reads of this view, e.g. ``{"factor": 2}``."""

    def describe(self) -> str:
        return self.name

    def label_dim(self) -> int:
        """Classes the view model is conditioned on (a crop's position); 0 = unconditional."""
        return 0

    @abstractmethod
    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        """Raise ``UserError`` unless every low-quality image of the mix is this view of a full image."""

    @abstractmethod
    def training_set(self, data: MixedData, corruptions: list[dict[str, Any]], mix_seed: int) -> dict[str, Any]:
        """The view model's training images (uint8 N×C×h×w) and ``labels`` (None or the class per image)."""


class Method(Recipe, Component):
    """A training method: a recipe of how it uses clean and corrupted samples (``annotate``), the
    training objective, and how the trained network samples.

    ``slots`` name the components the recipe delegates to (every method has an ``objective``);
    a suite chooses each by name and sets the chosen one's parameters beside the method's own.
    Keys: the annotate stage's key holds the method without its objective, the train stage's
    holds the objective (name, version, parameters), so each change reruns exactly what reads it.
    """

    kind = "method"
    slots: ClassVar[dict[str, Slot]] = {
        "objective": Slot("objective", "edm", "training loss (list objective)")}
    # False when the method never looks at corrupted or out-of-distribution images: its pool
    # is then the clean images alone, shared by every corruption level and OOD source of a suite.
    uses_bad_data: ClassVar[bool] = True
    # the corruption of the contract test's low-quality images (a method may need a particular kind)
    test_corruption: ClassVar[dict[str, Any]] = {"name": "gaussian_blur", "sigma": 1.0}

    def annotators(self) -> list["Annotator"]:
        """The recipe's annotators, in slot order (low-quality samples first, then OOD ones)."""
        return [c for c in self.components.values() if isinstance(c, Annotator)]

    def check(self) -> None:
        """Raise ``UserError`` if something the method will need is missing (e.g. scorer weights).

        Called by ``plan`` and ``run`` before anything runs.
        """
        for annotator in self.annotators():
            annotator.check()

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        """Raise ``UserError`` if the method cannot use the mix's corruptions (resolved specs), e.g. one that
        needs a known noise level given a blur. Called by ``plan`` and ``run`` before anything runs."""

    def classifiers(self, resolution: int | None) -> dict[str, ClassifierRequest]:
        """Classifiers to train before ``annotate`` (name → request); ``resolution`` is the
        dataset's, when it declares one."""
        return {name: request for annotator in self.annotators()
                for name, request in annotator.classifiers(resolution).items()}

    def pretraining(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(method spec, train overrides) when the method fine-tunes another method's model.

        The harness then trains the other method first, with the cell's network and train
        sections (the same stage, hence the same cached model, as that method's own cell), and
        trains this method from it with the train section updated by the overrides (e.g. a
        shorter ``duration_kimg``). None: train from scratch.
        """
        return None

    def annotation_work(self, pool: PoolSize) -> dict[str, float]:
        """What ``annotate`` computes for a pool of this size, for ``plan``'s estimate:
        ``{"classifier_inputs": n}`` (classifier forward passes, one input each); {} = nothing notable."""
        work: dict[str, float] = {}
        for annotator in self.annotators():
            for name, value in annotator.annotation_work(pool).items():
                work[name] = work.get(name, 0) + value
        return work

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        """Decide per sample whether and at which noise levels it is used.

        The default runs the recipe's annotators in turn on an annotation that keeps every sample
        at every level. ``ctx`` is None only for methods that request no classifiers and write no files."""
        n = len(data.index)
        ann = Annotation(keep=torch.ones(n, dtype=torch.bool), sigma_min=torch.zeros(n, dtype=torch.float64),
                         sigma_max=torch.zeros(n, dtype=torch.float64))
        for annotator in self.annotators():
            annotator.annotate(data, ann, ctx)
        ann.sigma_min, ann.sigma_max = ann.sigma_min.float(), ann.sigma_max.float()
        ann.summary.update({slot: self.values[slot] for slot, s in self.slots.items() if s.kind == "annotator"})
        return ann

    def sampler(self, annotation: Annotation) -> dict[str, Any] | None:
        """How the trained network samples: None = EDM's Heun sampler on the plain network."""
        return None

    def view_models(self) -> list[dict[str, Any]]:
        """Frozen models of views of the data the objective composes (``{"factor": f}``: f×f average
        pooling of every in-distribution pool image); each trains in its own stage. [] = none."""
        return []


@dataclass
class TrainBatch:
    """What a training objective sees of one step's batch (this rank's slice of it)."""

    x0: torch.Tensor         # model-space images as stored: clean, or the corrupted observation
    z: torch.Tensor          # the fixed Gaussian draw Z_i of each image
    sigma: torch.Tensor      # float64 [N] (CPU): the training noise level of each sample
    sigma_min: torch.Tensor  # float64 [N] (CPU): its annotation (0 = clean; a known noise level for Tweedie)
    eps: torch.Tensor        # fresh N(0, I) noise of this step
    sigma_data: float = 0.5
    view: dict[str, torch.Tensor] = field(default_factory=dict)  # the annotation's per-sample tensors
    # the EMA network as a denoiser without gradient (teacher(x, sigma, rows=None)), for objectives that
    # bootstrap from the model's own predictions; None outside the training loop
    teacher: Callable[..., torch.Tensor] | None = None
    # frozen auxiliary models the method trained first (``views``: (operator, denoiser) pairs)
    aux: dict[str, Any] = field(default_factory=dict)


class Objective(Component):
    """A training loss: the per-sample loss of a batch, in the manner of EDM's ``loss.py``."""

    kind = "objective"
    # False for a target variant that differs from EDM's loss even on clean, whole samples (bsm, ...)
    edm_on_clean: ClassVar[bool] = True

    @abstractmethod
    def loss(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             batch: TrainBatch) -> torch.Tensor:
        """Per-sample loss [N] (summed over pixels); ``denoiser(x, sigma)`` predicts x0. An objective that
        evaluates other inputs too passes ``rows`` (int [M]): the batch sample each row of x stands for, so
        the network sees that sample's labels; one call per step keeps distributed training simple."""

    def buffer(self) -> float:
        """b >= 1: a sample annotated sigma_min is used only at sigma > b·sigma_min (1 = no buffer)."""
        return 1.0

    def input_channels(self, channels: int) -> int:
        """Channels of the network's input (and output) for images of ``channels`` (a mask-conditioned
        objective feeds its masks beside the pixels)."""
        return channels


class Metric(Component):
    """A sample-quality metric computed against a clean reference dataset."""

    kind = "metric"
    higher_is_better: ClassVar[bool] = False

    def check(self) -> None:
        """Raise ``UserError`` if something the metric needs is missing (e.g. pretrained weights).

        Called by ``plan`` and ``run`` before anything runs, so a missing file stops a suite
        before its training, not after it.
        """

    def setup(self, reference: ImageSet, workdir: Path) -> dict[str, Any]:
        """One-off preparation per reference dataset (e.g. train a feature network).

        Files go to ``workdir``; the returned dict is stored as the setup's summary.
        """
        return {}

    @abstractmethod
    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        """Score uint8 ``samples``; reference statistics may be cached under ``cache_dir``.

        A metric with per-image scores may also define ``per_sample() -> dict[str, ndarray]``
        (scores of the last ``compute``): the evaluate stage stores them (``per_sample.npz``)
        for paired comparisons such as Table 5's win-rate.
        """

    def protocol(self) -> dict[str, Any]:
        """How the number is computed, for result rows and table footnotes."""
        return {}
