"""Recurrent against plain transformers: the gap at equal parameters and at equal compute."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling_lib import recurrence


def _table(per_param=-0.02, per_flop_law=lambda C: 10 * C**-0.05):
    """Plain models on L(C) = 10 C^-0.05; a recurrent model of k passes has k times the compute and a loss
    exp(per_param) times the plain one's at the same N."""
    rows = []
    for N in (1e3, 4e3, 16e3, 64e3, 256e3):
        C = 6 * N * 1e6
        L = per_flop_law(C)
        rows.append(dict(N=N, C=C, n_recur=1, final_val_loss=L))
        for k in (2, 4):
            rows.append(dict(N=N, C=k * C, n_recur=k, final_val_loss=L * math.exp(per_param)))
    return pd.DataFrame(rows)


def test_the_gap_at_equal_parameters_and_at_equal_compute():
    g = recurrence.gaps(_table())
    assert (g["gap_N"].to_numpy() == pytest.approx(-0.02))
    # at equal compute the plain model of k times the size would sit lower by 0.05 log k
    inside = g.dropna(subset=["gap_C"])
    for k, h in inside.groupby("n_recur"):
        assert h["gap_C"].to_numpy() == pytest.approx(-0.02 + 0.05 * math.log(k), abs=1e-9)
    # the largest recurrent runs use more compute than any plain run: no comparison, not an extrapolation
    assert g[(g["N"] == 256e3)]["gap_C"].isna().all() and len(inside) == 4 + 4


def test_the_summary_interval_covers_a_noisy_gap_and_needs_three_sizes():
    rng = np.random.default_rng(0)
    t = _table()
    noisy = t.assign(final_val_loss=t["final_val_loss"] * np.exp(rng.normal(0, 0.003, len(t))))
    s = recurrence.summary(recurrence.gaps(noisy), bootstrap=500).set_index(["n_recur", "at"])
    lo, hi = s.loc[(2, "N"), ["lo", "hi"]]
    assert lo < -0.02 < hi and hi - lo < 0.02
    assert s.loc[(4, "C"), "sizes"] == 4 and s.loc[(2, "C"), "mean_gap"] > 0  # worse per FLOP, as Kaplan et al. find
    two = recurrence.summary(recurrence.gaps(t[t["N"] <= 4e3]), bootstrap=500).set_index(["n_recur", "at"])
    assert two.loc[(2, "N"), "sizes"] == 2 and math.isnan(two.loc[(2, "N"), "lo"])  # two sizes: no interval
