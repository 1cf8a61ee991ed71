"""The figure of benchmarks/classifier_strength_cpu.yaml, from its committed results.csv.

    python benchmarks/tools/classifier_strength_figure.py [--results results/classifier_strength_cpu]

Per blur level: the mean classifier annotation σ̄_min against classifier strength (training length
and width), the fixed σ_min with the best FD marked as a dashed line (the optimum a classifier
should approach); below, the FD of the Ambient-o models against the same axis with the best fixed
annotation's FD, and the classifiers' held-out ROC-AUC at the lowest noise levels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STRENGTHS = [(10, 8, 1), (40, 16, 1), (160, 16, 1), (160, 32, 2)]  # kimg, channels, blocks (the suite's order)


def _strength(row: pd.Series) -> int:
    width = row.get("method.classifier.model_channels")
    blocks = row.get("method.classifier.num_blocks")
    key = (int(row["method.classifier.duration_kimg"]), int(width) if pd.notna(width) else 16,
           int(blocks) if pd.notna(blocks) else 1)
    return STRENGTHS.index(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/classifier_strength_cpu")
    args = parser.parse_args()
    folder = Path(args.results)
    df = pd.read_csv(folder / "results.csv")
    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    auc = bottom.twinx()
    labels = [f"{k} kimg\n{c} ch × {b}" for k, c, b in STRENGTHS]
    for colour, (sigma_b, group) in zip(("tab:blue", "tab:orange"), df.groupby("mix.corruption.sigma")):
        classifier = group[group["method.annotate"] == "classifier"].copy()
        classifier["strength"] = classifier.apply(_strength, axis=1)
        fixed = group[group["method.annotate"] == "fixed"]
        by = {q: classifier[classifier["quantity"] == q].sort_values("strength") for q in
              ("sigma_min_mean", "fd_digits", "classifier_auc_low")}
        fd_fixed = fixed[fixed["quantity"] == "fd_digits"].sort_values("value")
        best = fd_fixed.iloc[0]
        top.plot(by["sigma_min_mean"]["strength"], by["sigma_min_mean"]["value"], "o-", color=colour,
                 label=f"σ_B {sigma_b:g}: classifier σ̄_min")
        top.axhline(best["method.sigma_min"], color=colour, ls="--",
                    label=f"σ_B {sigma_b:g}: best single σ_min ({best['method.sigma_min']:g}, FD {best['value']:.1f})")
        bottom.plot(by["fd_digits"]["strength"], by["fd_digits"]["value"], "o-", color=colour,
                    label=f"σ_B {sigma_b:g}: Ambient-o FD_digits")
        bottom.axhline(best["value"], color=colour, ls="--", label=f"σ_B {sigma_b:g}: best single σ_min's FD")
        auc.plot(by["classifier_auc_low"]["strength"], by["classifier_auc_low"]["value"], "s:", color=colour,
                 alpha=0.6)
    auc.set(ylabel="held-out ROC-AUC (lowest σ), dotted", ylim=(0.45, 1.02))
    top.set(ylabel="mean annotation σ̄_min", title="Classifier strength against annotation (digits 16×16, "
                                                   "10% clean + 90% blurred)")
    bottom.set(ylabel="FD_digits ↓", xticks=range(len(STRENGTHS)), xticklabels=labels,
               xlabel="noise classifier (training length, width)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, lw=0.5)
        ax.legend(fontsize=7)
    path = folder / "classifier_strength.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
