"""Import a module from a peer checkout (NVlabs/edm, NVlabs/edm2, the official ambient-omni release) at run time.

The peers' code never enters this repository: a parity script is given the path of a checkout the user
cloned and imports from it. EDM, EDM2 and ambient-omni's pixel-diffusion all define top-level packages named
``training``, ``torch_utils`` and ``dnnlib``, so the modules of one checkout are purged from ``sys.modules``
before another's are imported.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

PEER_PACKAGES = ("training", "torch_utils", "dnnlib", "generate", "annotate", "train")

# flag -> (what a checkout must contain, where to get it)
PEERS = {
    "edm": ("training/networks.py", "git clone https://github.com/NVlabs/edm"),
    "edm2": ("training/networks_edm2.py", "git clone https://github.com/NVlabs/edm2"),
    "ambient_omni": ("pixel-diffusion/training/loss.py", "git clone https://github.com/giannisdaras/ambient-omni"),
}


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in PEER_PACKAGES:
            del sys.modules[name]


def peer_import(root: Path, module: str) -> ModuleType:
    """``module`` (dotted, e.g. ``training.augment``) imported from the checkout folder ``root``."""
    _purge()
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


def check_peer(flag: str, path: str | None) -> Path | None:
    """The checkout behind ``--flag`` or None when not given; exits 2 in one line when it is not one."""
    if path is None:
        return None
    marker, source = PEERS[flag]
    root = Path(path).expanduser()
    if not (root / marker).is_file():
        option = "--" + flag.replace("_", "-")
        print(f"{option} {path}: not a checkout of {source.split('/', 3)[-1]} (no {marker}); get it with: {source}",
              file=sys.stderr)
        raise SystemExit(2)
    return root.resolve()


def parse_peers(description: str, needs: tuple[str, ...], argv: list[str] | None = None) -> dict[str, Path]:
    """Command-line flags --edm / --edm2 / --ambient-omni; each flag in ``needs`` is required."""
    parser = argparse.ArgumentParser(description=description)
    for flag in PEERS:
        parser.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None,
                            help=f"path to a checkout ({PEERS[flag][1]})")
    args = parser.parse_args(argv)
    peers = {flag: check_peer(flag, getattr(args, flag)) for flag in PEERS}
    for flag in needs:
        if peers[flag] is None:
            marker, source = PEERS[flag]
            print(f"--{flag.replace('_', '-')} PATH is required: a checkout of {source.split('/', 3)[-1]} "
                  f"(get it with: {source})", file=sys.stderr)
            raise SystemExit(2)
    return {k: v for k, v in peers.items() if v is not None}


def print_rows(rows: list[dict]) -> int:
    """The rows as a table; 1 when any row is not ok."""
    from tabulate import tabulate

    table = [[r["check"], _fmt(r["value"]), _fmt(r.get("bound")), "ok" if r["ok"] else "FAIL", r.get("note", "")]
             for r in rows]
    print(tabulate(table, headers=["check", "value", "bound", "", "note"]))
    return 0 if all(r["ok"] for r in rows) else 1


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def row(check: str, value: float | str, bound: float | None, note: str = "") -> dict:
    """One result row; ``ok`` when ``value`` ≤ ``bound`` (always, for an informational row without a bound)."""
    ok = bound is None or (isinstance(value, float) and value <= bound)
    return {"check": check, "value": value, "bound": bound, "ok": bool(ok), "note": note}


def failed_row(check: str, error: BaseException, note: str = "") -> dict:
    """A check that could not run (a peer's module failed to import, a shape mismatch): a FAIL row, not a crash."""
    text = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return {"check": check, "value": "error", "bound": None, "ok": False, "note": (note + " " + text).strip()}


def stub_modules(*names: str) -> None:
    """Empty stand-ins for packages a peer imports at module level but the checked code never calls
    (wandb, psutil): the check runs without installing them. A name that imports is left alone."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = ModuleType(name)


def ambient_utils_package() -> ModuleType:
    """``ambient_utils`` (github.com/giannisdaras/ambient-utils, which the release's environment.yml installs),
    without running its ``__init__``: that one imports webdataset, diffusers, … for dataset code the
    checks never call. Its submodules (``ambient_utils.loss``, ``.classifier``) import as usual from the
    installed package's folder."""
    import importlib.util

    existing = sys.modules.get("ambient_utils")
    if existing is not None:
        return existing
    spec = importlib.util.find_spec("ambient_utils")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ambient_utils is not installed: pip install git+https://github.com/giannisdaras/ambient-utils")
    package = ModuleType("ambient_utils")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["ambient_utils"] = package
    loss = importlib.import_module("ambient_utils.loss")
    for name in dir(loss):  # the release calls ambient_utils.<function> (the package re-exports loss.*)
        if not name.startswith("_"):
            setattr(package, name, getattr(loss, name))
    return package
