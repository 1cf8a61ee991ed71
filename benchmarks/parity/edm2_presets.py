"""Table 1's per-metric sampling settings against EDM2's own presets (``generate_images.py`` ``config_presets``).

The paper's EDM2 numbers come from EDM2's released presets: each metric at its own post-hoc EMA width and
guidance. This reads the preset table from the user's EDM2 checkout (parsed as text: importing
generate_images.py needs click and the dnnlib of that checkout) and compares, for XS and XXL with and
without guidance, the (guidance, σ_rel, guide σ_rel) that our Table 1 suite draws FID's and FD_DINOv2's
samples with (``evaluate.per_metric_sample``), cell by cell.

    python benchmarks/parity/edm2_presets.py --edm2 PATH
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.parity.peers import failed_row, parse_peers, print_rows

NEEDS = ("edm2",)
REPO = Path(__file__).resolve().parents[2]
PRESET = re.compile(r"'edm2-img512-(xs|xxl)(-guid)?-(fid|dino)':\s*dnnlib\.EasyDict\(net=f'[^']*-(\d\.\d+)\.pkl'"
                    r"(?:,\s*gnet=f'[^']*-(\d\.\d+)\.pkl',\s*guidance=(\d\.\d+))?")
METRIC = {"fid": "fid", "dino": "fd_dinov2"}


def edm2_presets(root: Path) -> dict[tuple[str, bool, str], tuple[float, float, float | None]]:
    """(preset, guided, metric) -> (guidance, σ_rel, guide σ_rel) from EDM2's generate_images.py."""
    text = (root / "generate_images.py").read_text()
    found = {}
    for size, guided, metric, sigma_rel, guide_rel, guidance in PRESET.findall(text):
        found[(f"edm2_{size}", bool(guided), METRIC[metric])] = (
            float(guidance) if guidance else 1.0, float(sigma_rel), float(guide_rel) if guide_rel else None)
    return found


def our_settings() -> dict[tuple[str, bool, str], set[tuple[float, float, float | None]]]:
    """The same keys from the Table 1 suite's cells: the settings each metric's samples are drawn with."""
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.cells import metric_samples

    ours: dict[tuple[str, bool, str], set] = {}
    for cell in load_suite(REPO / "benchmarks/paper/table1_imagenet512.yaml").cells:
        cfg = cell.config
        own = metric_samples(cfg)
        guided = cfg["sample"]["guidance"] != 1
        for metric in ("fid", "fd_dinov2"):
            s = own.get(metric, cfg["sample"])
            setting = (float(s["guidance"]), float(s["ema_sigma_rel"]),
                       None if s["guidance"] == 1 else float(s["guide_sigma_rel"]))
            ours.setdefault((cfg["network"]["preset"], guided, metric), set()).add(setting)
    return ours


def run(peers: dict[str, Path]) -> list[dict]:
    try:
        theirs, ours = edm2_presets(peers["edm2"]), our_settings()
    except Exception as error:  # a peer checkout of another layout: say so in the table
        return [failed_row("EDM2 per-metric presets", error)]
    rows = []
    for key in sorted(theirs):
        preset, guided, metric = key
        mine = ours.get(key, set())
        rows.append({"check": f"Table 1 {preset} {'CFG' if guided else 'no CFG'} {metric}: (w, σ_rel, guide σ_rel)",
                     "value": f"ours {sorted(mine)} | EDM2 {theirs[key]}", "bound": None,
                     "ok": mine == {theirs[key]}, "note": "generate_images.py config_presets; every model row"})
    if len(rows) != 8:
        rows.append({"check": "EDM2 per-metric presets found", "value": len(rows), "bound": None, "ok": False,
                     "note": "expected 8 (XS, XXL × no CFG, CFG × FID, FD_DINOv2)"})
    return rows


if __name__ == "__main__":
    raise SystemExit(print_rows(run(parse_peers(__doc__.splitlines()[0], NEEDS))))
