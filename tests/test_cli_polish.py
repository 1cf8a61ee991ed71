"""The command line's finish (issue 28): fast start without torch, --version, completion, the hidden
command hidden, quiet Ctrl-C and closed pipes, library chatter in the stage log, the suite progress line."""
from __future__ import annotations

import importlib.metadata
import json
import io
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli

PROBE = """
import runpy, sys
sys.argv = ["ambient_bench", *{args!r}]
try:
    runpy.run_module("ambient_bench", run_name="__main__")
except SystemExit:
    pass
print("torch imported:", "torch" in sys.modules)
"""


def listed_commands(help_text: str) -> set[str]:
    """The commands of ``--help``: its ``{a,b,...}`` and the first word of each indented command line."""
    braces = re.findall(r"\{([\w,-]+)\}", help_text)
    rows = re.findall(r"^    (\w+)", help_text, flags=re.M)
    return set(braces[0].split(",")) | set(rows) if braces else set()


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_help_and_version_do_not_import_torch():
    shown = probe("--help")
    assert "torch imported: False" in shown.stdout and "usage:" in shown.stdout
    assert listed_commands(shown.stdout) and "stage" not in listed_commands(shown.stdout)  # hidden: hidden
    assert "SUPPRESS" not in shown.stdout
    version = probe("--version")
    import ambient_bench

    assert f"ambient_bench {ambient_bench.__version__}" in version.stdout and "torch imported: False" in version.stdout
    try:
        assert importlib.metadata.version("ambient_bench") == ambient_bench.__version__
    except importlib.metadata.PackageNotFoundError:
        pass  # running from a checkout that is not installed


def test_public_api_is_lazy_but_complete():
    code = ("import sys, ambient_bench as ab; assert 'torch' not in sys.modules; "
            "from ambient_bench import Method, register_method, Param, METHODS, UserError; "
            "assert Method.__module__ == 'ambient_bench.components' and set(ab.__all__) <= set(dir(ab)); "
            "print(all(hasattr(ab, n) for n in ab.__all__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    import ambient_bench

    with pytest.raises(AttributeError):
        ambient_bench.NoSuchThing  # noqa: B018


def test_stage_is_hidden_but_still_parses():
    from ambient_bench.cli import build_parser

    args = build_parser().parse_args(["stage", "s.yaml", "--stage", "train:0123"])
    assert args.command == "stage" and args.stage == "train:0123"
    assert {"run", "plan", "list"} <= listed_commands(build_parser().format_help())
    assert "stage" not in listed_commands(build_parser().format_help())


def test_completion_script():
    pytest.importorskip("shtab")
    proc = run_cli("completion", "bash")
    assert proc.returncode == 0 and "ambient-bench" in proc.stdout and "plan" in proc.stdout
    assert "_shtab_compgen_files" in proc.stdout  # suite arguments complete file names
    assert run_cli("completion", "zsh").returncode == 0


def test_closed_pipe_is_quiet_with_exit_141():
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m ambient_bench list | head -1; "
                                         "exit ${PIPESTATUS[0]}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout == "corruptions:\n" and proc.returncode == 141
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_ctrl_c_exits_130_in_one_line(monkeypatch, capsys):
    from ambient_bench import cli

    def interrupted(args):
        raise KeyboardInterrupt

    def interrupted_in_an_import(args):  # what numpy makes of a Ctrl-C while it is being imported
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ImportError("numpy._core.multiarray failed to import") from err

    for handler in (interrupted, interrupted_in_an_import):
        monkeypatch.setattr(cli, "cmd_list", handler)
        assert cli.main(["list"]) == 130
        err = capsys.readouterr().err
        assert err.startswith("interrupted:") and err.count("\n") == 1


def test_ctrl_c_during_a_stage(tmp_path):
    """A real SIGINT while a training stage runs: exit 130, one line, the stage recorded as interrupted."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "ambient_bench", "run", "benchmarks/smoke_cpu.yaml", "--runs",
                             str(runs), "--results", str(tmp_path / "results"), "method=clean_only",
                             "mix.corruption.sigma=0.6", "train.duration_kimg=50"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("[train "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if not line.startswith(("\r", "\x1b"))][-1].startswith("interrupted:")
    statuses = [p.read_text() for p in runs.glob("train/*/status.json")]
    assert statuses and '"interrupted"' in statuses[0]


def test_library_chatter_goes_to_the_stage_log(caplog, capsys):
    from ambient_bench.chatter import quiet

    with caplog.at_level(logging.INFO, logger="ambient_bench.stage"):
        with quiet("lib"):
            print("Creating feature extractor", file=sys.stderr)
            print("downloading\r 50%\r100%")
    assert capsys.readouterr() == ("", "")
    assert [r.getMessage() for r in caplog.records] == ["[lib] Creating feature extractor", "[lib] 100%"]


def test_torch_fidelity_extractor_line_is_not_printed(caplog, capsys):
    import torch

    from ambient_bench.metrics import features, offline

    with caplog.at_level(logging.INFO, logger="ambient_bench.stage"):
        out = features.extract(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), offline.EXTRACTOR, offline.LAYER,
                               torch.device("cpu"), verbose=True)
    assert out.shape[0] == 4
    printed = capsys.readouterr()
    assert "Creating feature extractor" not in printed.out + printed.err
    assert any("Creating feature extractor" in r.getMessage() for r in caplog.records) or \
        features._extractor.cache_info().hits  # built by an earlier test of this process: nothing printed then


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_suite_progress_line_counts_and_estimates():
    from ambient_bench.progress import SuiteProgress

    stages = [("train", "a" * 64), ("sample", "b" * 64), ("evaluate", "c" * 64), ("train", "d" * 64)]
    clock, stream = Clock(), io.StringIO()
    progress = SuiteProgress(stages, [2.0, 1.0, None, 2.0], done={stages[3]}, stream=stream, every=30, clock=clock)
    assert progress.line() == "progress: 1/4 stages done"  # no ETA before a stage has run here
    progress.event("start", *stages[0])
    assert "running train aaaaaaaa" in progress.line() and stream.getvalue() == ""  # not a TTY: < 30 s
    clock.now = 40.0  # 40 s for an estimated 2 units: 20 s a unit; left 1 + 2 (the unknown counts as the median)
    progress.event("done", *stages[0])
    assert progress.line() == "progress: 2/4 stages done, ETA 60 s"
    progress.event("start", *stages[1])  # 40 s since the start: a plain line
    assert stream.getvalue() == "progress: 2/4 stages done, running sample bbbbbbbb, ETA 60 s\n"
    clock.now = 50.0
    progress.event("failed", *stages[1])
    progress.event("elsewhere", *stages[2])
    assert progress.line() == "progress: 3/4 stages done, 1 failed, took 50 s"


def test_suite_progress_redraws_in_place_on_a_terminal():
    from ambient_bench.progress import SuiteProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream, printed = Terminal(), []
    progress = SuiteProgress([("train", "a" * 64)], [1.0], done=set(), stream=stream, clock=Clock())
    log = progress.wrap(printed.append)
    progress.event("start", "train", "a" * 64)
    log("a line of the run")
    assert printed == ["a line of the run"]
    assert stream.getvalue().count("\r\x1b[K") == 3  # drawn, wiped before the log line, drawn again
    progress.clear()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_flop_counts_are_kept_per_user(tmp_path, monkeypatch):
    """plan's FLOP counts come from $AMBIENT_BENCH_CACHE/flops.json once counted; a change of the
    networks' code (or configuration) counts again."""
    from ambient_bench.engine import flops

    monkeypatch.setenv("AMBIENT_BENCH_CACHE", str(tmp_path))
    net = {"model_channels": 8, "channel_mult": [1], "num_blocks": 1}
    counted = flops._diffusion_flops.__wrapped__(json.dumps(net), 1, 8)
    assert counted > 0 and (tmp_path / "flops.json").is_file()

    def no_count(*args, **kwargs):
        raise AssertionError("counted again")

    monkeypatch.setattr(flops, "_count", no_count)
    assert flops._diffusion_flops.__wrapped__(json.dumps(net), 1, 8) == counted
    monkeypatch.setattr(flops, "_code_hash", lambda: "edited")
    with pytest.raises(AssertionError, match="counted again"):
        flops._diffusion_flops.__wrapped__(json.dumps(net), 1, 8)
