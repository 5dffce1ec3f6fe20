"""Fits of the scaling laws, on synthetic data with known parameters."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import scaling_lib.fit as fitting

from scaling_lib.fit import (
    CAP_TEXT,
    EXPONENT_CAP,
    FORMS,
    PARAMS,
    FitError,
    FitResult,
    add_cli_arguments,
    chinchilla,
    chinchilla_optimal,
    cli,
    extrapolation_check,
    fit,
    kaplan_nd,
    kaplan_ns,
    log_law,
    power_law,
    power_offset,
    start_grid,
)

NOISE = 0.003  # multiplicative, about the seed-to-seed spread measured in the pilots

# Our regime: N from 1e3 to 1e6, D from 1e6 to 1e8 tokens, S from 1e2 to 1e5 steps.
N_1D = np.logspace(3, 6, 10)
_N, _D = np.meshgrid(np.logspace(3, 6, 6), np.logspace(6, 8, 6))
N_2D, D_2D = _N.ravel(), _D.ravel()
S_2D = np.meshgrid(np.logspace(3, 6, 6), np.logspace(2, 5, 6))[1].ravel()

# form -> (x, x2, true parameters, law, relative tolerance per parameter at 0.3% noise, exponents)
# Tolerances are about five times the spread of the estimates over noise seeds; the scales
# (X_c, N_c, D_c) are pinned only loosely, as in Kaplan's own fits.
CASES = {
    "power": (
        N_1D, None, dict(alpha=0.07, X_c=1e13),
        lambda x, x2, p: power_law(x, **p),
        dict(alpha=0.03, X_c=0.6), ("alpha",),
    ),
    "power-offset": (
        N_1D, None, dict(E=3.0, A=30.0, alpha=0.3),
        lambda x, x2, p: power_offset(x, **p),
        dict(E=0.05, A=0.2, alpha=0.1), ("alpha",),
    ),
    "log": (
        N_1D, None, dict(a=8.0, b=0.3),
        lambda x, x2, p: log_law(x, **p),
        dict(a=0.02, b=0.05), ("b",),
    ),
    "kaplan-nd": (
        N_2D, D_2D, dict(alpha_N=0.076, alpha_D=0.103, N_c=6.4e13, D_c=1.8e13),
        lambda x, x2, p: kaplan_nd(x, x2, **p),
        dict(alpha_N=0.025, alpha_D=0.05, N_c=0.6, D_c=1.5), ("alpha_N", "alpha_D"),
    ),
    "kaplan-ns": (
        N_2D, S_2D, dict(alpha_N=0.077, N_c=6.5e13, alpha_S=0.76, S_c=2.1e3),
        lambda x, x2, p: kaplan_ns(x, x2, **p),
        dict(alpha_N=0.02, N_c=0.4, alpha_S=0.02, S_c=0.05), ("alpha_N", "alpha_S"),
    ),
    "chinchilla": (
        N_2D, D_2D, dict(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28),
        lambda x, x2, p: chinchilla(x, x2, **p),
        dict(E=0.25, A=0.05, B=0.35, alpha=0.02, beta=0.1), ("alpha", "beta"),
    ),
}


def _data(form, noise=NOISE, seed=2):
    x, x2, true, law, _, _ = CASES[form]
    L = law(x, x2, true)
    rng = np.random.default_rng(seed)
    return x, x2, L * np.exp(noise * rng.standard_normal(L.shape)), true


def _rel(a, b):
    return abs(a / b - 1)


def test_every_form_has_a_case():
    assert set(CASES) == set(FORMS)


@pytest.mark.parametrize("form", FORMS)
def test_recovers_parameters_from_noisy_data(form):
    x, x2, y, true = _data(form)
    tol, exponents = CASES[form][4], CASES[form][5]
    r = fit(form, x, y, x2, bootstrap=60, seed=2)
    assert isinstance(r, FitResult)
    assert set(r.params) == set(PARAMS[form]) and set(true) <= set(r.params)
    for k, v in true.items():
        assert _rel(r.params[k], v) < tol[k], (k, r.params[k], v)
    # The residuals are the noise: rmse about 0.3% in log L.
    assert 0.001 < r.rmse_log < 0.006
    assert r.residuals.shape == (len(y),)
    assert r.n_boot == 60 and r.n_boot_ok >= 55
    for k in exponents:
        lo, hi = r.ci[k]
        assert lo < r.params[k] < hi
        assert lo <= true[k] <= hi, (k, r.ci[k], true[k])
        # An interval, not a point: the bootstrap did resample.
        assert hi - lo > 1e-4 * true[k]


@pytest.mark.parametrize("form", FORMS)
def test_recovers_noiseless_data_exactly(form):
    x, x2, y, true = _data(form, noise=0.0)
    r = fit(form, x, y, x2)
    for k, v in true.items():
        assert _rel(r.params[k], v) < 1e-5, (k, r.params[k], v)
    assert r.rmse_log < 1e-8
    assert r.ci == {} and r.n_boot == 0
    np.testing.assert_allclose(r.predict(x, x2), y, rtol=1e-7)


def test_power_fit_is_the_log_log_regression():
    x, _, y, _ = _data("power")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    r = fit("power", x, y)
    assert r.params["alpha"] == pytest.approx(-slope, rel=1e-12)
    assert math.log(r.params["X_c"]) == pytest.approx(intercept / -slope, rel=1e-10)


def test_power_offset_finds_zero_offset_for_a_pure_power_law():
    x, _, y, _ = _data("power", noise=0.0)
    r = fit("power-offset", x, y)
    assert r.params["E"] < 1e-3
    assert r.params["alpha"] == pytest.approx(0.07, rel=1e-3)


def test_result_is_frozen_and_json_ready():
    x, _, y, _ = _data("power")
    r = fit("power", x, y, bootstrap=20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.form = "log"  # type: ignore[misc]
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["form"] == "power" and d["n_points"] == len(y)
    assert set(d["params"]) == {"alpha", "X_c", "log_X_c"}
    assert d["ci"]["alpha"][0] < d["params"]["alpha"] < d["ci"]["alpha"][1]
    assert d["max_abs_residual"] == pytest.approx(np.max(np.abs(r.residuals)))
    assert d["rmse_log"] == pytest.approx(np.sqrt(np.mean(r.residuals**2)))


def test_bootstrap_is_seeded():
    x, x2, y, _ = _data("kaplan-nd")
    a = fit("kaplan-nd", x, y, x2, bootstrap=15, seed=7)
    b = fit("kaplan-nd", x, y, x2, bootstrap=15, seed=7)
    c = fit("kaplan-nd", x, y, x2, bootstrap=15, seed=8)
    assert a.ci == b.ci
    assert a.ci != c.ci
    assert a.params == c.params  # the point estimate does not depend on the bootstrap


def test_groups_bootstrap_resamples_whole_runs():
    # Three seeds a size: resampling sizes keeps a size's seeds together.
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(3, 6, 8), 3)
    y = power_law(N, 0.07, 1e13) * np.exp(NOISE * rng.standard_normal(N.shape))
    by_point = fit("power", N, y, bootstrap=80, seed=1)
    by_size = fit("power", N, y, bootstrap=80, seed=1, groups=N)
    assert by_size.params == by_point.params
    assert by_size.n_boot_ok >= 75
    assert by_size.ci != by_point.ci
    lo, hi = by_size.ci["alpha"]
    assert lo <= 0.07 <= hi
    assert by_size.boot_params is not None and len(by_size.boot_params) == by_size.n_boot_ok

    # One group a point draws the same resamples as the plain bootstrap.
    singletons = fit("power", N, y, bootstrap=80, seed=1, groups=np.arange(len(N)))
    assert singletons.ci == by_point.ci

    # Labels need not be numbers: run ids work as well.
    runs = np.array([f"run{i // 3}" for i in range(len(N))])
    by_run = fit("power", N, y, bootstrap=80, seed=1, groups=runs)
    assert by_run.ci == by_size.ci


def test_bootstrap_drops_failed_resamples():
    # Three groups: a resample that draws one group three times has one x and cannot be fitted.
    x = np.repeat([1e3, 1e4, 1e5], 2)
    y = power_law(x, 0.07, 1e13) * np.array([1.001, 0.999] * 3)
    r = fit("power", x, y, bootstrap=60, seed=0, groups=x)
    assert 0 < r.n_boot_ok < 60
    assert len(r.boot_params) == r.n_boot_ok


def test_a_fit_without_an_interval_says_why():
    # Two groups: a resample that draws one of them twice has one x value and is dropped.
    x = np.repeat([1e3, 1e4], 2)
    y = power_law(x, 0.07, 1e13) * np.array([1.001, 0.999] * 2)
    r = fit("power", x, y, bootstrap=4, seed=0, groups=x)
    assert r.n_boot_ok < 2 and r.ci == {}  # the case this test is about
    why = f"only {r.n_boot_ok} of 4 bootstrap resamples converged"
    assert r.ci_missing == why
    assert r.ci_text("alpha") == f"n/a ({why})"
    assert all(math.isnan(v) for v in r.interval("alpha"))
    assert fit("power", x, y).ci_text("alpha", ".2f") == "n/a (no bootstrap)"
    with pytest.raises(KeyError, match="beta"):
        r.ci_text("beta")  # a name the form does not have is a mistake, not a missing interval


def test_ci_text_formats_the_interval_and_flips_it_for_a_negative_scale():
    x, _, y, _ = _data("power")
    r = fit("power", x, y, bootstrap=20, seed=0)
    lo, hi = r.ci["alpha"]
    assert r.ci_missing is None
    assert r.ci_text("alpha") == f"{lo:.4f}–{hi:.4f}"
    assert r.ci_text("alpha", ".2f", sep=" to ", scale=-1) == f"{-hi:.2f} to {-lo:.2f}"
    assert r.interval("alpha", scale=-1) == (-hi, -lo)
    inf = dataclasses.replace(r, ci={**r.ci, "alpha": (lo, math.inf)})
    assert inf.ci_text("alpha").startswith("n/a (alpha is not finite")
    assert r.contains("alpha", (lo + hi) / 2) is True and r.contains("alpha", hi + 1) is False
    assert inf.contains("alpha", (lo + hi) / 2) is None
    assert fit("power", x, y).contains("alpha", 0.07) is None


def test_determination_text_calls_a_wide_interval_barely_determined_and_names_its_trade_off():
    x, x2, y, _ = _data("kaplan-ns")
    r = fit("kaplan-ns", x, y, x2, bootstrap=20, seed=0)
    lo, hi = r.ci["alpha_S"]
    assert r.interval_ratio("alpha_S") == pytest.approx(hi / lo)
    assert r.determination_text("alpha_S", "α_S") == f"the 95% interval of α_S spans a factor {hi / lo:.2g}"
    # a resampled alpha_N that moves with log N_c, spread a factor 6
    rng = np.random.default_rng(0)
    boot = r.boot_params.copy()
    boot["alpha_N"] = np.linspace(0.05, 0.3, len(boot))
    boot["N_c"] = np.exp(10 + 20 * boot["alpha_N"] + rng.normal(0, 0.01, len(boot)))
    wide = dataclasses.replace(r, ci={**r.ci, "alpha_N": (0.05, 0.3)}, boot_params=boot)
    assert wide.trade_off("alpha_N")[0] == "N_c" and wide.trade_off("alpha_N")[1] > 0.99
    assert wide.determination_text("alpha_N", "α_N") == (
        "the data barely determine α_N: its 95% interval spans a factor 6, and across the resamples it moves "
        f"with N_c (correlation {wide.trade_off('alpha_N')[1]:+.2f}): the fit trades one against the other")
    through_zero = dataclasses.replace(wide, ci={**r.ci, "alpha_N": (-0.01, 0.3)}, boot_params=None)
    assert through_zero.interval_ratio("alpha_N") == math.inf
    assert through_zero.determination_text("alpha_N") == "the data barely determine alpha_N: its 95% interval includes zero"
    assert fit("kaplan-ns", x, y, x2).determination_text("alpha_N") == "alpha_N has no interval (no bootstrap)"


def test_loose_parameters_are_those_whose_interval_spans_more_than_the_factor():
    def result(**ci):
        return FitResult(form="kaplan-ns", params=dict(alpha_N=0.1, N_c=1e13, alpha_S=0.7, S_c=2e3), ci=ci,
                         residuals=np.zeros(4), rmse_log=0.0, n_points=4)
    ns = result(alpha_N=(0.051, 0.282), alpha_S=(0.6, 0.9), N_c=(-1.0, 1e14))  # factors 5.5, 1.5; through zero
    law = result(alpha_N=(0.045, 0.138))  # a factor 3.1
    pairs = [("alpha_N", ns), ("alpha_S", ns), ("alpha_N", law), ("N_c", ns), ("S_c", ns)]  # S_c: no interval
    assert fitting.MAX_CI_RATIO == 2.0
    assert fitting.loose_parameters(pairs) == [("alpha_N", ns), ("alpha_N", law), ("N_c", ns)]
    assert fitting.loose_parameters(pairs, max_ratio=3.2) == [("alpha_N", ns), ("N_c", ns)]
    assert fitting.loose_parameters(pairs, max_ratio=1.4) == pairs[:4]  # S_c, without an interval, never
    assert fitting.loose_parameters([]) == []


def test_a_rival_wins_only_by_the_margin_and_a_smaller_edge_is_named_as_one():
    assert fitting.rival_verdict({"power law": 0.001, "logarithm": 0.0025}) == (
        "power law", "the power law fits better (its RMSE 2.5 times smaller)")
    assert fitting.rival_verdict({"power law": 0.0066, "logarithm": 0.0098}) == (
        None, "the power law fits a little better (its RMSE 1.5 times smaller, short of the margin of 2 for a clear "
              "difference)")
    assert fitting.rival_verdict({"power law": 0.01, "logarithm": 0.004})[0] == "logarithm"
    assert fitting.rival_verdict({"a": 0.0, "b": 0.1})[0] is None
    with pytest.raises(ValueError, match="two laws"):
        fitting.rival_verdict({"a": 0.1})


def test_compare_forms_fits_each_form_to_the_same_points_and_checks_it_beyond_them():
    N = np.logspace(3, 6, 6)
    L = power_law(N, alpha=0.07, X_c=1e13)
    rows, fits = fitting.compare_forms(N, L)
    assert [r["form"] for r in rows] == ["power", "log"] and list(fits) == ["power", "log"]
    power, log = rows
    assert power["sizes"] == log["sizes"] == 6
    assert fits["power"].params["alpha"] == pytest.approx(0.07) and power["rmse_log"] < 1e-9 < log["rmse_log"]
    assert log["rmse_log"] == fits["log"].rmse_log and log["max_residual"] == fits["log"].max_abs_residual
    # the two largest sizes held out: the power law predicts them, a straight line in log N falls below the curve
    assert power["extrapolation_mean_abs"] < 1e-9 and log["extrapolation_mean_abs"] > 1e-3
    errors = [float(e.rstrip("%")) / 100 for e in log["extrapolation"].split(", ")]
    assert len(errors) == 2 and all(e < 0 for e in errors)
    assert np.mean(np.abs(errors)) == pytest.approx(log["extrapolation_mean_abs"], abs=1e-4)
    at_30x = power_law(30 * N.max(), alpha=0.07, X_c=1e13)
    assert power["prediction_at_30x_largest"] == pytest.approx(at_30x)
    assert log["prediction_at_30x_largest"] < at_30x
    # fewer sizes than a check needs
    (few, *_), _ = fitting.compare_forms(N[:4], L[:4], ("power",))
    assert few["sizes"] == 4 and few["extrapolation"] == "n/a" and math.isnan(few["extrapolation_mean_abs"])


def test_form_tally_counts_each_panel_once():
    # two ladders at different budgets: three panels (not every ladder at every budget)
    rows = [("CPU", "8M", "power", 0.001, 0.01), ("CPU", "8M", "log", 0.003, 0.02),
            ("CPU", "16M", "power", 0.004, 0.03), ("CPU", "16M", "log", 0.005, 0.02),
            ("GPU", "32M", "power", 0.006, math.nan), ("GPU", "32M", "log", 0.004, math.nan)]
    comparison = pd.DataFrame(rows, columns=["ladder", "budget", "form", "rmse_log", "extrapolation_mean_abs"])
    assert fitting.form_tally(comparison) == dict(panels=3, lower_rmse=2, checked=2, smaller_held_out=1,
                                                  held_out_text="1 of the 2 with a check", clear=1)
    unchecked = fitting.form_tally(comparison.assign(extrapolation_mean_abs=math.nan))
    assert unchecked["checked"] == 0 and unchecked["held_out_text"] == "none (no panel has the 5 sizes a check needs)"
    assert fitting.form_tally(comparison.iloc[:0]) == dict(panels=0, lower_rmse=0, checked=0, smaller_held_out=0,
                                                           held_out_text=unchecked["held_out_text"], clear=0)


def test_an_interval_that_reaches_the_exponent_cap_has_no_upper_end():
    x, x2, y, _ = _data("kaplan-nd")
    r = fit("kaplan-nd", x, y, x2, bootstrap=10, seed=0)
    lo, hi = r.ci["alpha_D"]
    assert not r.reaches_cap("alpha_D") and r.ci_text("alpha_D") == f"{lo:.4f}–{hi:.4f}"
    boot = r.boot_params.copy()
    boot.loc[boot.index[:3], "alpha_D"] = EXPONENT_CAP  # 3 of the 10 resamples end at the cap
    capped = dataclasses.replace(r, ci={**r.ci, "alpha_D": (lo, EXPONENT_CAP)}, boot_params=boot)
    assert capped.reaches_cap("alpha_D") and not capped.reaches_cap("alpha_N")
    why = "upper end not identified: 3 of 10 resamples reach the fit's cap of 10"
    assert capped.cap_text("alpha_D") == why
    assert capped.ci_text("alpha_D", ".3f") == f"≥ {lo:.3f} ({why})"
    assert capped.ci_text("alpha_D", ".3f", scale=-1) == f"≤ {-lo:.3f} ({why})"
    assert dataclasses.replace(capped, boot_params=None).cap_text("alpha_D") == CAP_TEXT  # no resamples kept
    assert capped.contains("alpha_D", lo / 2) is False and capped.contains("alpha_D", 2 * lo) is None
    # N_c is not bounded by the cap: a large scale is just large
    big = dataclasses.replace(r, ci={**r.ci, "N_c": (1.0, 1e6)})
    assert not big.reaches_cap("N_c")


def test_extrapolation_small_on_a_clean_power_law():
    x, _, y, _ = _data("power")
    check = extrapolation_check("power", x, y, holdout=2)
    assert check["held_out"].sum() == 2
    np.testing.assert_array_equal(check["x"], x[-2:])
    assert check["fit"].n_points == len(x) - 2
    assert check["max_abs_rel_error"] < 0.015
    np.testing.assert_allclose(check["rel_error"], check["predicted"] / check["actual"] - 1)


def test_extrapolation_large_when_the_data_bend():
    # A plateau (E = 2.5) that the small sizes hide: a pure power law overshoots it.
    y = power_offset(N_1D, 2.5, 30.0, 0.3)
    bent = extrapolation_check("power", N_1D, y, holdout=2)
    assert bent["max_abs_rel_error"] > 0.05
    assert np.all(bent["rel_error"] < 0)
    # The right form extrapolates the same data.
    assert extrapolation_check("power-offset", N_1D, y, holdout=2)["max_abs_rel_error"] < 1e-4


def test_extrapolation_by_groups_holds_out_whole_sizes():
    x, x2, y, _ = _data("kaplan-nd")
    check = extrapolation_check("kaplan-nd", x, y, x2, holdout=1)
    assert set(check["x"]) == {x.max()} and check["held_out"].sum() == 6
    assert check["max_abs_rel_error"] < 0.02
    by_D = extrapolation_check("kaplan-nd", x, y, x2, holdout=2, by=x2)
    assert by_D["held_out"].sum() == 12 and set(by_D["x2"]) == set(np.unique(x2)[-2:])
    with pytest.raises(FitError, match="holdout"):
        extrapolation_check("power", N_1D, y[:10], holdout=10)


def test_laws_do_not_overflow_and_agree_with_direct_formulas():
    N = np.array([1e3, 1e6])
    D = np.array([1e6, 1e8])
    direct = ((6.4e13 / N) ** (0.076 / 0.103) + 1.8e13 / D) ** 0.103
    np.testing.assert_allclose(kaplan_nd(N, D, 0.076, 0.103, 6.4e13, 1.8e13), direct, rtol=1e-12)
    # D = inf is the infinite-data limit L(N) = (N_c / N)^alpha_N.
    np.testing.assert_allclose(kaplan_nd(N, np.inf, 0.076, 0.103, 6.4e13, 1.8e13), power_law(N, 0.076, 6.4e13))
    np.testing.assert_allclose(kaplan_ns(N, np.inf, 0.077, 6.5e13, 0.76, 2.1e3), power_law(N, 0.077, 6.5e13))
    np.testing.assert_allclose(
        chinchilla(N, D, 1.7, 400, 410, 0.34, 0.28), 1.7 + 400 / N**0.34 + 410 / D**0.28, rtol=1e-12
    )
    np.testing.assert_allclose(power_offset(N, 0.0, 30, 0.3), 30 * N**-0.3, rtol=1e-12)
    # Scales far beyond float range in a direct product stay finite in log space.
    with np.errstate(all="raise"):
        assert np.isfinite(kaplan_nd(np.array([1.0]), np.array([1.0]), 0.05, 0.1, 1e300, 1e300)).all()


def test_chinchilla_optimal():
    p = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    C = np.array([1e18, 1e21, 1e24])
    N_opt, D_opt = chinchilla_optimal(C, p)
    np.testing.assert_allclose(6 * N_opt * D_opt, C, rtol=1e-10)
    a = np.polyfit(np.log(C), np.log(N_opt), 1)[0]
    assert a == pytest.approx(0.28 / 0.62, rel=1e-10)  # a = beta / (alpha + beta) = 0.45
    # N_opt minimises the loss along C = 6 N D.
    N = N_opt[1] * np.logspace(-1, 1, 201)
    L = chinchilla(N, C[1] / (6 * N), **p)
    assert N[np.argmin(L)] == pytest.approx(N_opt[1], rel=0.03)


def test_bad_starts_are_skipped():
    x, x2, y, true = _data("kaplan-nd")
    bad = dict(alpha_N=float("nan"), alpha_D=0.1, N_c=1e13, D_c=1e13)
    r = fit("kaplan-nd", x, y, x2, starts=[bad, true])
    assert _rel(r.params["alpha_N"], 0.076) < 0.025
    with pytest.raises(FitError, match="no starting point converged"):
        fit("kaplan-nd", x, y, x2, starts=[bad])


def test_start_grid_drives_the_chinchilla_search():
    x, x2, y, true = _data("chinchilla")
    starts = start_grid(E=[1.0, 3.0], A=[100.0], B=[100.0], alpha=[0.5], beta=[0.5])
    assert len(starts) == 2 and starts[1]["E"] == 3.0
    r = fit("chinchilla", x, y, x2, starts=starts)
    assert _rel(r.params["alpha"], 0.34) < 0.02


# --- validation -------------------------------------------------------------------------------

_X = np.array([1e3, 1e4, 1e5, 1e6])
_Y = np.array([4.0, 3.5, 3.1, 2.8])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("cubic", _X, _Y), {}, "unknown form"),
        (("power", _X[:2], _Y[:2]), {}, "too few points"),
        (("kaplan-nd", _X, _Y, _X), {}, "too few points"),
        (("power", -_X, _Y), {}, "x must be positive"),
        (("power", _X, _Y * 0), {}, "y must be positive"),
        (("chinchilla", np.tile(_X, 2), np.tile(_Y, 2), -np.tile(_X, 2)), {}, "x2 must be positive"),
        (("power", _X, np.array([4.0, np.nan, 3.1, 2.8])), {}, "NaN"),
        (("power", np.array([1e3, np.inf, 1e5, 1e6]), _Y), {}, "infinite"),
        (("power", _X, _Y[:3]), {}, "different lengths"),
        (("kaplan-ns", _X, _Y), {}, "needs a second variable"),
        (("power", _X, _Y, _X), {}, "takes one variable"),
        (("power", np.full(4, 1e3), _Y), {}, "single value"),
        (("power", _X, _Y), {"bootstrap": 5, "groups": [1, 2]}, "different lengths"),
    ],
)
def test_validation_errors(args, kwargs, match):
    with pytest.raises(FitError, match=match) as exc:
        fit(*args, **kwargs)
    assert isinstance(exc.value, ValueError)
    assert "\n" not in str(exc.value)


def test_predict_needs_x2_for_two_variable_forms():
    x, x2, y, _ = _data("kaplan-ns", noise=0.0)
    with pytest.raises(FitError, match="x2"):
        fit("kaplan-ns", x, y, x2).predict(x)


# --- command line -----------------------------------------------------------------------------


@pytest.fixture
def csv_files(tmp_path):
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(3, 6, 6), 2)
    L = power_law(N, 0.07, 1e13) * np.exp(NOISE * rng.standard_normal(N.shape))
    good = tmp_path / "good.csv"
    pd.DataFrame({"N": N, "L": L, "run": np.arange(len(N)) // 2}).to_csv(good, index=False)
    files = {"good": good}
    for name, frame in {
        "negative": {"N": [1e3, -1e4, 1e5, 1e6], "L": [4, 3.5, 3.1, 2.8]},
        "nan": {"N": [1e3, 1e4, 1e5, 1e6], "L": [4, None, 3.1, 2.8]},
        "text": {"N": [1e3, 1e4, 1e5, 1e6], "L": [4, "four", 3.1, 2.8]},
        "short": {"N": [1e3, 1e4], "L": [4, 3.5]},
    }.items():
        files[name] = tmp_path / f"{name}.csv"
        pd.DataFrame(frame).to_csv(files[name], index=False)
    files["missing"] = tmp_path / "does-not-exist.csv"
    return files


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "name, extra, match",
    [
        ("missing", [], "cannot read"),
        ("good", ["--x", "D"], "column(s) D not in"),
        ("negative", [], "must be positive"),
        ("nan", [], "NaN"),
        ("text", [], "non-numeric"),
        ("short", [], "too few points"),
        ("good", ["--form", "chinchilla"], "needs a second variable"),
    ],
)
def test_cli_bad_input(csv_files, capsys, name, extra, match):
    args = _parse(["--form", "power", "--csv", str(csv_files[name]), "--x", "N", "--y", "L", *extra])
    assert cli(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0]


def test_cli_subprocess_error_has_no_traceback(csv_files):
    for name in ("missing", "negative"):
        proc = subprocess.run(
            [sys.executable, "-m", "scaling_lib.fit", "--form", "power", "--csv", str(csv_files[name]),
             "--x", "N", "--y", "L"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert "Traceback" not in proc.stderr
        error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(error_lines) == 1


def test_cli_subprocess_success(csv_files):
    proc = subprocess.run(
        [sys.executable, "-m", "scaling_lib.fit", "--form", "power", "--csv", str(csv_files["good"]),
         "--x", "N", "--y", "L", "--bootstrap", "30", "--seed", "3", "--group", "run"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["form"] == "power" and out["n_points"] == 12
    assert out["alpha"] == out["params"]["alpha"] and out["X_c"] == out["params"]["X_c"]
    assert abs(out["alpha"] - 0.07) < 0.003
    lo, hi = out["ci"]["alpha"]
    assert lo < out["alpha"] < hi
    assert 0 < out["rmse_log"] <= out["max_abs_residual"] < 0.02


def test_cli_without_bootstrap_prints_empty_ci(csv_files, capsys):
    args = _parse(["--form", "log", "--csv", str(csv_files["good"]), "--x", "N", "--y", "L"])
    assert cli(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ci"] == {}
    assert {"a", "b"} <= set(out) and out["b"] > 0


def test_power_law_with_a_nearly_flat_trend_still_predicts():
    """alpha ~ 0 makes X_c overflow; the fit keeps log X_c and predicts finite losses."""
    N = np.array([1e3, 1e4, 1e5, 1e6])
    L = np.array([6.600, 6.610, 6.590, 6.605])
    r = fit("power", N, L)
    assert abs(r.params["alpha"]) < 1e-3
    assert np.all(np.isfinite(r.predict(N)))
    assert np.allclose(r.predict(N), L, rtol=5e-3)


def test_hierarchical_resampler_draws_whole_seeds_inside_drawn_sizes():
    sizes = np.repeat([1, 2, 3], [6, 4, 2])            # 3 sizes: 3 seeds x 2 points, 2 x 2, 1 x 2
    seeds = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 0])
    draw = fitting.resampler(len(sizes), sizes, seeds)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = draw(rng)
        units = pd.Series(1, index=pd.MultiIndex.from_arrays([sizes[idx], seeds[idx]])).groupby(level=[0, 1]).size()
        assert (units % 2 == 0).all()  # a seed comes with both its points, never one of them
        # a drawn size brings back as many seed draws as it has seeds (so a multiple of that)
        for size, points in pd.Series(sizes[idx]).value_counts().items():
            assert (points / 2) % {1: 3, 2: 2, 3: 1}[size] == 0
    assert len({tuple(draw(rng)) for _ in range(20)}) > 1


def test_a_hierarchical_bootstrap_sees_seed_noise_that_a_size_bootstrap_hides():
    rng = np.random.default_rng(3)
    N = np.repeat(np.geomspace(1e3, 1e6, 6), 3)
    seed = np.tile([0, 1, 2], 6)
    L = (1e9 / N) ** 0.08 * np.exp(rng.normal(0, 0.03, len(N)))  # large seed-to-seed noise
    by_size = fitting.fit("power", N, L, bootstrap=300, seed=0, groups=N)
    nested = fitting.fit("power", N, L, bootstrap=300, seed=0, groups=N, within=seed)
    assert nested.resampling == "groups, then units within" and by_size.resampling == "groups"
    width = lambda r: np.subtract(*r.interval("alpha")[::-1])
    assert width(nested) > width(by_size)
    assert nested.params == by_size.params  # the point estimate does not depend on the resampling
    with pytest.raises(fitting.FitError, match="groups= too"):
        fitting.fit("power", N, L, bootstrap=10, within=seed)
    with pytest.raises(fitting.FitError, match="different lengths"):
        fitting.fit("power", N, L, bootstrap=10, groups=N, within=seed[:-1])


def test_the_prediction_interval_brackets_the_fit_and_widens_away_from_the_data():
    rng = np.random.default_rng(3)
    N = np.geomspace(1e3, 1e5, 8)
    y = (N / 1e13) ** -0.07 * (1 + 0.005 * rng.standard_normal(8))
    res = fitting.fit("power", N, y, bootstrap=100, seed=0)
    x = np.array([1e4, 1e7])
    lo, hi = res.predict_interval(x)
    mid = res.predict(x)
    assert np.all(lo < mid) and np.all(mid < hi)
    assert (hi[1] - lo[1]) / mid[1] > (hi[0] - lo[0]) / mid[0]  # extrapolating two decades is less certain
    lo0, hi0 = fitting.fit("power", N, y).predict_interval(x)
    assert np.isnan(lo0).all() and np.isnan(hi0).all()  # no bootstrap, no interval


def test_an_interval_with_a_negative_bound_reads_lo_to_hi():
    assert fitting.interval_text(0.031, 0.045, ".3f") == "0.031–0.045"
    assert fitting.interval_text(-0.71, 0.27, ".2f") == "-0.71 to 0.27"
    assert fitting.interval_text(-0.14, -0.05, ".2f") == "-0.14 to -0.05"


def test_a_floor_fits_better_only_where_the_points_bend():
    rng = np.random.default_rng(4)
    D = np.geomspace(5e5, 1e7, 5)
    noise = np.exp(0.002 * rng.standard_normal(len(D)))
    bent = power_offset(D, 3.9, 2e5, 0.8) * noise
    c = fitting.compare_fits(fit("power", D, bent), fit("power-offset", D, bent))
    assert c["better"] and c["ratio"] >= c["margin"] == fitting.FIT_MARGIN
    straight = power_law(D, 0.08, 1e12) * noise
    s = fitting.compare_fits(fit("power", D, straight), fit("power-offset", D, straight))
    assert not s["better"] and s["ratio"] < 2
    # the extra parameter is counted: on the same points the floor's plain RMS is lower, its scale not by half
    assert fit("power-offset", D, straight).rmse_log <= fit("power", D, straight).rmse_log


def test_comparing_fits_needs_a_richer_law_and_a_degree_of_freedom():
    D = np.geomspace(5e5, 1e7, 4)
    y = power_offset(D, 3.9, 2e5, 0.8) * np.exp([0.001, -0.002, 0.0, 0.001])
    power, floor = fit("power", D, y), fit("power-offset", D, y)
    assert fitting.free_params("power") == 2 and fitting.free_params("power-offset") == 3
    assert fitting.residual_scale(floor) == pytest.approx(np.sqrt(np.sum(floor.residuals ** 2) / 1))
    # with as many points as parameters there is no scale, and no verdict
    three = dataclasses.replace(floor, residuals=floor.residuals[:3], n_points=3)
    c = fitting.compare_fits(dataclasses.replace(power, residuals=power.residuals[:3], n_points=3), three)
    assert math.isnan(c["s_richer"]) and math.isnan(c["ratio"]) and not c["better"]
    assert not fitting.compare_fits(power, three)["better"]  # not the same points
    with pytest.raises(ValueError, match="no more parameters"):
        fitting.compare_fits(fit("power-offset", D, y), fit("power", D, y))
    with pytest.raises(ValueError, match="margin"):
        fitting.compare_fits(fit("power", D, y), fit("power-offset", D, y), margin=0.5)
