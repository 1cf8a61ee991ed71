"""Issue 29, items 5, 9, 10 (and the SLURM newline of 6, the table fmt of 7, the CIFAR batch of 12): every bad
input is exit 2 from ``plan`` in one line naming the key or file, before any work, and nothing is written under
--runs. In-process ``plan`` calls on an 8 px suite: a few seconds in all."""
from __future__ import annotations

import pickle
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHORTEST_CELL

from ambient_bench import cli

SUITE = SHORTEST_CELL.replace("{name}", "bad")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _cifar(root: Path, planted: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = {b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10))}
        if i == 3:
            batch = {b"data": _Payload(planted), b"labels": [0]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))


# case → (suite edit (old, new), several, or None, text appended to the suite, files to make, extra arguments, what the
# line must name); ``{tmp}`` is the test's folder
FOLDER = ("dataset: {name: digits, resolution: 8}", "dataset: {name: image_folder, path: {tmp}/images, resolution: 8}")
CASES = {
    "defaults: unknown method every cell replaces": (
        ("method: clean_only", "method: ambinet_o"), "grid:\n  method: [clean_only, all_data]\n", None, [],
        "defaults.method.name"),
    "defaults: negative blur sigma every cell replaces": (
        ("sigma: 0.6", "sigma: -1"), "grid:\n  mix.corruption.sigma: [0.6, 1.0]\n", None, [],
        "defaults.mix.corruption.sigma"),
    "defaults: a whole replaced section is checked": (
        ("sigma: 0.6", "sigma: -1"), "grid:\n  mix.corruption: [{name: gaussian_blur, sigma: 0.6}]\n", None, [],
        "defaults.mix.corruption.sigma"),
    "slurm: newline in a suite's partition": (
        None, 'resources:\n  sample: {partition: "gpu\\ntouch pwned #"}\n', None, [], "resources.sample.partition"),
    "slurm: space in an override's qos": (None, "", None, ["resources.train.qos=a b"], "resources.train.qos"),
    "slurm: shell characters in an account": (
        None, "resources:\n  all: {account: '$(touch pwned)'}\n", None, [], "resources.all.account"),
    "table: fmt {:d} on a float": (None, "tables: [t.yaml]\n", ("table", "{:d}"), [], "fmt"),
    "table: fmt with a lone brace": (None, "tables: [t.yaml]\n", ("table", "{"), [], "fmt"),
    "table: fmt with no number": (None, "tables: [t.yaml]\n", ("table", "FD"), [], "fmt"),
    "table: columns.label that cannot format": (None, "tables: [t.yaml]\n", ("table", "label"), [], "columns.label"),
    "table: a row key no result has": (None, "tables: [t.yaml]\n", ("table", "key"), [], "rows.key"),
    "absurd: resolution 100000": (("resolution: 8", "resolution: 100000"), "", None, [], "dataset.resolution"),
    "absurd: model_channels 1e8": (("model_channels: 8", "model_channels: 1e8"), "", None, [],
                                   "network.model_channels"),
    "absurd: a sampler batch of 10M 64 px images": (
        (("resolution: 8", "resolution: 64"), ("num: 16,", "num: 10000000, batch: 10000000,")), "", None, [],
        "sample.batch"),
    "absurd: blur sigma 1e300": (("sigma: 0.6", "sigma: 1e300"), "", None, [], "sigma"),
    "absurd: blur sigma 1e6": (("sigma: 0.6", "sigma: 1.0e6"), "", None, [], "sigma"),
    "absurd: clean_only on an empty clean pool": (("clean_fraction: 0.5", "clean_fraction: 0"), "", None, [],
                                                  "mix.clean_fraction"),
    "data: an unreadable image in an image_folder": (FOLDER, "", ("images", "bad.png"), [], "bad.png"),
    "data: a cut-short image in an image_folder": (FOLDER, "", ("images", "cut.png"), [], "cut.png"),
    "data: a planted CIFAR-10 batch": (
        ("dataset: {name: digits, resolution: 8}", "dataset: {name: cifar10, root: {tmp}/cifar}"), "",
        ("cifar", ""), [], "data_batch_3"),
    "runs: under /proc": (None, "", None, ["--runs", "/proc/ambient_bench_runs"], "--runs"),
    "runs: under /sys": (None, "", None, ["--runs", "/sys/ambient_bench_runs"], "--runs"),
    "runs: below a file": (None, "", None, ["--runs", "{tmp}/suite.yaml/runs"], "--runs"),
}
TABLES = {"{:d}": "fmt: '{:d}'", "{": "fmt: '{'", "FD": "fmt: FD", "label": "fmt: '{:.2f}'", "key": "fmt: '{:.2f}'"}


def _make(tmp: Path, files: tuple | None) -> None:
    if files is None:
        return
    kind, what = files
    if kind == "table":
        rows = "{key: method.nmae}" if what == "key" else "{}"
        columns = "columns: {key: mix.clean_fraction, label: '{:d}'}\n" if what == "label" else ""
        (tmp / "t.yaml").write_text(f"id: t\ntitle: t\nrows: {rows}\n{columns}values: [{{quantity: fd_digits, "
                                    f"label: FD, {TABLES[what]}}}]\n")
    elif kind == "images":
        _images(tmp / "images", 4)
        good = (tmp / "images" / "000.png").read_bytes()
        (tmp / "images" / what).write_bytes(b"not an image at all" if what == "bad.png" else good[:60])
    elif kind == "cifar":
        _cifar(tmp / "cifar", tmp / "PWNED")


def _one_line(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert names in err, err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_from_plan_before_any_work(tmp_path, capsys, monkeypatch, case):
    edit, appended, files, extra, names = CASES[case]
    monkeypatch.chdir(tmp_path)
    text = textwrap.dedent(SUITE).format(results=tmp_path / "results").lstrip()
    for old, new in (edit if edit and isinstance(edit[0], tuple) else [edit] if edit else []):
        assert old in text
        text = text.replace(old, new.replace("{tmp}", str(tmp_path)), 1)
    (tmp_path / "suite.yaml").write_text(text + appended.replace("{tmp}", str(tmp_path)))
    _make(tmp_path, files)
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    runs = [] if "--runs" in extra else ["--runs", str(tmp_path / "runs")]
    overrides = [a for a in extra if "=" in a]
    options = [a for a in extra if a not in overrides]
    capsys.readouterr()
    code = cli.main(["plan", str(tmp_path / "suite.yaml"), *overrides, *options, *runs])
    _one_line(code, capsys.readouterr().err, names)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    assert not (tmp_path / "PWNED").exists()
    if case == "data: a planted CIFAR-10 batch":  # run refuses it as plan does, before any stage (was exit 1)
        code = cli.main(["run", str(tmp_path / "suite.yaml"), "--workers", "2", *runs])
        _one_line(code, capsys.readouterr().err, names)
        assert not (tmp_path / "runs").exists() and not (tmp_path / "PWNED").exists()


def test_cluster_file_values_are_slurm_names(tmp_path, capsys, monkeypatch):
    """The cluster file's partition, account and qos (and its partitions' names) are checked like the suite's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suite.yaml").write_text(textwrap.dedent(SUITE).format(results=tmp_path / "results").lstrip())
    for bad, names in (('partition: "gpu\\ntouch pwned #"', "partition"), ("account: 'a;b'", "account"),
                       ("partitions: {'gpu x': {max_time_min: 10}}", "partitions")):
        (tmp_path / "cluster.yaml").write_text(bad + "\n")
        code = cli.main(["run", str(tmp_path / "suite.yaml"), "--launcher", "slurm", "--dry-run", "--cluster",
                         str(tmp_path / "cluster.yaml"), "--runs", str(tmp_path / "runs")])
        _one_line(code, capsys.readouterr().err, names)
        assert not (tmp_path / "runs").exists()


def test_good_values_still_pass(tmp_path, capsys, monkeypatch):
    """What the checks above must not refuse: a valid defaults value under a grid, SLURM constraints with & and |,
    a signed-free fmt, a column key reaching into a component (mix.corruption.sigma)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text("id: t\ntitle: t\nrows: {params: [{key: mix.corruption.sigma, header: s}]}\n"
                                     "columns: {key: train.seed, label: 'seed {}'}\n"
                                     "values: [{quantity: fd_digits, label: FD, fmt: '{:.3g}'}]\n")
    text = textwrap.dedent(SUITE).format(results=tmp_path / "results").lstrip()
    (tmp_path / "suite.yaml").write_text(text + "tables: [t.yaml]\ngrid:\n  mix.corruption.sigma: [0.6, 1.0]\n"
                                         "resources:\n  all: {constraint: 'a100|h100', account: my-lab_1}\n")
    code = cli.main(["plan", str(tmp_path / "suite.yaml"), "--runs", str(tmp_path / "runs")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert not (tmp_path / "runs").exists()
