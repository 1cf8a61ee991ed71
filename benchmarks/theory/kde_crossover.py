"""The paper's §4 argument, measured: diffusion at noise level sigma is a Gaussian kernel density
estimate with bandwidth sigma, so adding n2 samples of a wrong density q0 to n1 samples of the
target p0 trades variance (more samples) for bias (the wrong ones), and the bias shrinks with
sigma (Theorem 4.2: TV(P⊛N(0,σ²), Q⊛N(0,σ²)) ≤ TV(P, Q)·D/(2σ)). Beyond some sigma the biased
estimate wins: the paper's "switching point" t_n^min.

For a few 1-D settings on [0, 1] this script measures, over repeated draws:
- TV(p_σ, p̂_σ) of clean-only (n1 samples), all-data (n1 + n2) and Ambient-o (clean-only below
  the annotation level, all-data above it), with the annotation level where an optimal classifier
  between p_σ and q_σ falls to accuracy 0.5 + ε (ε = 0.05; Bayes accuracy = ½ + TV(p_σ, q_σ)/2);
- the crossover sigma* above which all-data beats clean-only, against that annotation level;
- the bias TV(p̃_σ, p_σ) of the mixture against Theorem 4.2's bound.

    python benchmarks/theory/kde_crossover.py   # writes results/theory/{kde_crossover.png,.md,.csv}

KDEs are evaluated from the samples binned at 0.0005 (a shift of at most 2.5% of the smallest
sigma, 0.01) on 1,500 points spanning [-6σ, 1 + 6σ] per sigma.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

BIN = 0.0005                                   # samples and densities on [0, 1] are binned this finely
CENTRES = np.arange(BIN / 2, 1.0, BIN)
SIGMAS = np.geomspace(0.01, 20.0, 45)
POINTS = 1500                                  # evaluation points per sigma, on [-6σ, 1 + 6σ]
EPSILON = 0.05                                 # the annotation threshold 0.5 + epsilon (paper §3.1)


def weights_of(dist: scipy.stats.rv_continuous) -> np.ndarray:
    """The density as probability per bin of [0, 1]."""
    mass = np.diff(dist.cdf(np.arange(0.0, 1.0 + BIN / 2, BIN)))
    return mass / mass.sum()


def high_frequency_defect(weights: np.ndarray, cycles: int = 8, depth: float = 0.9) -> np.ndarray:
    """p0·(1 + depth·sin(2π·cycles·x)), renormalised: a defect in the fine detail (like JPEG or noise)."""
    out = weights * (1 + depth * np.sin(2 * np.pi * cycles * CENTRES))
    return out / out.sum()


def blurred(weights: np.ndarray, width: float = 0.1) -> np.ndarray:
    """p0 ⊛ N(0, width²) kept on [0, 1] (the 1-D image of a blur: fine detail lost)."""
    kernel = scipy.stats.norm.pdf(CENTRES[:, None], loc=CENTRES[None, :], scale=width)
    out = kernel @ weights
    return out / out.sum()


TARGET = weights_of(scipy.stats.beta(2, 5))
SETTINGS = [  # (label, wrong density q0 as probability per bin, n1 clean, n2 wrong)
    ("high-frequency defect, 50 + 450", high_frequency_defect(TARGET), 50, 450),
    ("high-frequency defect, 200 + 1800", high_frequency_defect(TARGET), 200, 1800),
    ("blurred (width 0.1), 50 + 450", blurred(TARGET), 50, 450),
    ("shifted q0 = Beta(2.5, 4), 50 + 450", weights_of(scipy.stats.beta(2.5, 4)), 50, 450),
]


def draw(weights: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Samples of a binned density: a bin by its probability, then uniform within it."""
    bins = rng.choice(len(weights), size=shape, p=weights)
    return (bins + rng.random(shape)) * BIN


def histogram(samples: np.ndarray) -> np.ndarray:
    """Rows of samples as probability per bin (R × bins)."""
    bins = np.clip((samples / BIN).astype(int), 0, len(CENTRES) - 1)
    out = np.zeros((len(samples), len(CENTRES)))
    np.add.at(out, (np.repeat(np.arange(len(samples)), samples.shape[1]), bins.ravel()), 1.0 / samples.shape[1])
    return out


def smoothed(weights: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """(weights ⊛ N(0, σ²) on the points of sigma's grid, the grid spacing); rows are densities."""
    xs, dx = np.linspace(-6 * sigma, 1 + 6 * sigma, POINTS, retstep=True)
    kernel = scipy.stats.norm.pdf(xs[None, :], loc=CENTRES[:, None], scale=sigma)
    return weights @ kernel, dx


def tv(p: np.ndarray, q: np.ndarray, dx: float) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(axis=-1) * dx


def measure(wrong: np.ndarray, n1: int, n2: int, repeats: int, seed: int) -> dict[str, np.ndarray]:
    """TV to p_σ per draw and sigma of clean-only and all-data KDEs, plus the exact separation and bias."""
    rng = np.random.default_rng(seed)
    good, bad = draw(TARGET, (repeats, n1), rng), draw(wrong, (repeats, n2), rng)
    hist_clean, hist_all = histogram(good), histogram(np.concatenate([good, bad], axis=1))
    p0 = TARGET
    mixture = (n1 * p0 + n2 * wrong) / (n1 + n2)
    columns = {name: np.zeros((repeats, len(SIGMAS))) for name in ("clean", "all")}
    exact = {name: np.zeros(len(SIGMAS)) for name in ("separation", "bias")}
    for k, s in enumerate(SIGMAS):
        stack, dx = smoothed(np.vstack([p0, wrong, mixture, hist_clean, hist_all]), s)
        truth = stack[0]
        exact["separation"][k], exact["bias"][k] = tv(truth, stack[1], dx), tv(truth, stack[2], dx)
        columns["clean"][:, k] = tv(truth, stack[3:3 + repeats], dx)
        columns["all"][:, k] = tv(truth, stack[3 + repeats:], dx)
    start = 0.5 * np.abs(p0 - mixture).sum()  # TV(p0, p̃0) on the bins
    return {**columns, **exact, "bias_bound": np.minimum(1.0, start * 1.0 / (2 * SIGMAS))}  # D = 1: support [0, 1]


def crossover(clean: np.ndarray, everything: np.ndarray) -> float:
    """The smallest sigma of the grid from which on all-data's mean TV is below clean-only's."""
    better = everything.mean(0) < clean.mean(0)
    if not better[-1]:
        return float("nan")
    last_worse = np.nonzero(~better)[0]
    return float(SIGMAS[last_worse[-1] + 1] if len(last_worse) else SIGMAS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="results/theory")
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], []
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for i, ((label, q0, n1, n2), ax) in enumerate(zip(SETTINGS, axes.flat)):
        m = measure(q0, n1, n2, args.repeats, seed=i)
        below = m["separation"] <= 2 * EPSILON  # Bayes accuracy ≤ 0.5 + epsilon
        annotated = float(SIGMAS[np.argmax(below)]) if below.any() else float("nan")
        ambient = np.where(SIGMAS >= annotated, m["all"], m["clean"])
        sigma_star = crossover(m["clean"], m["all"])
        log_mean = lambda a: float(a.mean(0).mean())  # noqa: E731  (the grid is log-spaced)
        rows.append({"setting": label, "TV(p0, q0)": 0.5 * float(np.abs(TARGET - q0).sum()),
                     "crossover sigma*": sigma_star, "annotation sigma (eps 0.05)": annotated,
                     "mean TV clean-only": log_mean(m["clean"]), "mean TV all-data": log_mean(m["all"]),
                     "mean TV Ambient-o": log_mean(ambient),
                     "bias within Thm 4.2 bound": bool((m["bias"] <= m["bias_bound"] + 1e-9).all())})
        for name, values in (("clean-only", m["clean"]), ("all data", m["all"]), ("Ambient-o", ambient)):
            mean, low, high = values.mean(0), *np.percentile(values, [5, 95], axis=0)
            ax.plot(SIGMAS, mean, label=name, lw=1.8 if name == "Ambient-o" else 1.2,
                    ls="--" if name == "Ambient-o" else "-")
            ax.fill_between(SIGMAS, low, high, alpha=0.15)
            curves += [{"setting": label, "method": name, "sigma": s, "mean_tv": v} for s, v in zip(SIGMAS, mean)]
        ax.plot(SIGMAS, m["bias"], color="grey", lw=1, label="bias TV(p̃_σ, p_σ)")
        ax.axvline(sigma_star, color="black", lw=0.8, ls=":", label=f"crossover σ* = {sigma_star:.3g}")
        ax.axvline(annotated, color="red", lw=0.8, ls="-.", label=f"classifier σ (ε {EPSILON}) = {annotated:.3g}")
        ax.set(xscale="log", yscale="log", title=label, xlabel="σ (KDE bandwidth = diffusion noise level)",
               ylabel="TV(p_σ, p̂_σ)")
        ax.legend(fontsize=7)
    fig.suptitle(f"§4: clean-only vs all data vs Ambient-o as KDEs of p0 = Beta(2, 5); mean and 5–95% over "
                 f"{args.repeats} draws", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "kde_crossover.png", dpi=110)
    table = pd.DataFrame(rows)
    pd.DataFrame(curves).to_csv(out / "kde_crossover_curves.csv", index=False, float_format="%.6g")
    table.to_csv(out / "kde_crossover.csv", index=False, float_format="%.6g")
    text = ["# §4 numerically: where biased data starts to help", "",
            f"`python benchmarks/theory/kde_crossover.py --repeats {args.repeats}` (target p0 = Beta(2, 5) on [0, 1]; "
            f"σ on a log grid {SIGMAS[0]:g}–{SIGMAS[-1]:g}, {len(SIGMAS)} levels; mean TV is the average over that "
            f"grid of the mean over draws).", "",
            table.to_markdown(index=False, floatfmt=".4g"), "",
            "The paper (§4): for σ above a switching point the all-data estimate's error bound beats clean-only's, "
            "the point moving with TV(p0, q0), and an optimal noise classifier tracks it. Measured: see the "
            "crossover column against the annotation column (the level where an optimal classifier between "
            "p_σ and q_σ reaches accuracy 0.5 + ε)."]
    (out / "kde_crossover.md").write_text("\n".join(text) + "\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
