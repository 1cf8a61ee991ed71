"""Issue 29 review findings: inputs that gave a generic `error: <Type>: ...` (exit 1) or a silent pass.

A results.csv with a stray quote or repeated rows is garbled (one line, exit 2); one missing a cell's rows
fails `tables --check` and warns in `tables`; a dangling link among a folder's images, a stage lock that is a
folder and a reference-statistics cache entry that is a folder are one line naming the path (exit 2).
"""
from __future__ import annotations

import os
import textwrap

import pytest

from conftest import SHORTEST_CELL

from ambient_bench import cli

SUITE = SHORTEST_CELL.replace("{name}", "review") + """
grid:
  train.seed: [0, 1]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-cell suite run once: (suite file, runs folder, results.csv, its text)."""
    root = tmp_path_factory.mktemp("review")
    suite = root / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE).format(results=root / "results"))
    assert cli.main(["run", str(suite), "--runs", str(root / "runs")]) == 0
    csv = root / "results" / "results.csv"
    return suite, root / "runs", csv, csv.read_text()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_a_stray_quote_or_repeated_rows_in_results_csv_are_garbled(finished, capsys):
    suite, runs, csv, text = finished
    header, *rows = text.rstrip("\n").split("\n")
    quoted = "\n".join([header, rows[0].replace("digits,8", '"digits,8', 1), *rows[1:]]) + "\n"
    repeated = "\n".join([header, *rows, *rows]) + "\n"
    try:
        for garble, what in ((quoted, "no quantity in line 2"), (repeated, f"line {len(rows) + 2} repeats")):
            csv.write_text(garble)
            for command in (["tables"], ["tables", "--check"], ["report"]):
                assert cli.main([*command, str(suite), "--runs", str(runs)]) == 2, (what, command)
                line = _one_line(capsys.readouterr().err)
                assert f"{csv} is empty or garbled ({what}" in line and f"ambient_bench run {suite}" in line
    finally:
        csv.write_text(text)


def test_a_cell_missing_from_results_csv_is_named(finished, capsys):
    suite, runs, csv, text = finished
    try:
        csv.write_text("".join(line for line in text.splitlines(True) if "train.seed=1" not in line))
        assert cli.main(["tables", str(suite), "--runs", str(runs)]) == 0
        assert "no row for cell train.seed=1 of review" in capsys.readouterr().err
        assert cli.main(["tables", "--check", str(suite), "--runs", str(runs)]) == 1  # its stages are done
        assert f"no row for cell train.seed=1 of review, done in {runs}" in capsys.readouterr().out
        # a cell the run store has not finished (failed, or runs elsewhere: committed results) only warns
        assert cli.main(["tables", "--check", str(suite), "--runs", str(runs.parent / "elsewhere")]) == 0
        assert "no row for cell train.seed=1" in capsys.readouterr().err
    finally:
        csv.write_text(text)
    assert cli.main(["tables", str(suite), "--runs", str(runs)]) == 0
    assert "no row" not in capsys.readouterr().err


def test_a_dangling_link_among_a_folders_images_is_one_line(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(images / f"{i}.png")
    (images / "dangling.png").symlink_to(tmp_path / "nonexistent")
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SHORTEST_CELL.replace("{name}", "link")).format(results=tmp_path / "results")
                     .replace("dataset: {name: digits, resolution: 8}",
                              f"dataset: {{name: image_folder, path: {images}, resolution: 8}}"))
    for command in ("plan", "run"):  # was FileNotFoundError (exit 1) from the manifest pass
        assert cli.main([command, str(suite), "--runs", str(tmp_path / "runs")]) == 2, command
        line = _one_line(capsys.readouterr().err)
        assert f"{images / 'dangling.png'} is not a readable image (a link to" in line
        assert "remove or replace it" in line
    assert not (tmp_path / "runs").exists()


def test_a_stage_lock_that_is_a_folder_is_one_line_and_left_alone(tmp_path):
    from ambient_bench.engine.locks import StageLock
    from ambient_bench.errors import UserError

    lock = tmp_path / "stage" / ".lock"
    lock.mkdir(parents=True)
    (lock / "inside").write_text("x")
    os.utime(lock, (1, 1))  # old: stale by its age (was IsADirectoryError unlinking '.lock.stale-<token>')
    with pytest.raises(UserError, match=rf"{lock} is a folder, not a stage lock; remove it \(`rm -r {lock}`\)"):
        StageLock(lock, timeout=1).acquire()
    assert sorted(p.name for p in lock.parent.iterdir()) == [".lock"] and (lock / "inside").is_file()


def test_a_refstats_entry_that_is_a_folder_is_removed_when_empty_else_named(tmp_path, capsys):
    import numpy as np

    from ambient_bench.errors import UserError
    from ambient_bench.metrics.features import cached_features

    def compute():
        return np.arange(6.0).reshape(2, 3)

    ident = {"extractor": "test", "count": 2}
    features, hit = cached_features(tmp_path, "abc", ident, compute)
    (npy,) = tmp_path.glob("features-*.npy")
    npy.unlink()
    npy.mkdir()  # an empty folder in its place (was IsADirectoryError at os.replace after "recomputing")
    features, hit = cached_features(tmp_path, "abc", ident, compute)
    assert not hit and npy.is_file() and np.array_equal(np.load(npy), compute())
    assert "recomputing" in capsys.readouterr().err
    npy.unlink()
    npy.mkdir()
    (npy / "kept").write_text("x")  # a folder with something in it is never removed
    with pytest.raises(UserError, match=rf"cached features {npy} is a folder, not a file; remove it"):
        cached_features(tmp_path, "abc", ident, compute)
    assert (npy / "kept").is_file()
