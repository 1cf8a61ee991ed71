"""Every parity check in this folder against the user's checkouts of the official code, as one table.

    python benchmarks/parity/run_all.py --edm PATH --edm2 PATH --ambient-omni PATH

Imports each module here that defines ``NEEDS`` and ``run`` (networks, sampler, loss, classifier, annotation,
constants, augmentation, …), runs those whose peers were given, skips the others with a line saying which flag
they need, prints one table and exits 1 if any row fails (2 on a missing or wrong path). Get the checkouts with
git clone https://github.com/NVlabs/edm, …/NVlabs/edm2, …/giannisdaras/ambient-omni; the loss and annotation
checks also need ambient_utils (pip install git+https://github.com/giannisdaras/ambient-utils, as the release's
environment.yml does).
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import failed_row, parse_peers, print_rows

HERE = Path(__file__).resolve().parent


def check_modules() -> dict[str, ModuleType | Exception]:
    """name -> module, for every module of this folder that is a check (has NEEDS and run); the error for
    one that fails to import."""
    found: dict[str, ModuleType | Exception] = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_") or path.stem in ("run_all", "peers", "transfer"):
            continue
        try:
            module = importlib.import_module(f"benchmarks.parity.{path.stem}")
        except Exception as error:
            found[path.stem] = error
            continue
        if hasattr(module, "NEEDS") and hasattr(module, "run"):
            found[path.stem] = module
    return found


def main(argv: list[str] | None = None) -> int:
    modules = check_modules()
    peers = parse_peers(__doc__.splitlines()[0], (), argv)
    rows = []
    for name, module in modules.items():
        if isinstance(module, Exception):
            rows.append(failed_row(f"{name} (import)", module))
            continue
        missing = [flag for flag in module.NEEDS if flag not in peers]
        if missing:
            print(f"{name}: skipped (needs {', '.join('--' + f.replace('_', '-') for f in missing)})")
            continue
        start = time.monotonic()
        try:
            rows += module.run(peers)
        except Exception as error:  # one broken check does not hide the others
            rows.append(failed_row(name, error))
        print(f"{name}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    if not rows:
        print("no check ran: give --edm, --edm2 and/or --ambient-omni", file=sys.stderr)
        return 2
    return print_rows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
