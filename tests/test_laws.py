"""Reductions of run tables: best rows, the learning-rate optimum and its penalty, the envelope."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling_lib import laws

LRS = np.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1])


def _bowl(lr, best=1e-2, depth=4.0, width=0.05):
    """A loss that is a parabola in log lr with its minimum `depth` at `best`."""
    return depth + width * np.log(np.asarray(lr) / best) ** 2


def test_best_per_group_picks_the_lowest_finite_loss():
    df = pd.DataFrame(dict(N=[1, 1, 1, 2, 2], lr=[1, 2, 3, 1, 2], final_val_loss=[5.0, 4.0, np.nan, 3.0, 3.5]))
    best = laws.best_per_group(df, "N")
    assert best["lr"].tolist() == [2, 1]


def test_parabola_minimum_recovers_the_optimum_between_grid_points_and_stops_at_an_edge():
    assert laws.parabola_minimum(LRS, _bowl(LRS, best=5e-3)) == pytest.approx(5e-3, rel=1e-6)
    assert laws.parabola_minimum(LRS, _bowl(LRS, best=1e-4)) == 1e-3  # the edge, not an extrapolation


def test_lr_penalty_is_read_off_the_same_parabola():
    y = _bowl(LRS, best=5e-3, depth=4.0, width=0.05)
    expected = (4.0 + 0.05 * math.log(2) ** 2) / 4.0 - 1  # at 1e-2, a factor 2 from the optimum
    assert laws.lr_penalty(LRS, y, 1e-2) == pytest.approx(expected, rel=1e-6)
    assert laws.lr_penalty(LRS, y, 5e-3) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(laws.lr_penalty(LRS, y, 5e-2))  # outside the three rates around the minimum
    assert math.isnan(laws.lr_penalty(LRS, _bowl(LRS, best=1e-4), 1e-3))  # minimum at the grid's edge


def test_envelope_is_the_running_best_over_all_curves():
    curves = pd.DataFrame(dict(key=["a"] * 3 + ["b"] * 3, N=[1] * 3 + [2] * 3, C=[1, 10, 100, 2, 20, 200],
                               val_loss=[5.0, 4.0, 3.9, 6.0, 3.5, 3.0]))
    env = laws.envelope(curves, x="C", n_bins=6)
    assert (np.diff(env["val_loss"]) <= 0).all()
    assert env["val_loss"].iloc[-1] == 3.0 and env["val_loss"].iloc[0] == 5.0


def test_envelope_keeps_the_highest_compute_point():
    # 10**log10(75492640161792.0) is 75492640161791.9: the last log-spaced edge fell just below the
    # largest C, and the run there, the best of all, was left out of the envelope.
    top = 75492640161792.0
    assert 10 ** np.log10(top) < top  # the case this test is about
    curves = pd.DataFrame(dict(key=["small"] * 3 + ["large"] * 3, N=[1] * 3 + [2] * 3,
                               C=[1e9, 1e11, 1e13, 1e10, 1e12, top], val_loss=[5.0, 4.5, 4.2, 6.0, 4.0, 3.0]))
    env = laws.envelope(curves, x="C", n_bins=40)
    assert env["C"].iloc[-1] == top
    assert env["val_loss"].iloc[-1] == 3.0 and env["key"].iloc[-1] == "large"
    assert env["C"].iloc[0] >= 1e9


def test_fixed_budgets_the_common_one_then_a_longer_one_with_enough_sizes():
    def ladder(reach: dict) -> pd.DataFrame:  # {N: longest budget}, every doubling from 1 up to it
        return pd.DataFrame([dict(N=N, tokens=b) for N, top in reach.items() for b in (1, 2, 4, 8, 16) if b <= top])

    sizes = [10**k for k in range(8)]
    assert laws.fixed_budgets(ladder({N: 8 for N in sizes})) == [8]
    assert laws.fixed_budgets(ladder({N: 16 if N < 10**6 else 8 for N in sizes})) == [8, 16]  # six sizes at 16
    assert laws.fixed_budgets(ladder({N: 16 if N < 10**5 else 8 for N in sizes})) == [8]  # five are too few
    assert laws.fixed_budgets(ladder({N: 16 if N < 10**5 else 8 for N in sizes}), min_sizes=5) == [8, 16]
    assert laws.fixed_budgets(ladder({N: 16 if N < 10**6 else 4 for N in sizes})) == [4, 16]


def test_loglog_interp_is_exact_on_a_power_law_and_nan_outside():
    xs = np.array([1e3, 1e4, 1e5])[::-1]          # any order
    ys = 3.0 * xs**-0.2
    got = laws.loglog_interp([2e3, 5e4, 1e3], xs, ys)
    np.testing.assert_allclose(got, 3.0 * np.array([2e3, 5e4, 1e3]) ** -0.2, rtol=1e-12)
    assert np.isnan(laws.loglog_interp([10.0, 1e6], xs, ys)).all()
