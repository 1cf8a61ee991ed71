"""Every pretrained file the harness reads: its source URL, its cache place, its pinned sha256; fetched on first use.

The ecosystem's way: the first run downloads what is missing into the standard cache (``$TORCH_HOME`` through
``torch.hub.download_url_to_file``, piq's ``~/.cache/clip``, ``$HF_HOME`` through ``huggingface_hub``), checks
the sha256 pinned here, and writes atomically (a temporary ``.partial`` beside the file, moved into place only
when whole and matching; a corrupted download is deleted, never cached). A file already in the cache is trusted
as torch.hub trusts it; ``python -m ambient_bench weights verify`` hashes every present file against its pin.

Offline (``--offline``, ``AMBIENT_BENCH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) nothing touches the network: a
missing file gives the caller's one-line error (file, URL, folder). ``AMBIENT_BENCH_WEIGHTS_URL`` replaces every
URL's folder with another base (a mirror, or the tests' loopback server).

Pins and where they come from (``sha256`` below; a hash is never guessed):
- inception: full sha256 published in a public project's notes for this exact file name; its first 8 hex digits
  equal the ``6726825d`` that torch.hub's file-name convention carries, which corroborates it.
- dinov2_vitl14: full sha256 from a public project's weights manifest (not published by Meta).
- clip_rn50: full sha256 that OpenAI's own URL carries (openai/CLIP checks it); piq downloads its own snapshot
  first and falls back to that URL, into the same file. Whether piq's snapshot is byte-identical is unverified.
- clip_iqa_tokens: no published hash found: unpinned (``verify`` prints what the file hashes to).
- cleanfid_inception (optional; benchmarks/tools/fid_parity.py only): full sha256 that k-diffusion pins for the
  same NVIDIA URL, and other projects publish.
- sd_vae: full sha256 of ``diffusion_pytorch_model.safetensors`` (334,643,276 bytes), the Hugging Face LFS
  hash, published by several independent projects. ``config.json`` is left to huggingface_hub.

Lower layer: imports no engine or CLI module; torch only for a download, and ``identity`` (called by metrics,
which have loaded it) shares the metrics' memoised file hash.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ambient_bench.errors import UserError

OFFLINE_ENV = "AMBIENT_BENCH_OFFLINE"
BASE_URL_ENV = "AMBIENT_BENCH_WEIGHTS_URL"
SD_VAE_REPO = "stabilityai/sd-vae-ft-mse"


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file. ``sha256``: 64 hex digits (full) or fewer (a prefix), None = unpinned."""

    name: str
    filename: str
    url: str
    cache: str  # torch_hub | torch_hub_clip | piq_clip | huggingface | cleanfid
    sha256: str | None
    used_by: str
    size_mb: float
    optional: bool = False  # not fetched by a bare `weights fetch` (an optional scorer's file)
    hf_repo: str | None = None
    companions: tuple[str, ...] = ()  # small unpinned files of the same Hugging Face repo (config.json)

    @property
    def pin(self) -> str:
        if not self.sha256:
            return "unpinned"
        return "full" if len(self.sha256) == 64 else f"prefix {self.sha256}"

    def folder(self) -> Path:
        if self.cache == "torch_hub":
            return torch_hub_dir() / "checkpoints"
        if self.cache == "torch_hub_clip":
            return torch_hub_dir() / "clip"
        if self.cache == "piq_clip":  # piq: os.path.expanduser("~/.cache/clip"), $HOME and not $TORCH_HOME
            return Path(os.path.expanduser(os.path.join("~", ".cache", "clip")))
        if self.cache == "cleanfid":  # cleanfid/features.py hard-codes "./" on Windows, else "/tmp"
            return Path("." if platform.system() == "Windows" else "/tmp")
        return hf_hub_cache() / f"models--{self.hf_repo.replace('/', '--')}" / "snapshots" / "<revision>"

    def path(self) -> Path | None:
        """Where the file is (or would be); for the Hugging Face cache, the cached file or None."""
        if self.cache != "huggingface":
            return self.folder() / self.filename
        return hf_cached(self.hf_repo, self.filename)

    def source_url(self) -> str:
        base = os.environ.get(BASE_URL_ENV)
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url


INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
# piq.feature_extractors.clip.OPENIQA_CLIP_MODEL_PATH (piq's fallback) = openai/CLIP's _MODELS["RN50"]
CLIP_RN50_SHA256 = "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"
CLIP_RN50_URL = f"https://openaipublic.azureedge.net/clip/models/{CLIP_RN50_SHA256}/RN50.pt"
PIQ_CLIP_RN50_URL = "https://github.com/photosynthesis-team/piq/releases/download/v0.7.1/RN50.pt"
PIQ_TOKENS_URL = "https://github.com/photosynthesis-team/piq/releases/download/v0.7.1/clipiqa_tokens.pt"

REGISTRY: dict[str, WeightsFile] = {w.name: w for w in (
    WeightsFile("inception", INCEPTION_FILE, INCEPTION_URL, "torch_hub",
                "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
                "fid, kid, precision, recall (torch-fidelity inception-v3-compat)", 91.2),
    WeightsFile("dinov2_vitl14", "dinov2_vitl14_pretrain.pth",
                "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth", "torch_hub",
                "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
                "fd_dinov2, vendi, memorization (DINOv2 ViT-L/14)", 1217.6),
    WeightsFile("clip_rn50", "RN50.pt", CLIP_RN50_URL, "piq_clip", CLIP_RN50_SHA256,
                "clip_iqa metric and quality annotation (piq CLIP-IQA)", 244.0),
    WeightsFile("clip_iqa_tokens", "clipiqa_tokens.pt", PIQ_TOKENS_URL, "piq_clip", None,
                "clip_iqa metric and quality annotation (piq's prompt tokens)", 0.003),
    WeightsFile("sd_vae", "diffusion_pytorch_model.safetensors",
                f"https://huggingface.co/{SD_VAE_REPO}/resolve/main/diffusion_pytorch_model.safetensors",
                "huggingface", "a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
                "latent suites (latent.vae: sd-vae-ft-mse)", 334.6, hf_repo=SD_VAE_REPO,
                companions=("config.json",)),
    WeightsFile("cleanfid_inception", "inception-2015-12-05.pt",
                "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
                "cleanfid", "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
                "benchmarks/tools/fid_parity.py (clean-fid legacy_tensorflow)", 95.6, optional=True),
    WeightsFile("clip_rn50_pyiqa", "RN50.pt", CLIP_RN50_URL, "torch_hub_clip", CLIP_RN50_SHA256,
                "clip_iqa with scorer clip_iqa_pyiqa (optional pyiqa)", 244.0, optional=True),
)}


def get(name: str) -> WeightsFile:
    if name not in REGISTRY:
        from ambient_bench.params import suggest

        raise UserError(f"unknown weights file '{name}'{suggest(name, REGISTRY)} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def dinov2(arch: str) -> WeightsFile:
    """The DINOv2 checkpoint of ``arch`` (vitl14 is the paper's and pinned; the others are unpinned)."""
    if arch == "vitl14":
        return REGISTRY["dinov2_vitl14"]
    file = f"dinov2_{arch}_pretrain.pth"
    return WeightsFile(f"dinov2_{arch}", file, f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/{file}",
                       "torch_hub", None, f"DINOv2 {arch}", 0.0, optional=True)


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch (unless it is loaded and set_dir may have been called)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder, read from the environment at call time (its constants are import-time)."""
    hub = os.environ.get("HF_HUB_CACHE")
    return Path(hub) if hub else Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def hf_cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(hf_hub_cache()))
    return Path(found) if isinstance(found, str) else None


def offline() -> str | None:
    """Why the network is off limits (the variable that says so), or None."""
    for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return "HF_HUB_OFFLINE=1" if var != OFFLINE_ENV else "--offline or AMBIENT_BENCH_OFFLINE=1"
    return None


# --- deferral: `plan` and `--dry-run` note a missing file instead of fetching it ----------------------------
_DEFERRED: list[list[WeightsFile]] = []


class Deferred(Exception):
    """Raised by ``fetch`` inside ``deferred()``: the file would be fetched at stage execution."""


@contextlib.contextmanager
def deferred() -> Iterator[list[WeightsFile]]:
    """Inside, a missing file raises ``Deferred`` (collected in the yielded list) instead of downloading."""
    noted: list[WeightsFile] = []
    _DEFERRED.append(noted)
    try:
        yield noted
    finally:
        _DEFERRED.pop()


def deferring() -> bool:
    """Inside ``deferred()``: nothing may touch the network."""
    return bool(_DEFERRED)


def sha256_of(path: Path) -> str:
    from ambient_bench.fileio import sha256_file

    return sha256_file(path)


def matches(entry: WeightsFile, digest: str) -> bool:
    return not entry.sha256 or digest.startswith(entry.sha256)


def fetch(entry: WeightsFile, progress: bool = True) -> str | None:
    """Make ``entry`` present in its cache: None when it is (already, or downloaded and verified now);
    otherwise the reason it is not, for the caller's one-line error."""
    present = entry.path()
    if present is not None and present.is_file():
        return None
    if _DEFERRED:
        _DEFERRED[-1].append(entry)
        raise Deferred(entry.name)
    why = offline()
    if why:
        return f"offline ({why}): nothing downloaded"
    if entry.cache == "huggingface":
        return _fetch_hf(entry)
    target, url = entry.folder() / entry.filename, entry.source_url()
    try:
        import torch.hub

        target.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub's own downloader: a .partial beside the target, moved into place only after the hash check
        torch.hub.download_url_to_file(url, str(target), hash_prefix=entry.sha256, progress=progress)
    except RuntimeError as err:
        if "invalid hash value" in str(err):
            return f"download of {url} refused: its sha256 is not the pinned {entry.sha256[:16]}…; nothing cached"
        return f"download of {url} failed ({_first_line(err)})"
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        return f"download of {url} failed ({_first_line(err)})"
    return None


def fetch_all(entries: list[WeightsFile]) -> list[tuple[WeightsFile, str]]:
    """``fetch`` each; the ones still missing with their reasons. Inside ``deferred()`` every missing one is
    noted before ``Deferred`` is raised."""
    failed, postponed = [], []
    for entry in entries:
        try:
            reason = fetch(entry)
        except Deferred:
            postponed.append(entry)
            continue
        if reason:
            failed.append((entry, reason))
    if postponed:
        raise Deferred(", ".join(e.name for e in postponed))
    return failed


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _fetch_hf(entry: WeightsFile) -> str | None:
    """hf_hub_download into the HF cache, then the pinned hash; a mismatching blob is deleted."""
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(entry.hf_repo, entry.filename, cache_dir=str(hf_hub_cache())))
        for companion in entry.companions:
            hf_hub_download(entry.hf_repo, companion, cache_dir=str(hf_hub_cache()))
    except Exception as err:  # noqa: BLE001 — any hub failure becomes the one-line error's reason
        return f"download of {entry.hf_repo}/{entry.filename} failed ({_first_line(err)})"
    digest = sha256_of(path)
    if matches(entry, digest):
        return None
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    return (f"download of {entry.hf_repo}/{entry.filename} refused: sha256 {digest[:16]}… does not match the "
            f"pinned {entry.sha256[:16]}…; nothing cached")


def identity(entry: WeightsFile, path: Path | None) -> str:
    """The sha256 that enters stage keys: the file's when present; else the pinned one (a fetched file will have
    it), so keys do not change when the file arrives; "missing" where no full pin exists."""
    from ambient_bench.metrics.features import file_sha256  # memoised per (path, size, mtime)

    if path is not None and Path(path).is_file():
        return file_sha256(Path(path))
    return entry.sha256 if entry.sha256 and len(entry.sha256) == 64 else "missing"
