"""Open every committed report page (results/<suite>/index.html) in headless Chromium: check that every
image loads and the console stays silent, and write results/<suite>/screenshot.png.

    python benchmarks/tools/report_screenshots.py            # needs chromium (Debian: apt-get install chromium)
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "results"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--hide-scrollbars"]


def main() -> int:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        print("no Chromium found (Debian: apt-get install chromium)")
        return 2
    problems = 0
    for page in sorted(RESULTS.glob("*/index.html")):
        dom = subprocess.run([browser, *FLAGS, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                             timeout=120)
        console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
        loaded = 'data-images="ok"' in dom.stdout
        shot = page.parent / "screenshot.png"
        subprocess.run([browser, *FLAGS, f"--screenshot={shot}", "--window-size=1400,2600", page.as_uri()],
                       capture_output=True, timeout=120)
        status = "ok" if loaded and not console else f"images {'ok' if loaded else 'BROKEN'}, {len(console)} console"
        problems += status != "ok"
        print(f"{page.parent.name}: {status}; {shot.relative_to(RESULTS.parent)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
