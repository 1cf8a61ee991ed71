"""Issue 29: corruptions of every artifact kind, each through both `plan --verify` and `run`.

One undisturbed run is shared; every scenario damages a copy of its store (and of the per-user caches),
then asserts: `plan --verify` flags exactly the stages that `run` recomputes, `run` restores the
undisturbed numbers (exit 0, no traceback), and a second `plan --verify` is clean. Caches outside
stage folders (reference features, the manifest cache) are never flagged as stages: a bad entry is
recomputed with one line when read.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from ambient_bench import cli, fileio

SUITE = """
suite: faults
results_dir: {root}/results
defaults:
  dataset: {{name: digits, resolution: 8, classes: [0, 1, 2]}}
  mix: {{ood: [{{name: image_folder, path: {root}/ood, resolution: 8}}], clean_fraction: 0.5,
         corruption: {{name: gaussian_blur, sigma: 0.6}}}}
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 16, duration_kimg: 0.016, checkpoint_kimg: 0.016}}
  sample: {{num: 16, steps: 2}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
"""


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _numbers(results: Path) -> str:
    import pandas as pd

    from ambient_bench.results.collect import PROVENANCE

    return pd.read_csv(results / "results.csv").drop(columns=list(PROVENANCE), errors="ignore").to_csv(index=False)


def _flagged(out: str) -> set[tuple[str, str]]:
    """(kind, key prefix) of every `corrupt: stage KIND KEY: ...` line."""
    return {tuple(line.split()[2:4]) for line in out.splitlines() if line.startswith("corrupt: stage ")}


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    root = tmp_path_factory.mktemp("undisturbed")
    rng = np.random.default_rng(0)
    (root / "ood").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "ood" / f"{i:03d}.png")
    (root / "suite.yaml").write_text(SUITE.format(root=root))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMBIENT_BENCH_CACHE", str(root / "cache"))
        code, out, err = _cli("run", str(root / "suite.yaml"), "--runs", str(root / "runs"))
    assert code == 0, out + err
    return root, _numbers(root / "results")


def _stage(runs: Path, kind: str) -> Path:
    [d] = [d for d in (runs / kind).iterdir() if not d.name.startswith(".")]
    return d


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _swap_network(path: Path) -> None:
    """A valid network file of another model: the same structure, other weights."""
    saved = fileio.torch_load(path)
    for tensor in saved["ema"].values():
        if torch.is_floating_point(tensor):
            tensor.mul_(1.5)
    fileio.torch_save(path, saved)


def _key(d: Path) -> str:
    return json.loads((d / "stage.json").read_text())["key"]


def _refstats(runs: Path) -> Path:
    [npy] = (runs / "_refstats").glob("features-*.npy")
    return npy


def _scale_refstats(runs: Path) -> None:  # the reproduction: a cached array multiplied by 1.5
    path = _refstats(runs)
    scaled = np.load(path) * 1.5
    with open(path, "wb") as f:
        np.save(f, scaled)
    shutil.rmtree(_stage(runs, "evaluate"))  # the evaluate stage runs again and reads the cache


def _pickle_refstats(runs: Path) -> None:
    path = _refstats(runs)
    with open(path, "wb") as f:
        np.save(f, np.array([{"not": "an array"}], dtype=object), allow_pickle=True)
    shutil.rmtree(_stage(runs, "evaluate"))


def _truncate_refstats(runs: Path) -> None:
    path = _refstats(runs)
    path.write_bytes(path.read_bytes()[:100])
    shutil.rmtree(_stage(runs, "evaluate"))


def _unrecorded_refstats(runs: Path) -> None:
    _refstats(runs).with_suffix(".json").unlink()
    shutil.rmtree(_stage(runs, "evaluate"))


def _manifest(cache: Path) -> Path:
    [path] = (cache / "manifests").glob("*.json")
    return path


def _edit_manifest_entry(cache: Path) -> None:
    saved = json.loads(_manifest(cache).read_text())
    name = sorted(saved["entries"])[0]
    saved["entries"][name][-1] = "0" * 64  # a wrong hash for an unchanged image
    _manifest(cache).write_text(json.dumps(saved))


def _done(d: Path, text: str) -> None:
    (d / "DONE").write_text(text)


# id → (damage(runs, cache), stage kinds `plan --verify` and `run` must flag, stages `run` must run, a line)
Damage = Callable[[Path, Path], None]
SCENARIOS: dict[str, tuple[Damage, set[str], int, str]] = {
    "mixed.pt byte flipped": (lambda r, c: _flip_byte(_stage(r, "mix") / "mixed.pt"), {"mix"}, 5, ""),
    "annotations.csv edited": (lambda r, c: (_stage(r, "annotate") / "annotations.csv").write_text(
        (_stage(r, "annotate") / "annotations.csv").read_text().replace("0", "1", 1)), {"annotate"}, 4, ""),
    "network.pt swapped for a valid other": (lambda r, c: _swap_network(_stage(r, "train") / "network.pt"),
                                             {"train"}, 3, ""),
    "key-only DONE with a swapped network": (lambda r, c: (_swap_network(_stage(r, "train") / "network.pt"),
                                                           _done(_stage(r, "train"), _key(_stage(r, "train")) + "\n")),
                                             {"train"}, 3, ""),
    "samples.pt byte flipped": (lambda r, c: _flip_byte(_stage(r, "sample") / "samples.pt"), {"sample"}, 2, ""),
    "samples.png removed": (lambda r, c: (_stage(r, "sample") / "samples.png").unlink(), {"sample"}, 2, ""),
    "stage.json edited": (lambda r, c: (_stage(r, "sample") / "stage.json").write_text(
        (_stage(r, "sample") / "stage.json").read_text().replace('"steps": 2', '"steps": 3')), {"sample"}, 2, ""),
    "a file added to a done stage": (lambda r, c: shutil.copy(_stage(r, "sample") / "samples.png",
                                                              _stage(r, "sample") / "samples-2.png"),
                                     {"sample"}, 2, ""),
    "classifier.pt byte flipped": (lambda r, c: _flip_byte(_stage(r, "metric_setup") / "classifier.pt"),
                                   {"metric_setup"}, 2, ""),
    "summary.json number edited": (lambda r, c: (_stage(r, "evaluate") / "summary.json").write_text(
        (_stage(r, "evaluate") / "summary.json").read_text().replace('"num_samples": 16', '"num_samples": 61')),
        {"evaluate"}, 1, ""),
    "metrics.json truncated": (lambda r, c: (_stage(r, "evaluate") / "metrics.json").write_text("{"),
                               {"evaluate"}, 1, ""),
    "DONE with a malformed files entry": (lambda r, c: _done(_stage(r, "evaluate"), json.dumps(
        {"key": _key(_stage(r, "evaluate")), "files": {"metrics.json": "12"}})), {"evaluate"}, 1, ""),
    "DONE with a path outside the stage": (lambda r, c: _done(_stage(r, "evaluate"), json.dumps(
        {"key": _key(_stage(r, "evaluate")), "files": {"../../x": [1, "0" * 64]}})), {"evaluate"}, 1, ""),
    "DONE listing no files": (lambda r, c: _done(_stage(r, "evaluate"), json.dumps(
        {"key": _key(_stage(r, "evaluate")), "files": {}})), {"evaluate"}, 1, ""),
    "DONE key-only": (lambda r, c: _done(_stage(r, "evaluate"), _key(_stage(r, "evaluate")) + "\n"),
                      {"evaluate"}, 1, ""),
    "DONE of another stage": (lambda r, c: shutil.copy(_stage(r, "sample") / "DONE", _stage(r, "evaluate") / "DONE"),
                              {"evaluate"}, 1, ""),
    "DONE not UTF-8": (lambda r, c: (_stage(r, "evaluate") / "DONE").write_bytes(b"\xff\xfe{"), {"evaluate"}, 1, ""),
    "status.json garbled": (lambda r, c: (_stage(r, "train") / "status.json").write_text("{garbled"), set(), 0, ""),
    "_refstats array scaled by 1.5": (lambda r, c: _scale_refstats(r), set(), 1, "recomputing them"),
    "_refstats array pickled": (lambda r, c: _pickle_refstats(r), set(), 1, "recomputing them"),
    "_refstats array truncated": (lambda r, c: _truncate_refstats(r), set(), 1, "recomputing them"),
    "_refstats record missing": (lambda r, c: _unrecorded_refstats(r), set(), 1, "recomputing them"),
    "manifest cache entry edited": (lambda r, c: _edit_manifest_entry(c), set(), 0, "hashing the files again"),
    "manifest cache garbled": (lambda r, c: _manifest(c).write_text("[1, 2"), set(), 0, "hashing the files again"),
}


def _no_report(suite, graph, store, results_dir: Path, frame) -> Path:
    """The HTML report's figures cost a second of CPU per run and read nothing the scenarios damage."""
    (Path(results_dir) / "index.html").write_text("")
    return Path(results_dir) / "index.html"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_verify_flags_exactly_what_run_recomputes(name, undisturbed, tmp_path, monkeypatch):
    root, numbers = undisturbed
    damage, kinds, ran, line = SCENARIOS[name]
    monkeypatch.setattr("ambient_bench.results.report.write_report", _no_report)
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    shutil.copytree(root / "runs", runs, symlinks=True)
    shutil.copytree(root / "cache", cache, symlinks=True)
    monkeypatch.setenv("AMBIENT_BENCH_CACHE", str(cache))
    damage(runs, cache)
    suite = ["run", str(root / "suite.yaml"), "--runs", str(runs), "--results", str(tmp_path / "results")]
    code, plain, plain_err = _cli("plan", *suite[1:4])  # markers and sizes only: never more than --verify finds
    assert code == 0 and "Traceback" not in plain + plain_err, plain + plain_err
    code, verify, err = _cli("plan", *suite[1:4], "--verify")
    assert code == 0 and "Traceback" not in verify + err, verify + err
    flagged = _flagged(verify)
    assert {kind for kind, _ in flagged} == kinds and _flagged(plain) <= flagged, verify
    code, out, run_err = _cli(*suite)
    assert code == 0 and "Traceback" not in out + run_err, out + run_err
    assert _flagged(out) == flagged, out
    assert f"ran {ran} stages" in out, out
    assert _numbers(tmp_path / "results") == numbers  # the undisturbed numbers, recomputed
    if line:
        said = plain_err + err + run_err
        assert sum(line in text for text in said.splitlines()) == 1, said  # said once
    code, again, err = _cli("plan", *suite[1:4], "--verify")
    assert code == 0 and "corrupt" not in again + err and " done, " in again.splitlines()[0], again


def test_the_manifest_cache_follows_a_same_size_rewrite_with_the_mtime_restored(tmp_path, monkeypatch):
    from ambient_bench.datasets import manifest

    monkeypatch.setenv("AMBIENT_BENCH_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "data" / "a.bin"
    image.parent.mkdir()
    image.write_bytes(b"first content")
    [first] = manifest.file_hashes(image.parent, [image])
    stat = image.stat()
    image.write_bytes(b"other content")  # the same size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime restored
    [second] = manifest.file_hashes(image.parent, [image])
    assert second == fileio.sha256_file(image) != first
    # an entry that is not one (here: no hash) is replaced, not kept
    path = next((tmp_path / "cache" / "manifests").glob("*.json"))
    saved = json.loads(path.read_text())
    saved["entries"]["a.bin"][-1] = "not a hash"
    saved["sha256"] = manifest._digest(saved["entries"])
    path.write_text(json.dumps(saved))
    assert manifest.file_hashes(image.parent, [image]) == [second]
    assert json.loads(path.read_text())["entries"]["a.bin"][-1] == second


def test_a_cached_pickle_is_never_loaded(tmp_path):
    """A planted object array in the reference cache is recomputed without being unpickled."""
    from ambient_bench.metrics import features

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    first, hit = features.cached_features(tmp_path, "c" * 16, {"x": 1}, lambda: np.ones((3, 2)))
    assert not hit
    [path] = tmp_path.glob("features-*.npy")
    path.write_bytes(pickle.dumps(np.array([Payload()], dtype=object)))
    again, hit = features.cached_features(tmp_path, "c" * 16, {"x": 1}, lambda: np.ones((3, 2)))
    assert not hit and not marker.exists() and (again == first).all()
    assert features.cached_features(tmp_path, "c" * 16, {"x": 1}, lambda: 1 / 0)[1]  # a sound entry: a hit
