"""Headless Chromium for the report-page tests: find (or install) it, and measure a page's layout."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")

# Run on load in a copy of the page: the page's width and height, and every element whose right edge passes
# the viewport unless a scroll container (overflow-x auto/scroll/hidden) holds it.
MEASURE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const width = document.documentElement.clientWidth;
  const clipped = (el) => { for (let p = el.parentElement; p; p = p.parentElement) {
    if (["auto", "scroll", "hidden"].includes(getComputedStyle(p).overflowX)) return true; } return false; };
  const over = Array.from(document.body.querySelectorAll("*")).filter(
    (el) => el.getBoundingClientRect().right > width + 0.5 && !clipped(el))
    .map((el) => el.tagName.toLowerCase() + (el.className ? "." + el.className : ""));
  const broken = Array.from(document.images).filter((i) => !(i.complete && i.naturalWidth > 0)).length;
  const out = {scrollWidth: document.documentElement.scrollWidth, clientWidth: width,
               height: document.documentElement.scrollHeight, overflowing: over.slice(0, 20),
               images: document.images.length, broken: broken};
  document.body.setAttribute("data-layout", JSON.stringify(out));
}, 0));
</script>"""


def chromium() -> str:
    """The headless browser's path; installs Debian's chromium when missing and apt-get can (as root), else
    skips with the reason."""
    for name in NAMES:
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        for name in NAMES:
            if shutil.which(name):
                return shutil.which(name)
    pytest.skip("no headless Chromium on this machine and `apt-get install chromium` could not install it "
                "(Debian: apt-get install chromium)")


def browser(page: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=5000", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def measure(page: Path, width: int = 1400) -> tuple[dict, list[str]]:
    """(layout of ``page`` at a ``width``-px viewport, the console lines it logged). The page is measured as a
    copy beside itself (its relative image paths kept), with MEASURE appended."""
    probe = page.with_name(f".measure_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    try:
        dom = browser(probe, "--dump-dom", f"--window-size={width},1000")
    finally:
        probe.unlink()
    found = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-500:] + dom.stderr[-1000:]
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return layout, console
