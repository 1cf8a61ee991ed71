"""End to end: mixed pools, the user's own folders, missing paper datasets, the gallery."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def summaries(runs: Path, kind: str) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) | json.loads((d / "stage.json").read_text())
            for d in sorted((runs / kind).iterdir())]


def test_pool_with_two_corruptions_and_an_ood_source(tmp_path):
    runs = tmp_path / "runs"
    plan = run_cli("plan", "benchmarks/pool_cpu.yaml", "--runs", str(runs))
    assert plan.returncode == 0, plan.stderr
    assert "corruption gaussian_blur(sigma=1.0, truncate=4.0) | jpeg(quality=25)" in plan.stdout
    assert "+ OOD dead_leaves(" in plan.stdout
    run = run_cli("run", "benchmarks/pool_cpu.yaml", "--runs", str(runs), "--results", str(tmp_path / "results"))
    assert run.returncode == 0, run.stderr
    mixes = {len(s["reads"]["mix"]["ood"]): s for s in summaries(runs, "mix")}
    pool = mixes[1]
    assert pool["num_ood"] == 500 and sum(pool["per_corruption"].values()) == pool["num_corrupted"]
    assert all(count > 0 for count in pool["per_corruption"].values())
    assert mixes[0]["num_ood"] == 0 and mixes[0]["num_corrupted"] == 0  # clean-only's pool
    ambient = next(s for s in summaries(runs, "annotate") if s["resolved"]["method"]["name"] == "ambient_o")
    assert ambient["num_ood"] == 500 and ambient["sigma_max_mean"] == pytest.approx(0.2)
    assert "σ̄_tn^max" in (tmp_path / "results" / "pool.md").read_text()


def test_user_folders_run_every_method_without_synthetic_corruption(tmp_path):
    folders = tmp_path / "data"
    export = subprocess.run([sys.executable, "benchmarks/tools/export_example_folders.py", "--out", str(folders),
                             "--ood-count", "40"], cwd=REPO, capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    suite = (REPO / "benchmarks" / "user_folders_example.yaml").read_text()
    suite = suite.replace("data/example_folders", str(folders))
    suite = suite.replace("tables: [tables/pool.yaml]", f"tables: [{REPO / 'benchmarks' / 'tables' / 'pool.yaml'}]")
    suite = suite.replace("duration_kimg: 2.0", "duration_kimg: 0.5").replace("num: 200", "num: 64")
    path = tmp_path / "suite.yaml"
    path.write_text(suite)
    runs = tmp_path / "runs"
    run = run_cli("run", str(path), "--runs", str(runs), "--results", str(tmp_path / "results"))
    assert run.returncode == 0, run.stderr
    mix = summaries(runs, "mix")
    assert {m["reads"]["mix"]["corruption"] for m in mix} == {None}
    by_method = {s["resolved"]["method"]["name"]: s for s in summaries(runs, "annotate")}
    assert set(by_method) == {"clean_only", "all_data", "ambient_o", "filter_finetune"}
    assert by_method["filter_finetune"]["num_kept"] == 194  # fine-tuned on the high-quality folder alone
    assert by_method["clean_only"]["num_kept"] == 194
    assert by_method["all_data"]["num_kept"] == 1797 + 40
    assert by_method["ambient_o"]["num_corrupted"] == 1603 and by_method["ambient_o"]["num_ood"] == 40
    setup = summaries(runs, "metric_setup")[0]
    assert setup["num_reference"] == 194  # the metric's reference is the high-quality folder


def test_user_folders_insist_on_keeping_good_images_clean(tmp_path):
    suite = (REPO / "benchmarks" / "user_folders_example.yaml").read_text().replace(
        "mix: {clean_fraction: 1.0}", "mix: {clean_fraction: 0.5}")
    path = tmp_path / "suite.yaml"
    path.write_text(suite.replace("tables: [tables/pool.yaml]", ""))
    proc = run_cli("plan", str(path))
    assert proc.returncode == 2 and "set mix.clean_fraction: 1.0" in proc.stderr and "suite.yaml:" in proc.stderr


@pytest.mark.parametrize("dataset,url", [
    ("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("{name: ffhq, resolution: 64}", "https://github.com/NVlabs/ffhq-dataset"),
    ("{name: afhq, animal: dog}", "https://github.com/clovaai/stargan-v2"),
])
def test_missing_paper_datasets_fail_before_anything_runs(tmp_path, dataset, url):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        suite: paper_data
        defaults:
          dataset: {dataset}
          mix: {{corruption: {{name: gaussian_blur, sigma: 0.6}}}}
          method: all_data
          train: {{duration_kimg: 1}}
          evaluate: {{metrics: [fd_digits]}}
    """))
    env = {**os.environ, "AMBIENT_BENCH_DATA": str(tmp_path / "empty")}
    for command in ("plan", "run"):
        proc = subprocess.run([sys.executable, "-m", "ambient_bench", command, str(suite),
                               "--runs", str(tmp_path / "runs")],
                              cwd=REPO, env=env, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and url in proc.stderr and str(tmp_path / "empty") in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_gallery_picture(tmp_path):
    out = tmp_path / "gallery.png"
    proc = run_cli("show", "corruptions", "--dataset", "{name: digits, resolution: 16}", "--corruption", "jpeg",
                   "--corruption", "{name: motion_blur, severity: 3}", "--count", "5", "--cell", "32",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    picture = Image.open(out)
    assert picture.height == (1 + 6 + 1) * 34  # clean row + six JPEG qualities + one motion blur
    assert picture.width > 5 * 34
