"""The parity scripts' command line, without the peers' code: one-line exit 2 on a missing or wrong
checkout, and run_all finds every check module of benchmarks/parity."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("annotation", "augmentation", "classifier", "constants", "edm2_presets", "loss", "networks", "sampler")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks/parity" / script), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("script", ["run_all.py", "networks.py"])
def test_missing_checkout_exits_2_in_one_line(script: str, tmp_path: Path) -> None:
    result = _run(script, "--edm", str(tmp_path / "nowhere"), "--edm2", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--edm ") and "git clone https://github.com/NVlabs/edm" in lines[0]


def test_wrong_checkout_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    result = _run("loss.py", "--edm", str(tmp_path), "--ambient-omni", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"--edm {tmp_path}: not a checkout of NVlabs/edm (no training/networks.py); "
        "get it with: git clone https://github.com/NVlabs/edm"]


def test_a_required_flag_left_out_exits_2() -> None:
    result = _run("classifier.py")
    assert result.returncode == 2 and "--ambient-omni PATH is required" in result.stderr


def test_run_all_lists_every_check_module() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.parity.run_all import check_modules

    modules = check_modules()
    assert set(CHECKS) <= set(modules)
    for name, module in modules.items():
        assert not isinstance(module, Exception), f"{name}: {module}"
        assert set(module.NEEDS) <= {"edm", "edm2", "ambient_omni"} and callable(module.run)


def test_run_all_without_any_checkout_skips_every_check() -> None:
    result = _run("run_all.py")
    assert result.returncode == 2
    skipped = [line.split(":")[0] for line in result.stdout.splitlines() if "skipped (needs" in line]
    assert set(CHECKS) <= set(skipped)
