"""Issue 29, items 4, 7 and 12: every failure is named in one line, tracebacks only with --debug.

A diverged training (an overflowed gradient norm, a non-finite loss, weight or loss scale) names what
diverged; --fail-fast writes results.csv for the cells that finished; a stage folder replaced by a file and
an empty or garbled results.csv are one line with the fix; weights refusals carry none of torch's advice to
load unsafely; discarding a linked stage folder leaves no link behind.
"""
from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch

from conftest import SHORTEST_CELL

from ambient_bench import cli, fileio
from ambient_bench.errors import UserError
from ambient_bench.training.fit import TrainingDiverged, check_loss_scale, optimizer_step

# two cells of one 8 px suite: lr 1e9 diverges at its first step, the other finishes
SUITE = SHORTEST_CELL.replace("{name}", "failures") + """
grid:
  train.lr: [1.0e-3, 1.0e9]
"""


def _cfg(lr: float) -> dict:
    return {"lr": lr, "batch": 1, "warmup_kimg": 0, "grad_clip": None, "ema_halflife_kimg": 1.0, "ema_rampup": None}


def _step(net: torch.nn.Module, loss: torch.Tensor, lr: float = 1e9) -> str:
    with pytest.raises(TrainingDiverged) as err:
        optimizer_step(net, torch.nn.Linear(1, 1), torch.optim.SGD(net.parameters(), lr=lr), loss, _cfg(lr), 3)
    assert "\n" not in str(err.value) and "step 3" in str(err.value)
    return str(err.value)


class Two(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(4))
        self.b = torch.nn.Parameter(torch.ones(1))


def test_a_diverged_step_names_what_diverged():
    net = Two()
    # every entry finite (1e25), the norm's sum of squares past float32: was StopIteration
    line = _step(net, (net.a * 1e25).sum() + net.b.sum())
    assert "gradient norm of a overflowed" in line and "1e+25" in line
    net = Two()  # each parameter's norm finite (1.5e19), the total's square past float32
    line = _step(net, (net.a[:1] * 1.5e19).sum() + (net.b * 1.5e19).sum())
    assert "total gradient norm overflowed" in line
    net = Two()
    assert "the loss is inf" in _step(net, net.a.sum() * float("inf"))
    net = Two()
    assert "gradient of b is not finite" in _step(net, net.a.sum() + torch.sqrt(net.b - 1).sum())  # d√x at 0
    net = Two()
    with torch.no_grad():
        net.b.fill_(float("inf"))  # an earlier update overflowed a weight
    assert "weight b is not finite" in _step(net, (net.a * net.b).sum())


def test_a_collapsed_fp16_loss_scale_is_named():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** -10)
    with pytest.raises(TrainingDiverged, match="loss scale fell to 0.000977"):
        check_loss_scale(scaler, 40)
    check_loss_scale(torch.amp.GradScaler("cpu"), 40)  # 2^16: training goes on
    check_loss_scale(None, 40)


def test_nan_samples_quote_the_training_loss(tmp_path):
    from ambient_bench.engine.stages import _last_training_loss

    (tmp_path / "stats.jsonl").write_text(json.dumps({"step": 2, "loss": 9.2e13, "lr": 1e5}) + "\n"
                                          + json.dumps({"step": 2, "ema_loss": 5e21}) + "\n{cut sho")
    assert "ended at loss 9.2e+13 (step 2, train.lr 100000" in _last_training_loss(tmp_path)
    assert "see its training's" in _last_training_loss(tmp_path / "none")


def _with_value(csv: str, value: str) -> str:
    import io

    import pandas as pd

    frame = pd.read_csv(io.StringIO(csv))
    frame["value"] = frame["value"].astype(object)
    frame.loc[0, "value"] = value
    return frame.to_csv(index=False)


def _one_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err


def test_fail_fast_names_the_reason_writes_what_finished_and_store_faults_are_one_line(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE).format(results=tmp_path / "results"))
    runs = tmp_path / "runs"
    code = cli.main(["run", str(suite), "--runs", str(runs), "--fail-fast"])
    out = "".join(capsys.readouterr())
    assert code == 1 and "Traceback" not in out, out
    assert "gradient norm of net." in out and "overflowed" in out and "not started after it: --fail-fast" in out
    results = (tmp_path / "results" / "results.csv").read_text()
    assert "0.001" in results and "1e+09" not in results  # the finished cell only

    csv = tmp_path / "results" / "results.csv"
    header, first = results.split("\n")[:2]
    for garble in (b"", b"\x00\xff\xfe garbage", b"x,y\n1,2\n", f"{header}\n".encode(),
                   f"{header}\n{first},extra,fields\n".encode(), _with_value(results, "oops").encode()):
        csv.write_bytes(garble)
        for command in (["tables"], ["tables", "--check"], ["report"]):
            assert cli.main([*command, str(suite), "--runs", str(runs)]) == 2, (garble, command)
            err = capsys.readouterr().err
            _one_line(err)
            assert str(csv) in err and f"ambient_bench run {suite}" in err

    stage = next((runs / "mix").iterdir())  # a stage folder replaced by a file
    for path in stage.rglob("*"):
        path.unlink()
    stage.rmdir()
    stage.write_text("not a folder")
    for command in ("plan", "status", "run"):
        assert cli.main([command, str(suite), "--runs", str(runs)]) == 2, command
        err = capsys.readouterr().err
        _one_line(err)
        assert f"{stage} is a file" in err and f"rm {stage}" in err


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("the reason\nand more")

    monkeypatch.delenv("AMBIENT_BENCH_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_list", boom)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    _one_line(err)
    assert "error: RuntimeError: the reason (run with --debug for the traceback)" in err
    for argv in (["--debug", "list"], ["list", "--debug"]):
        with pytest.raises(RuntimeError):
            cli.main(argv)
    monkeypatch.setenv("AMBIENT_BENCH_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["list"])
    monkeypatch.setenv("AMBIENT_BENCH_DEBUG", "0")

    def refuse(args):
        raise UserError("bad input, fix it")

    monkeypatch.setattr(cli, "cmd_list", refuse)
    assert cli.main(["list"]) == 2 and capsys.readouterr().err == "error: bad input, fix it\n"

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_list", interrupt)
    assert cli.main(["--debug", "list"]) == 130 and "Traceback" not in capsys.readouterr().err


class _Code:
    def __reduce__(self):
        return (os.system, ("echo planted",))


def test_weights_refusals_carry_no_unsafe_advice(tmp_path):
    from ambient_bench.metrics import features

    torch.save({"ema": _Code()}, tmp_path / "planted.pt")
    (tmp_path / "garbage.pt").write_bytes(os.urandom(400))
    torch.save({"w": torch.ones(3)}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    for name in ("planted.pt", "garbage.pt", "cut.pt"):
        with pytest.raises(UserError) as err:
            features.require_safe_weights(tmp_path / name)  # a user's weights file
        text = str(err.value)
        assert str(tmp_path / name) in text and "\n" not in text and "weights_only" not in text, text
        assert "recomputes" not in text and "weights fetch" in text, text
        with pytest.raises(UserError, match="a stage recomputes it"):
            fileio.torch_load(tmp_path / name)  # a file of the run store
    with pytest.raises(UserError, match=r"asks for posix\.system|asks for nt\.system"):
        fileio.torch_load(tmp_path / "planted.pt")
    try:  # a library's own torch.load (piq's CLIP fallback): the failed stage's line is ours, not torch's advice
        torch.load(tmp_path / "planted.pt", weights_only=True)
    except Exception as err:  # noqa: BLE001
        from ambient_bench.engine.runner import _failure_line

        line = _failure_line(err)
        assert "weights_only" not in line and "safe loader refused a file" in line and "system" in line, line


def test_discarding_a_linked_stage_folder_leaves_no_link(tmp_path):
    from ambient_bench.engine.store import RunStore

    elsewhere = tmp_path / "disk2" / "train-outputs"
    elsewhere.mkdir(parents=True)
    (elsewhere / "network.pt").write_bytes(b"old")
    store = RunStore(tmp_path / "runs")
    link = store.root / "train" / "0123456789abcdef"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    assert store.discard("train", "0123456789abcdef")
    assert not os.path.lexists(link) and list((store.root / "train").iterdir()) == []
    assert [p.name for p in elsewhere.iterdir()] == ["network.pt"]  # outside the store: left as it was, no lock
    assert store.state("train", "0123456789abcdef") == "missing"
