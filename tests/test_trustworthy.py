"""Issue 14, scenario by scenario: stale keys, corrupt outputs, NaN cells, planted pickles, escaping
names, and malformed input all end in a recomputation or one line with exit 2, never a wrong number."""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from ambient_bench import UserError, cli, fileio
from ambient_bench.config.suite import load_suite
from ambient_bench.engine.runner import build_graph
from ambient_bench.registry import METHODS
from conftest import TINY_CELL as CELL, numbers_of



def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# -- keys are content ---------------------------------------------------------------------------

def _images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _keys(path) -> dict[tuple[int, str], str]:
    suite = load_suite(path)
    graph = build_graph(suite)
    return {(i, name): stage.key for i, stages in enumerate(graph.cells) for name, stage in stages.items()}


def test_editing_one_image_changes_exactly_the_stages_that_read_it(tmp_path, write_suite, monkeypatch):
    _images(tmp_path / "ood", 6)
    monkeypatch.chdir(tmp_path)
    suite = write_suite(CELL.format(name="edit", results=tmp_path / "results") + """
grid:
  method: [clean_only, all_data]
""")
    suite.write_text(suite.read_text().replace("  mix: {clean_fraction: 0.5,",
                                               "  mix: {ood: [{name: image_folder, path: ood, resolution: 8}], "
                                               "clean_fraction: 0.5,"))
    before = _keys(suite)
    _images(tmp_path / "ood", 1, seed=7)  # image 000.png rewritten with other pixels
    after = _keys(suite)
    changed = {ident for ident in before if before[ident] != after[ident]}
    # all_data reads the OOD folder: its mix and everything after; clean_only and the metric setup do not
    assert changed == {ident for ident in before if ident[0] == 1 and ident[1] != "setup:fd_digits"}
    assert len(changed) == 5  # mix, annotate, train, sample, evaluate
    # the same images under another path (another working directory) keep the keys
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "ood", tmp_path / "elsewhere" / "ood")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _keys(suite) == after


def test_unused_parameters_stay_out_of_keys_and_cannot_be_set():
    fixed = METHODS.build({"name": "ambient_o", "sigma_min": 1.0})
    assert "classifier" not in fixed.spec()["params"] and "quality_top_fraction" not in fixed.spec()["params"]
    with pytest.raises(UserError, match="does not read quality_top_fraction with annotate: fixed"):
        from ambient_bench.config.schema import ComponentRef
        from ambient_bench.params import ParamError
        try:
            ComponentRef("method").resolve({"name": "ambient_o", "sigma_min": 1.0, "quality_top_fraction": 0.2}, ())
        except ParamError as err:
            raise UserError(err.message) from None
    # a subclass's key follows its base's version too
    assert METHODS.get("ambient_o_crops").key_version() == [2, METHODS.get("ambient_o").version]


def test_identical_tensors_give_identical_files(tmp_path):
    obj = {"x": torch.arange(10.0), "cfg": {"a": 1}}
    fileio.torch_save(tmp_path / "a.pt", obj)
    fileio.torch_save(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


# -- safe loading ---------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_planted_pickles_run_nothing_and_name_the_file(tmp_path):
    marker = tmp_path / "PWNED"
    torch.save({"ema": _Payload(marker)}, tmp_path / "network.pt")
    with pytest.raises(UserError) as err:
        fileio.torch_load(tmp_path / "network.pt")
    assert str(tmp_path / "network.pt") in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()

    from ambient_bench.datasets.cifar10 import read_batch
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}))
    with pytest.raises(UserError, match="data_batch_1"):
        read_batch(tmp_path / "data_batch_1")
    assert not marker.exists()

    from ambient_bench.metrics import features
    with pytest.raises(UserError, match="network.pt"):
        features.require_safe_weights(tmp_path / "network.pt")  # e.g. a planted Inception weights file
    assert not marker.exists()
    # cached reference features in the shared runs folder load as plain arrays only
    import numpy as np
    from ambient_bench.components import ImageSet
    from ambient_bench.metrics.fd_digits import FDDigits
    metric = FDDigits(epochs=1)
    reference = ImageSet(images=torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8), labels=torch.arange(40) % 10)
    metric.setup(reference, tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    metric.compute(reference.images, reference, tmp_path, cache)
    [cached] = cache.glob("features-*.npy")
    with open(cached, "wb") as f:
        np.save(f, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    again = metric.compute(reference.images, reference, tmp_path, cache)  # recomputed, never unpickled
    assert not marker.exists() and again == metric.compute(reference.images, reference, tmp_path, cache)
    assert np.load(cached, allow_pickle=False).dtype == np.float64
    # genuine files still load
    fileio.torch_save(tmp_path / "ok.pt", {"w": torch.ones(2)})
    assert fileio.torch_load(tmp_path / "ok.pt")["w"].sum() == 2


# -- contained paths, permissions -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", ""])
def test_suite_and_table_ids_are_names(tmp_path, write_suite, capsys, name):
    suite = write_suite(CELL.format(name=json.dumps(name), results=tmp_path / "results"))
    code, _, err = _cli(capsys, "plan", str(suite), "--runs", str(tmp_path / "runs"))
    assert "is not a name" in _one_line_error(code, err) and "suite.yaml:1" in err
    spec = tmp_path / "t.yaml"
    spec.write_text(f"id: {json.dumps(name)}\ntitle: t\ncolumns: {{metric: fd_digits}}\n")
    suite = write_suite(CELL.format(name="ok", results=tmp_path / "results") + "tables: [t.yaml]\n")
    code, _, err = _cli(capsys, "plan", str(suite), "--runs", str(tmp_path / "runs"))
    assert "is not a name" in _one_line_error(code, err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.write_text(tmp_path / "results.csv", "a\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.csv").stat().st_mode) == 0o644


# -- every bad input in one line ------------------------------------------------------------------

BAD = {
    "infinite duration": ("duration_kimg: 0.2", "duration_kimg: .inf", "must be a finite number"),
    "infinite lr": ("batch: 32,", "batch: 32, lr: .inf,", "must be a finite number"),
    "huge batch": ("batch: 32,", "batch: 1e20,", "batch"),
    "huge sample count": ("num: 32,", "num: 1e12,", "num"),
    "python tag on a list": ("channel_mult: [1]", "channel_mult: !!python/tuple [1]", "!!python/tuple"),
    "python tag on a mapping": ("network: {", "network: !!python/object:os.system {", "!!python/object"),
    "deep nesting": ("channel_mult: [1]", "channel_mult: " + "[" * 3000 + "]" * 3000, "nested"),
    "unused parameter": ("method: clean_only", "method: {name: ambient_o, sigma_min: 1, quality_top_fraction: 0.3}",
                         "does not read quality_top_fraction"),
    "exclude matching no cell": ("method: clean_only", "method: clean_only\ngrid: {train.seed: [0, 1]}\n"
                                 "exclude: [{train.seed: 5}]\ndefaults2:", "matches no cell"),
    "missing folder": ("dataset: {name: digits, resolution: 8}",
                       "dataset: {name: image_folder, path: no_such_folder, resolution: 8}", "suite.yaml:4"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_suites_exit_2_in_one_line(tmp_path, write_suite, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    old, new, expected = BAD[case]
    text = CELL.format(name="bad", results=tmp_path / "results")
    assert old in text
    text = text.replace(old, new, 1)
    if "defaults2:" in text:  # the grid and exclude go at the top level, after the defaults
        head, tail = text.split("method: clean_only\ngrid:", 1)
        extra, rest = tail.split("defaults2:", 1)
        text = head + "method: clean_only" + rest + "grid:" + extra
    suite = write_suite(text)
    for command in ("plan", "run"):
        code, _, err = _cli(capsys, command, str(suite), "--runs", str(tmp_path / "runs"))
        assert expected in _one_line_error(code, err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_laughs_non_utf8_and_unwritable_folders(tmp_path, write_suite, capsys):
    laughs = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    suite = write_suite("suite: s\n" + laughs)
    code, _, err = _cli(capsys, "plan", str(suite))
    assert "expands to more than" in _one_line_error(code, err)
    suite.write_bytes(b"suite: s\ndescription: caf\xe9\n")
    code, _, err = _cli(capsys, "plan", str(suite))
    assert "not UTF-8" in _one_line_error(code, err) and ":2:" in err
    good = write_suite(CELL.format(name="ok", results=tmp_path / "results"))
    (tmp_path / "a_file").write_text("x")
    code, _, err = _cli(capsys, "run", str(good), "--runs", str(tmp_path / "a_file"))
    assert "is a file" in _one_line_error(code, err)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        code, _, err = _cli(capsys, "run", str(good), "--runs", str(tmp_path / "ro" / "runs"))
        assert "cannot be written" in _one_line_error(code, err)
    assert not (tmp_path / "results").exists()


# -- runs: corrupt outputs recomputed, NaN cells fail alone ------------------------------------------

def _stage_dir(runs, kind):
    return next(d for d in (runs / kind).iterdir() if not d.name.startswith("."))


@pytest.mark.slow
def test_corrupt_outputs_are_recomputed_never_served(tmp_path, write_suite, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    suite = write_suite(CELL.format(name="integrity", results=results))
    code, out, _ = _cli(capsys, "run", str(suite), "--runs", str(runs))
    assert code == 0, out
    first = numbers_of(results / "results.csv")
    network = _stage_dir(runs, "train") / "network.pt"
    annotations = _stage_dir(runs, "annotate") / "annotations.csv"
    network.write_bytes(network.read_bytes()[: network.stat().st_size // 2])     # halved
    annotations.write_text(annotations.read_text().replace("0", "1", 1))         # same size, other bytes
    (_stage_dir(runs, "sample") / ".samples.pt.x1y2.tmp").write_bytes(b"left by a kill")
    code, out, _ = _cli(capsys, "plan", str(suite), "--runs", str(runs))
    assert code == 0 and "1 corrupt" in out and f"{network} has" in out            # sizes: always
    code, out, _ = _cli(capsys, "plan", str(suite), "--runs", str(runs), "--verify")
    assert "2 corrupt" in out and f"{annotations} changed" in out                   # hashes: on --verify
    (_stage_dir(runs, "evaluate") / "DONE").write_text("")                          # an emptied marker
    code, out, _ = _cli(capsys, "run", str(suite), "--runs", str(runs))
    assert code == 0, out
    corrupt = [line for line in out.splitlines() if line.startswith("corrupt:")]
    assert len(corrupt) == 3 and any("annotations.csv changed" in line and "3 stages that read it" in line
                                     for line in corrupt)
    assert "ran 4 stages, reused 2" in out  # annotate, train, sample, evaluate; mix and metric setup kept
    assert numbers_of(results / "results.csv") == first  # recomputed, the same numbers
    assert not list(runs.rglob("*.tmp"))
    code, out, _ = _cli(capsys, "plan", str(suite), "--runs", str(runs), "--verify")
    assert "corrupt:" not in out and " corrupt)" not in out and "6 done" in out


@pytest.mark.slow
def test_a_diverging_cell_fails_alone_and_reaches_no_table(tmp_path, write_suite, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    suite = write_suite(CELL.format(name="nan", results=results) + "grid: {train.lr: [1.0e+6, 2.0e-3]}\n")
    code, out, err = _cli(capsys, "run", str(suite), "--runs", str(runs))
    assert code == 1 and "Traceback" not in out + err
    summary = out[out.index("1 stages failed"):].splitlines()
    assert summary[0].startswith("1 stages failed (2 more not run") and len(summary) == 2
    assert summary[1].startswith("  train ") and "training diverged at step" in summary[1]
    frame = (results / "results.csv").read_text().splitlines()
    assert len(frame) > 1 and all(row.startswith("nan,train.lr=0.002,") for row in frame[1:])  # healthy cell only
    status = json.loads((runs / "train" / summary[1].split()[1].rstrip(":") / "status.json").read_text())
    assert status["state"] == "failed" and "TrainingDiverged" in status["traceback"]


def test_a_recipe_change_reaches_exactly_the_stages_that_read_it(monkeypatch, write_suite, tmp_path):
    from ambient_bench.config.schema import ComponentRef
    from ambient_bench.engine.cells import cell_stages
    from ambient_bench.params import ParamError
    from ambient_bench.registry import ANNOTATORS, OBJECTIVES

    cell = load_suite(write_suite(CELL.format(name="keys", results=tmp_path / "results"))).cells[0].config
    base = {"name": "ambient_o", "sigma_min": 1.0}

    def keys(**method):
        cfg = {**cell, "method": ComponentRef("method").resolve({**base, **method}, ("method",))}
        return {name: stage.key for name, stage in cell_stages(cfg).items()}

    reference = keys()
    objective = keys(weight_clip=2)  # the objective's parameter: retrain, but do not annotate again
    assert objective["annotate"] == reference["annotate"] and objective["mix"] == reference["mix"]
    assert objective["train"] != reference["train"] and objective["sample"] != reference["sample"]
    annotator = keys(sigma_min=2.0)  # the annotator's: annotate again, and everything after it
    assert annotator["mix"] == reference["mix"]
    assert annotator["annotate"] != reference["annotate"] and annotator["train"] != reference["train"]
    monkeypatch.setattr(OBJECTIVES.get("ambient"), "version", 99)  # a component's version: its stages only
    bumped = keys()
    assert bumped["annotate"] == reference["annotate"] and bumped["train"] != reference["train"]
    monkeypatch.undo()
    monkeypatch.setattr(ANNOTATORS.get("fixed"), "version", 99)
    assert keys()["annotate"] != reference["annotate"] and keys()["mix"] == reference["mix"]
    monkeypatch.undo()
    monkeypatch.setattr(ANNOTATORS.get("classifier"), "version", 99)  # an annotator the recipe did not choose
    assert keys() == reference
    with pytest.raises(ParamError, match="does not read epsilon with annotate: fixed"):
        keys(epsilon=0.1)  # a parameter the chosen recipe does not read is an error, not a silent no-op
