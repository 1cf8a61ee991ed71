"""``python -m ambient_bench weights list | fetch [NAMES] | verify [NAMES]``: the pretrained files, ahead of a job.

``list`` says where each file is (or would be cached) and whether it is there, without importing torch;
``fetch`` downloads what is missing (before a cluster job: compute nodes are often offline); ``verify`` hashes
every present file against its pin (ambient_bench/weights.py). Exit 1 when a fetch fails or a hash mismatches.
"""
from __future__ import annotations

import argparse
from typing import Callable

from ambient_bench import weights


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="pretrained files (Inception, DINOv2, CLIP, SD VAE): list where they are "
                                       "cached, fetch them ahead of an offline job, verify their sha256")
    p.add_argument("action", choices=("list", "fetch", "verify"))
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="files to act on (default: every file but the optional ones); of "
                        + ", ".join(weights.REGISTRY))


def _selected(names: list[str]) -> list[weights.WeightsFile]:
    if names:
        return [weights.get(name) for name in names]
    return [entry for entry in weights.REGISTRY.values() if not entry.optional]


def _size(mb: float) -> str:
    return "?" if not mb else "<1" if mb < 1 else f"{mb:,.0f}"


def _where(entry: weights.WeightsFile) -> tuple[str, str]:
    path = entry.path()
    if path is not None and path.is_file():
        return "present", str(path)
    return "missing", str(entry.folder() / entry.filename)


def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    entries = _selected(args.names)
    if args.action == "list":
        return _list(entries if args.names else list(weights.REGISTRY.values()), say)
    if args.action == "fetch":
        return _fetch(entries, say)
    return _verify(entries, bool(args.names), say)


def _list(entries: list[weights.WeightsFile], say: Callable[[str], None]) -> int:
    from tabulate import tabulate

    rows = []
    for entry in entries:
        state, where = _where(entry)
        rows.append({"name": entry.name, "state": state, "MB": _size(entry.size_mb),
                     "sha256 pin": entry.pin, "path": where, "used by": entry.used_by + (" [optional]" if entry.optional
                                                                                    else "")})
    say(tabulate(rows, headers="keys", tablefmt="simple"))
    offline = weights.offline()
    say("fetch the missing ones with `python -m ambient_bench weights fetch`"
        + (f" (this shell is offline: {offline})" if offline else "") + "; caches: TORCH_HOME, HF_HOME, ~/.cache/clip")
    return 0


def _fetch(entries: list[weights.WeightsFile], say: Callable[[str], None]) -> int:
    failed = 0
    for entry in entries:
        state, where = _where(entry)
        if state == "present":
            say(f"{entry.name}: present at {where}")
            continue
        say(f"{entry.name}: downloading {entry.source_url()} ({_size(entry.size_mb)} MB) to {where}")
        reason = weights.fetch(entry)
        if reason:
            failed += 1
            say(f"{entry.name}: not fetched: {reason}; put {entry.filename} from {entry.source_url()} in "
                f"{entry.folder()}")
        else:
            say(f"{entry.name}: fetched" + (", sha256 matches its pin" if entry.sha256 else " (unpinned)"))
    return 1 if failed else 0


def _verify(entries: list[weights.WeightsFile], named: bool, say: Callable[[str], None]) -> int:
    bad = 0
    for entry in entries:
        state, where = _where(entry)
        if state == "missing":
            bad += named  # a file asked for by name must be there
            say(f"{entry.name}: missing ({where})")
            continue
        digest = weights.sha256_of(entry.path())
        if not entry.sha256:
            say(f"{entry.name}: present, unpinned (sha256 {digest}) {where}")
        elif weights.matches(entry, digest):
            say(f"{entry.name}: ok, sha256 matches its {entry.pin} pin ({where})")
        else:
            bad += 1
            say(f"{entry.name}: MISMATCH: sha256 {digest}, pinned {entry.sha256} ({where}); delete it and run "
                f"`python -m ambient_bench weights fetch {entry.name}`")
    return 1 if bad else 0
