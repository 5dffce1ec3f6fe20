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


def test_nearest_rates_picks_the_shared_size_whose_rates_agree_best():
    a = pd.DataFrame(dict(N=[768, 3072, 786_432], lr=[0.1, 0.0576, 0.00244], final_val_loss=[5.52, 5.18, 4.24]))
    b = pd.DataFrame(dict(N=[768, 3072, 786_432, 1e6], lr=[0.02, 0.01, 0.0025, 0.001], final_val_loss=[5.48, 5.14, 4.28, 4.0]))
    got = laws.nearest_rates(a, b)
    assert got["N"] == 786_432 and got["lr_a"] == 0.00244 and got["lr_b"] == 0.0025
    assert got["gap"] == pytest.approx(4.28 / 4.24 - 1)
    assert laws.nearest_rates(a, b[b["N"] == 1e6]) is None


def test_gap_at_equal_reads_the_other_family_at_each_value_and_is_nan_outside_it():
    b = pd.DataFrame(dict(N=[1e3, 1e4, 1e5], flops=[2e3, 2e4, 2e5], final_val_loss=3.0 * np.array([1e3, 1e4, 1e5]) ** -0.2))
    a = pd.DataFrame(dict(N=[3e3, 3e4, 1e6], flops=[3e4, 6e3, 1e3], final_val_loss=[1.0, 1.0, 1.0]))
    got = laws.gap_at_equal(a, b, "N")
    np.testing.assert_allclose(got[:2], 1.0 / (3.0 * np.array([3e3, 3e4]) ** -0.2) - 1, rtol=1e-12)
    assert np.isnan(got[2])
    # matched on compute, the same LSTM meets another transformer: at 3e4 FLOPs, N = 1.5e4
    np.testing.assert_allclose(laws.gap_at_equal(a, b, "flops")[0], 1.0 / (3.0 * 1.5e4**-0.2) - 1, rtol=1e-12)
    assert np.isnan(laws.gap_at_equal(a, b.iloc[:1], "N")).all()  # one size has no range to read in


def _ladder_curves(Ns=(1e3, 4e3, 16e3, 64e3, 256e3), steps=60, noise=0.0, seed=0):
    """Learning curves L = E + (N_c/N)^0.3 + (C_c/C)^0.1 with C = 6ND: each size holds the envelope a while."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in Ns:
        D = np.geomspace(1e4, 1e8, steps)
        C = 6 * N * D
        L = 2.0 + (3e3 / N) ** 0.3 + (1e10 / C) ** 0.1 + 1.0 * (1e6 / D) ** 0.3
        rows.append(pd.DataFrame(dict(key=f"n{N:g}", N=N, step=np.arange(1, steps + 1), C=C,
                                      val_loss=L * (1 + noise * rng.standard_normal(steps)))))
    return pd.concat(rows, ignore_index=True)


def test_the_envelope_fit_bootstraps_blocks_as_long_as_one_runs_stretch():
    ef = laws.envelope_fit(_ladder_curves(noise=0.002), "C", bootstrap=50)
    res = ef.fit
    assert ef.stretches >= 3 and ef.block >= 2
    assert res.resampling == f"moving blocks of {ef.block} points" and res.ci_missing is None
    assert res.ci["alpha"][0] < res.params["alpha"] < res.ci["alpha"][1]
    assert ef.fitted["N"].iloc[0] != ef.envelope["N"].iloc[0]  # the first steps, held by the smallest model, skipped
    env, fitted, res2 = ef  # unpacks like the chapters' tuple
    assert res2 is res


def test_an_envelope_held_by_too_few_runs_gets_no_interval():
    ef = laws.envelope_fit(_ladder_curves(Ns=(1e3, 4e3)), "C", bootstrap=50)
    assert ef.stretches < 3 and ef.fit.ci_missing == "no bootstrap"


def test_moving_blocks_draw_consecutive_points():
    from scaling_lib import fit

    draw = fit.resampler(10, block=3)
    idx = draw(np.random.default_rng(0))
    assert len(idx) == 10 and idx.max() <= 9
    starts = idx[::3]
    assert all((idx[i * 3:(i + 1) * 3] == np.arange(s, s + 3)[: len(idx[i * 3:(i + 1) * 3])]).all()
               for i, s in enumerate(starts))
    with pytest.raises(fit.FitError, match="block="):
        fit.fit("power", [1, 2, 3, 4], [4, 3, 2, 1.5], block=5)
