"""The paper's §4 argument, measured by benchmarks/theory/kde_crossover.py (a coarse grid here)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "theory"))
import kde_crossover as theory  # noqa: E402


@pytest.fixture(autouse=True)
def coarse(monkeypatch):
    monkeypatch.setattr(theory, "SIGMAS", np.geomspace(0.01, 5.0, 12))
    monkeypatch.setattr(theory, "POINTS", 600)


def test_the_mixture_bias_obeys_theorem_4_2_and_falls_faster_for_a_fine_detail_defect():
    fine = theory.measure(theory.high_frequency_defect(theory.TARGET), 50, 450, repeats=4, seed=0)
    shifted = theory.measure(theory.SETTINGS[-1][1], 50, 450, repeats=4, seed=0)
    for m in (fine, shifted):
        assert (m["bias"] <= m["bias_bound"] + 1e-9).all()  # TV(p̃_σ, p_σ) ≤ TV(p̃_0, p_0)·D/(2σ)
    # the defect in the fine detail vanishes under noise long before a shift of the mean does
    assert fine["bias"][-1] < 0.05 * shifted["bias"][-1]


def test_biased_data_helps_above_a_crossover_for_a_fine_detail_defect_and_never_for_a_shift():
    fine = theory.measure(theory.high_frequency_defect(theory.TARGET), 50, 450, repeats=4, seed=0)
    assert fine["all"].mean(0)[0] > fine["clean"].mean(0)[0] * 0.5  # at the lowest level the bias counts
    sigma_star = theory.crossover(fine["clean"], fine["all"])
    assert 0.01 <= sigma_star < 0.2 and (fine["all"].mean(0)[-3:] < fine["clean"].mean(0)[-3:]).all()
    shifted = theory.measure(theory.SETTINGS[-1][1], 50, 450, repeats=4, seed=0)
    assert np.isnan(theory.crossover(shifted["clean"], shifted["all"]))
