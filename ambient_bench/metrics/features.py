"""Features of image sets through torch-fidelity's extractor registry, with a content-keyed cache.

Every feature-based metric (FID, KID, precision/recall, FD-DINOv2, Vendi, memorisation) starts
from the same two arrays: features of the generated samples and features of the reference
images. The reference side is computed once per (reference content, extractor, weights,
layer) and stored under the run store's ``_refstats`` folder. torch-fidelity's own cache keys
by name only, so stale statistics of changed data or weights would be silently reused; ours
are keyed by content hashes.
"""
from __future__ import annotations

import math

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import sys

import numpy as np
import torch

from ambient_bench import fileio, records
from ambient_bench.chatter import STAGE_LOG, quiet
from ambient_bench.errors import UserError
from ambient_bench import distributed


def resolve_metric_device(name: str) -> torch.device:
    """auto → CUDA when present (torch-fidelity's own default is CUDA, even on machines without one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def require_file(path: Path, what: str, url: str, how: str = "", reason: str | None = None) -> Path:
    """``path`` if it exists; otherwise the one-line error naming the file, its source and place (and
    ``reason``: why it was not downloaded, see ambient_bench/weights.py)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: weights file not found: {path}; download {url} to that path{how}"
                        + (f"; {reason}" if reason else ""))
    return path


def file_sha256(path: Path) -> str:
    """sha256 of a (weights) file, remembered per (path, size, mtime, ctime, inode): every evaluate keys its
    reference cache by it, and re-reading a 1.2 GB checkpoint each time would dominate. The ctime and
    inode change with any rewrite or replacement, even one that restores the mtime."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    from ambient_bench import fileio

    return fileio.sha256_file(Path(path))


def require_safe_weights(path: Path) -> Path:
    """``path`` once it has loaded as tensors only (``weights_only``); a file that asks to run code, or
    is not a checkpoint, is a UserError naming it. For weights a library then loads without that
    guard (torch-fidelity's Inception). Remembered per (path, size, mtime, ctime, inode)."""
    stat = Path(path).stat()
    _check_safe(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return Path(path)


@functools.lru_cache(maxsize=8)
def _check_safe(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> None:
    from ambient_bench import fileio

    fileio.torch_load(Path(path), what="weights file", fix=fileio.WEIGHTS_FIX)


_LAST: dict[tuple, np.ndarray] = {}  # the last extraction: FID and KID of one sample set share it


@torch.no_grad()
def extract(images: torch.Tensor, extractor: str, layer: str, device: torch.device, batch: int = 256,
            **extractor_kwargs: Any) -> np.ndarray:
    """float64 N×D features of uint8 N×C×H×W ``images`` (grey images are repeated to RGB unless the
    extractor ``takes_grey``).

    The last result is remembered by the images' content and the extractor's identity, so metrics
    on the same features (fid, kid, precision, recall of one sample set) extract them once.
    """
    files = _file_identity(extractor_kwargs)
    kwargs = tuple(sorted(extractor_kwargs.items(), key=lambda kv: kv[0]))
    digest = hashlib.sha256(str(tuple(images.shape)).encode() + images.contiguous().cpu().numpy().tobytes())
    memo = (digest.hexdigest(), extractor, layer, str(device), files, kwargs)
    if memo in _LAST:
        return _LAST[memo]
    features = _extract(images, _extractor(extractor, layer, str(device), files, kwargs), device, batch)
    features.setflags(write=False)  # shared with the next caller: nobody may change it in place
    _LAST.clear()
    _LAST[memo] = features
    return features


def _extract(images: torch.Tensor, model: torch.nn.Module, device: torch.device, batch: int) -> np.ndarray:
    """Batch after batch; under torchrun the batches are split across the ranks (``split_map``)."""
    def one_batch(b: int) -> torch.Tensor:
        x = images[b * batch:(b + 1) * batch]
        if x.shape[1] == 1 and not getattr(model, "takes_grey", False):
            x = x.expand(-1, 3, -1, -1)
        return model(x.to(device))[0].double().cpu()

    out = distributed.split_map(one_batch, -(-len(images) // batch), what=f"features of {len(images)} images")
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def _file_identity(kwargs: dict[str, Any]) -> tuple:
    """(size, mtime, ctime, inode) of every file argument: a weights file replaced in place builds a new model."""
    files = [Path(v) for v in kwargs.values() if isinstance(v, (str, Path)) and Path(v).is_file()]
    stats = [(str(f), f.stat()) for f in files]
    return tuple((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for name, st in stats)


@functools.lru_cache(maxsize=4)
def _extractor(extractor: str, layer: str, device: str, files: tuple, kwargs: tuple) -> torch.nn.Module:
    """Built once per process: constructing Inception or a ViT and loading its weights costs
    seconds, more than extracting a few hundred images (a warm-cache evaluation)."""
    from torch_fidelity.utils import create_feature_extractor

    registry()  # our extractors, registered with torch-fidelity now that it is imported
    with quiet("torch-fidelity"):  # its "Creating feature extractor ..." line goes to the stage log
        model = create_feature_extractor(extractor, [layer], cuda=False, **dict(kwargs))
    return model.requires_grad_(False).eval().to(torch.device(device))


def cache_key(content_hash: str, extractor_id: dict[str, Any]) -> str:
    """Key of one reference's features: its content and everything that defines the extractor."""
    text = json.dumps({"content": content_hash, **extractor_id}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_features(cache_dir: Path, content_hash: str, extractor_id: dict[str, Any],
                    compute: Any) -> tuple[np.ndarray, bool]:
    """(features, hit): the cached array for this content and extractor, or ``compute()`` stored.

    ``extractor_id`` must name the extractor, layer, preprocessing, weights hash and image
    count; two references that differ in any of them never share an entry. The JSON beside each
    array records its size and sha256 (``records``, as a done marker does for stage outputs); an
    entry that does not match it (edited, cut short, a pickle, no record) is recomputed and
    replaced, with one line saying so, never served.
    """
    path = Path(cache_dir) / f"features-{cache_key(content_hash, extractor_id)}.npy"
    for entry in (path, path.with_suffix(".json")):
        _clear_non_file(entry)
    loaded, problem = _load_cached(path) if path.exists() or path.with_suffix(".json").exists() else (None, None)
    if distributed.agree(loaded is not None):  # every rank extracts (its share), or none does
        if loaded is None:  # rank 0 found it sound, this rank did not: a writer in between
            raise UserError(f"cached features {path}: {problem}; run again to recompute them")
        return loaded, True
    if problem and distributed.is_main():
        line = f"cached reference features: {problem}; recomputing them"
        print(line, file=sys.stderr, flush=True)
        STAGE_LOG.info(line)
    features = np.asarray(compute(), dtype=np.float64)
    if not distributed.is_main():
        return features, False
    written: list[list[Any]] = []  # the record of the very bytes written (another writer may replace them)
    fileio.atomic_write(path, lambda tmp: (_save_npy(tmp, features), written.append(records.record(tmp))))
    fileio.write_json(path.with_suffix(".json"), {"content_hash": content_hash, **extractor_id,
                                                  "shape": list(features.shape), "file": written[-1]})
    return features, False


def _clear_non_file(path: Path) -> None:
    """A cache entry that is a folder (made by hand, or a bad copy) would fail the write of the recomputed
    one: an empty folder is removed, one with files in it is a one-line UserError naming it."""
    if not path.is_dir() or path.is_symlink():  # a file, nothing, or a link (the write replaces a link)
        return
    try:
        path.rmdir()
    except FileNotFoundError:  # another rank removed it
        pass
    except OSError:
        raise UserError(f"cached features {path} is a folder, not a file; remove it (`rm -r {path}`) and run "
                        f"again") from None


def _load_cached(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(array, None) when the cached array matches the size + sha256 its JSON records and loads as a
    plain float64 array of the recorded shape; (None, why not) otherwise."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or "file" not in meta:
        return None, f"{path}: its record {path.with_suffix('.json').name} is missing or damaged"
    problem = records.problem(path, meta["file"], "when it was cached")
    if problem:
        return None, problem
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # a pickle (object array) or not an array at all
        return None, f"{path} is not a plain numeric array ({str(err).splitlines()[0][:120]})"
    if array.dtype != np.float64 or list(array.shape) != meta.get("shape"):
        return None, f"{path} holds {array.dtype} {list(array.shape)}, its record float64 {meta.get('shape')}"
    return array, None


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
        np.save(f, array, allow_pickle=False)


def reference_features(reference: Any, cache_dir: Path, extractor: str, layer: str, device: torch.device,
                       batch: int, identity: dict[str, Any] | None = None,
                       **extractor_kwargs: Any) -> tuple[np.ndarray, bool]:
    """(features, hit) of a reference ``ImageSet`` through ``cached_features``.

    ``identity`` adds what the extractor's name does not pin down (a weights hash, a version);
    the extractor name, layer and image count are always part of the key.
    """
    extractor_id = {"extractor": extractor, "layer": layer, "count": len(reference.images), **(identity or {})}
    return cached_features(cache_dir, reference.content_hash(), extractor_id,
                           lambda: extract(reference.images, extractor, layer, device, batch, **extractor_kwargs))


BOOTSTRAP_HELP = ("resamples of the generated images for a 95% bootstrap interval of the distance against the "
                  "fixed reference (<quantity>_boot_low / _boot_high); 0 = none")


def bootstrap_interval(gen: np.ndarray, distance: Callable[[np.ndarray], float], resamples: int,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``distance(resampled generated features)``: the sampling noise of one model's
    score with the reference held fixed (rows drawn with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    values = [distance(gen[rng.integers(0, len(gen), len(gen))]) for _ in range(resamples)]
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_note(protocol: dict[str, Any], resamples: int) -> dict[str, Any]:
    """The protocol with the resamples said in its implementation line (which reaches result rows)."""
    if resamples <= 0:
        return protocol
    return {**protocol, "implementation": f"{protocol.get('implementation', '')}; 95% bootstrap over the generated "
                                          f"samples, {resamples} resamples, reference fixed"}


def with_bootstrap(name: str, value: float, gen: np.ndarray, distance: Callable[[np.ndarray], float],
                   resamples: int) -> dict[str, float]:
    """``{name: value}``, plus ``name_boot_low`` / ``name_boot_high`` when ``resamples`` > 0."""
    if resamples <= 0:
        return {name: value}
    low, high = bootstrap_interval(gen, distance, resamples)
    return {name: value, f"{name}_boot_low": low, f"{name}_boot_high": high}


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """torch-fidelity's Fréchet distance between two N×D feature arrays.

    Features go in as float32, as torch-fidelity's own extractors deliver them: mu is then
    float32 on both sides (``fid_statistics_to_metric`` asserts equal dtypes) and sigma float64
    (``np.cov``), so the number matches ``calculate_metrics`` on the same features.

    When one side has fewer images than feature dimensions (CPU minis, the tiny profile; never
    the paper's 50k-sample protocol) the trace term uses the Gram form instead of a D×D
    eigendecomposition: with Σ₂ = AAᵀ (A = centred features / √(N−1), D×N), the non-zero
    eigenvalues of Σ₁Σ₂ are those of AᵀΣ₁A (N×N, symmetric), so tr √(Σ₁Σ₂) is the same number
    (seconds instead of a 2048² eig; torch-fidelity's own value is noise-level different there).
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    arrays = [np.asarray(f, dtype=np.float32) for f in (features_1, features_2)]
    small = min(range(2), key=lambda i: len(arrays[i]))
    if len(arrays[small]) > arrays[small].shape[1]:
        stats = [fid_features_to_statistics(torch.from_numpy(a)) for a in arrays]
        return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"])
    other = arrays[1 - small]
    mu_small, mu_other = arrays[small].mean(axis=0), other.mean(axis=0)
    sigma_other = np.cov(other, rowvar=False)
    a = (arrays[small] - mu_small).astype(np.float64).T / math.sqrt(max(len(arrays[small]) - 1, 1))
    gram = a.T @ sigma_other @ a
    tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((gram + gram.T) / 2), 0, None)))
    diff = mu_small - mu_other
    return float(diff.dot(diff) + np.trace(sigma_other) + np.einsum("ij,ij->", a, a) - 2 * tr_covmean)


class Extractor(torch.nn.Module):
    """torch-fidelity's extractor contract, declared as data by our extractors.

    Subclasses call ``super().__init__(name, features_list)`` as torch-fidelity's extractors do: what
    torch-fidelity's registry holds is the subclass with its ``FeatureExtractorBase`` mixed in
    (``registry``), so that importing a metric module does not import torch-fidelity (1 s of CPU:
    it imports torchvision, which imports torch._dynamo) before a metric is computed.

    ``layers``: the feature names ``forward`` can return; the first is the default for every
    metric except Inception Score (``isc_layer``). ``dummy_shape``: C, H, W of the input that
    torch-fidelity compiles with (we never compile). ``takes_grey``: one-channel images go in as
    they are (otherwise ``extract`` repeats them to RGB).
    """

    layers: tuple[str, ...] = ()
    takes_grey = False
    isc_layer: str | None = None
    dummy_shape: tuple[int, int, int] = (3, 8, 8)

    @classmethod
    def get_provided_features_list(cls) -> tuple[str, ...]:
        return cls.layers

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric: str) -> str:
        return cls.isc_layer if metric == "isc" and cls.isc_layer else cls.layers[0]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @classmethod
    def get_dummy_input_for_compile(cls) -> torch.Tensor:
        return torch.zeros(1, *cls.dummy_shape, dtype=torch.uint8)


_PENDING: dict[str, type] = {}  # our extractors not yet handed to torch-fidelity's registry


def register_extractor(name: str, cls: type) -> None:
    """Register with torch-fidelity, once (modules may be imported again, e.g. by the registry's scan):
    at once when torch-fidelity is already imported, otherwise on the first ``registry()``."""
    _PENDING.setdefault(name, cls)
    if "torch_fidelity" in sys.modules:
        registry()


def registry() -> dict[str, type]:
    """torch-fidelity's extractor registry (name → class), ours included."""
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    while _PENDING:
        name, cls = _PENDING.popitem()
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            mixed = type(cls.__name__, (cls, FeatureExtractorBase), {"__module__": cls.__module__,
                                                                     "__qualname__": cls.__qualname__})
            register_feature_extractor(name, mixed)
    return FEATURE_EXTRACTORS_REGISTRY


def torch_fidelity_version() -> str:
    """torch-fidelity's version, without importing it."""
    import importlib.metadata

    return importlib.metadata.version("torch-fidelity")


class TensorImages(torch.utils.data.Dataset):
    """uint8 N×C×H×W images as the Dataset torch-fidelity's ``calculate_metrics`` takes (items are tensors)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]
