"""The report page (issue 19): written by `run`, and it opens in a real browser with every image loaded."""
from __future__ import annotations

import re

import pytest

from browser import browser, measure
from conftest import REPO, run_cli


@pytest.mark.slow
def test_the_smoke_suites_report_opens_in_a_browser_with_every_image(tmp_path):
    result = run_cli("run", str(REPO / "benchmarks" / "smoke_cpu.yaml"), "--runs", str(tmp_path / "runs"),
                     "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr[-2000:]
    page = tmp_path / "results" / "index.html"
    text = page.read_text()
    images = re.findall(r'src="([^"]+)"', text)
    assert len(images) >= 8 and all((page.parent / src).is_file() for src in images)
    assert "table2a_fd_digits.png" in text and "training_loss.png" in text and "The paper's numbers" in text
    assert "git_commit" in text or "code_version" in text  # the provenance table
    dom = browser(page, "--dump-dom")
    assert 'data-images="ok"' in dom.stdout, dom.stdout[-500:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    layout, console = measure(page, width=1400)  # nothing past the width; the page reads in a few screens
    assert layout["scrollWidth"] <= layout["clientWidth"] and layout["overflowing"] == [], layout
    assert layout["height"] < 6000 and layout["broken"] == 0 and not console, (layout, console)
    shot = tmp_path / "screenshot.png"
    browser(page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.is_file() and shot.stat().st_size > 10_000
