"""Every ``python -m ambient_bench`` command in README.md's code blocks runs, so the README cannot drift.

Commands are extracted from the README (any line of a fenced block holding ``python -m ambient_bench``)
and run in-process through ``cli.main`` (one import of torch for all of them), each rewritten by the
rule of its command word in ``RULES``: where running would take minutes or need GPUs, data or the
network, the rule says what runs instead (``run`` → ``plan`` of the same suite and overrides), and
every write goes to a temporary folder, never into the checkout. A README command whose word has no
rule fails ``test_every_readme_command_has_a_rule``: add one here. ``[a|b]`` alternatives run each.
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO

PREFIX = "python -m ambient_bench"
SHELL = {">", ">>", "<", "|", "2>", "&>", ";"}  # where the shell takes over from the command


def readme_commands(text: str) -> list[str]:
    """``python -m ambient_bench ...`` of every fenced code block, one per ``&&`` part, without comments
    and redirections."""
    commands, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced or PREFIX not in line:
            continue
        for part in line.split("&&"):
            if PREFIX in part:
                words = shlex.split(PREFIX + part.split(PREFIX, 1)[1], comments=True)
                cut = next((i for i, w in enumerate(words) if w in SHELL), len(words))  # `> file`, `| head`
                commands.append(" ".join(words[:cut]))
    return commands


def alternatives(argv: list[str]) -> list[list[str]]:
    """``list [corruption|dataset]`` → ``list corruption`` and ``list dataset``; an optional flag group
    ``[--ood OOD_DIR]`` is taken (the fuller command)."""
    for i, word in enumerate(argv):
        if word.startswith("[--") and not word.endswith("]"):
            end = next(j for j in range(i, len(argv)) if argv[j].endswith("]"))
            group = [argv[i][1:], *argv[i + 1:end], argv[end][:-1]]
            return alternatives(argv[:i] + group + argv[end + 1:])
        if re.fullmatch(r"\[[\w|-]+\]", word):
            return [argv[:i] + [choice] + argv[i + 1:] for choice in word[1:-1].split("|")]
    return [argv]


# ---- the rules: how each command word runs in the test, and which exit codes are a pass ----

Rule = Callable[[list[str], Path], tuple[list[str], tuple[int, ...]]]
RUN_ONLY = {"--results": 1, "--expect-cached": 0, "--keep-going": 0, "--fail-fast": 0, "--workers": 1}


def _as_plan(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``run`` trains for minutes: ``plan`` of the same suite and overrides loads, resolves and builds
    every stage instead (a slurm ``--dry-run`` only writes scripts: it runs as written)."""
    if "--dry-run" in argv:
        return ["run", *argv[1:], "--runs", str(tmp / "runs")], (0,)
    out, skip = ["plan"], 0
    for word in argv[1:]:
        if skip:
            skip -= 1
        elif word.split("=")[0] in RUN_ONLY and word.startswith("--"):
            skip = RUN_ONLY[word.split("=")[0]] if "=" not in word else 0
        else:
            out.append(word)
    return [*out, "--runs", str(tmp / "runs")], (0,)


def _plan(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    return [*argv, "--runs", str(tmp / "runs")], (0,)


def _status(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """On an empty run store: exit 1 (not every stage done) with a row per stage."""
    return [*argv, "--runs", str(tmp / "runs")], (0, 1)


def _results_copy(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``tables`` / ``report`` of a committed suite: on a copy of its results folder."""
    from ambient_bench.config.suite import load_suite

    suite = load_suite(argv[1], [])
    copy = tmp / "results"
    shutil.copytree(REPO / suite.results_dir, copy)
    return [*argv, "--results", str(copy), "--runs", str(tmp / "runs")], (0,)


def _folder_arg(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``standins DIR``: into a temporary folder, 2 images per class."""
    return [argv[0], str(tmp / "standins"), "--per-class", "2"], (0,)


def _index(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``index`` rewrites results/README.md: ``--check`` reads it instead (exit 0: up to date)."""
    return [*argv, "--check"], (0,)


def _show(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    return [*argv, "--out", str(tmp / "gallery.png")], (0,)


def _as_is(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    return argv, (0,)


def _compare(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``compare --good G --bad B``: on generated folders of a few digits, one seed."""
    from PIL import Image

    folders = {}
    for name, blur in (("good", 0), ("bad", 2), ("ood", 0)):
        folder = folders[name] = tmp / name
        folder.mkdir()
        for i in range(12):
            pixels = bytes((x * 7 + y * 3 + i * 11) % 256 for y in range(16) for x in range(16))
            picture = Image.frombytes("L", (16, 16), pixels)
            if blur:
                from PIL import ImageFilter
                picture = picture.filter(ImageFilter.GaussianBlur(blur))
            picture.save(folder / f"{i}.png")
    out, i = [], 0
    while i < len(argv):
        flag = argv[i]
        if flag in ("--good", "--bad", "--ood"):
            out += [flag, str(folders[flag[2:]])]
            i += 2
        elif flag == "--seeds":
            i += 2
        else:
            out.append(flag)
            i += 1
    return [*out, "--seeds", "1", "--runs", str(tmp / "runs"), "--results", str(tmp / "results")], (0,)


def _weights(argv: list[str], tmp: Path) -> tuple[list[str], tuple[int, ...]]:
    """``weights list|verify`` read the caches: as written; ``fetch`` needs the network: parsed only
    (the loopback-server tests exercise it)."""
    if len(argv) > 1 and argv[1] == "fetch":
        return ["--parse-only", *argv], (0,)
    return argv, (0, 1)  # verify exits 1 where a file is missing: what it reports is the point


RULES: dict[str, Rule] = {
    "run": _as_plan, "plan": _plan, "status": _status, "list": _as_is, "tables": _results_copy,
    "report": _results_copy, "standins": _folder_arg, "index": _index, "show": _show, "completion": _as_is,
    "compare": _compare, "weights": _weights,
}


# ---- the tests ----

COMMANDS = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_every_readme_command_has_a_rule():
    assert len(COMMANDS) >= 10, "the README's code blocks lost their examples?"
    for command in COMMANDS:
        word = shlex.split(command)[3] if len(shlex.split(command)) > 3 else ""
        assert word in RULES, (f"README example `{command}`: no rule for `{word}` in tests/test_readme_examples.py "
                               f"RULES; add one saying how the test runs it quickly")


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> Path:
    """Stand-in datasets and random-weight feature networks (as tests/test_paper_suites.py has them):
    a paper suite's ``plan`` needs its data to count (weights it only notes)."""
    from random_weights import write_random_weights

    from ambient_bench.datasets.standins import write_standins

    home = tmp_path_factory.mktemp("readme_env")
    write_standins(home / "data", per_class=2)
    write_random_weights(home / "torch")
    return home


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, environment, tmp_path, monkeypatch, capsys):
    from ambient_bench.cli import build_parser, main

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(environment / "data"))
    monkeypatch.setenv("TORCH_HOME", str(environment / "torch"))
    argv = shlex.split(command)[3:]
    rule = RULES[argv[0]]
    for n, variant in enumerate(alternatives(argv)):
        folder = tmp_path / str(n)
        folder.mkdir()
        args, codes = rule(variant, folder)
        if args[0] == "--parse-only":
            build_parser().parse_args(args[1:])
            continue
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse: a usage error
            code = exit_.code
        out = capsys.readouterr()
        assert code in codes, \
            f"`{command}` ran as `{' '.join(args)}`: exit {code}\n{out.out[-2000:]}\n{out.err[-2000:]}"
