"""Overfitting (Kaplan §4): the runs table, Eq. 1.5 recovered, δL and its collapse, the data needed (Eq. 4.4)."""
import numpy as np
import pandas as pd
import pytest

from scaling_lib import fit, overfit
from scaling_lib.config import RunConfig

TRUE = dict(alpha_N=0.08, alpha_D=0.10, N_c=5e10, D_c=2e11)
SIZES = [(1, 16), (2, 32), (3, 64), (4, 96)]
DATA = [2**18, 2**19, 2**20, 2**21, 2**22, 0]
WHOLE = 9_000_000


def _record(n_layer: int, d_model: int, data_tokens: int, noise: float = 0.0, rng=None) -> dict:
    cfg = RunConfig(sweep="overfit", corpus="tiny", n_layer=n_layer, d_model=d_model, tokens=8_000_000,
                    data_tokens=data_tokens, early_stop=True, dropout=0.1, schedule="cosine")
    D = data_tokens or WHOLE
    L = float(fit.kaplan_nd(cfg.N, D, **TRUE)) * (1 + (noise * rng.standard_normal() if noise else 0.0))
    stop = min(8_000_000, 4 * D)
    return dict(key=cfg.key, name=cfg.name, sweep="overfit", config=cfg.to_dict(), status="early_stopped",
                diverged_at_step=None, N=cfg.N, params_counted=cfg.N, N_total=cfg.N + 1000, tokens=stop, steps=10,
                data_tokens=D, epochs=stop / D, C=6.0 * cfg.N * stop, C_exact=7.0 * cfg.N * stop,
                curve=[dict(step=0, tokens=0, val_loss=8.0), dict(step=5, tokens=stop, val_loss=L - 0.01),
                       dict(step=10, tokens=2 * stop, val_loss=L + 0.05)],
                budgets=[], final=dict(val_loss=L - 0.01, test_loss=L, best_val_loss=L - 0.01, other={}),
                provenance=dict(wall_time_s=1.0, device="cpu:test"))


def _grid(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [_record(L, d, D, noise, rng) for L, d in SIZES for D in DATA]


def test_the_table_reads_the_test_loss_at_the_stop_and_the_data_size():
    t = overfit.table(_grid())
    assert len(t) == 24 and t["whole_split"].sum() == 4
    assert set(t.loc[t["whole_split"], "D"]) == {WHOLE}
    row = t[(t["N"] == t["N"].min()) & (t["D"] == 2**18)].iloc[0]
    assert row["stop_epochs"] == pytest.approx(4.0)
    assert row["L"] == pytest.approx(row["val_at_stop"] + 0.01)  # the test loss, not the validation loss
    assert overfit.table([]).empty


def test_eq_1_5_is_recovered_and_delta_L_collapses_on_one_curve():
    t = overfit.table(_grid())
    nd = overfit.fit_nd(t)
    assert nd.params["alpha_N"] == pytest.approx(TRUE["alpha_N"], rel=1e-3)
    assert nd.params["alpha_D"] == pytest.approx(TRUE["alpha_D"], rel=1e-3)
    assert nd.ratio == pytest.approx(0.8, rel=1e-3)
    x = overfit.collapse_x(t["N"], t["D"], nd.ratio)
    assert np.allclose(overfit.delta_L(t, nd), overfit.delta_L_law(x, nd), rtol=1e-6, atol=1e-9)
    assert np.all(overfit.delta_L(t, nd) > 0)


def test_the_data_needed_keeps_delta_L_at_the_tolerance():
    nd = overfit.fit_nd(overfit.table(_grid()))
    N = np.array([1e4, 1e6, 1e8])
    D = overfit.data_needed(N, nd, delta=0.02)
    assert np.allclose(overfit.delta_L_law(overfit.collapse_x(N, D, nd.ratio), nd), 0.02)
    assert D[1] / D[0] == pytest.approx(100**nd.ratio)  # D ∝ N^(α_N/α_D)
    with pytest.raises(ValueError, match="positive"):
        overfit.data_needed(N, nd, delta=0)


def test_the_bootstrap_resamples_sizes_and_gives_an_interval_for_the_ratio():
    nd = overfit.fit_nd(overfit.table(_grid(noise=0.005, seed=1)), bootstrap=40, seed=0)
    lo, hi = nd.ratio_ci()
    assert lo < nd.ratio < hi and nd.result.resampling == "groups"
    assert nd.ratio_ci_text() == f"{lo:.3f}–{hi:.3f}"
    # resamples whose α_D ends at the fitter's cap make the ratio's lower end the optimiser's: only the upper is given
    import dataclasses

    boot = nd.result.boot_params.copy()
    boot.loc[boot.index[:5], "alpha_D"] = fit.EXPONENT_CAP
    capped = overfit.NDFit(dataclasses.replace(nd.result, boot_params=boot,
                                               ci={**nd.result.ci, "alpha_D": (0.05, fit.EXPONENT_CAP)}))
    text = capped.ratio_ci_text()
    assert text.startswith("≤ ") and "lower end not identified" in text and fit.CAP_REACHED in text


def test_one_size_or_one_data_size_is_too_few():
    t = overfit.table(_grid())
    with pytest.raises(fit.FitError, match="at least 2 sizes"):
        overfit.fit_nd(t[t["N"] == t["N"].min()])


def test_the_two_panels_of_fig_9_draw():
    from scaling_lib import plots

    t = overfit.table(_grid())
    nd = overfit.fit_nd(t)
    fig = plots.overfit_by_size(t, nd)
    assert len(fig.axes[0].get_lines()) == 2 * t["D"].nunique()  # points and the fit at each D
    x = overfit.collapse_x(t["N"], t["D"], nd.ratio)
    fig = plots.overfit_collapse(t, x, overfit.delta_L(t, nd), nd)
    assert len(fig.axes[0].collections) == 1 and len(fig.axes[0].collections[0].get_offsets()) == len(t)


def test_the_data_coefficient_has_an_interval_from_the_bootstrap():
    nd = overfit.fit_nd(overfit.table(_grid(noise=0.005, seed=1)), bootstrap=40, seed=0)
    lo, hi = overfit.data_needed_coefficient_ci(nd)
    assert lo <= overfit.data_needed_coefficient(nd) <= hi
    assert np.isnan(overfit.data_needed_coefficient_ci(overfit.fit_nd(overfit.table(_grid())))[0])


def test_the_data_coefficient_text_gives_the_interval_or_says_why_there_is_none():
    import dataclasses

    nd = overfit.fit_nd(overfit.table(_grid(noise=0.005, seed=1)), bootstrap=40, seed=0)
    k = overfit.data_needed_coefficient(nd)
    lo, hi = overfit.data_needed_coefficient_ci(nd)
    assert overfit.data_needed_coefficient_text(nd) == f"{k:.3g} (95% interval {lo:.3g}–{hi:.3g})"
    assert overfit.data_needed_coefficient_text(overfit.fit_nd(overfit.table(_grid()))).count("(") == 0  # no bootstrap
    capped = dataclasses.replace(nd.result, ci={**nd.result.ci, "alpha_N": (0.05, fit.EXPONENT_CAP)})
    text = overfit.data_needed_coefficient_text(overfit.NDFit(capped))
    assert text.startswith(f"{k:.3g} (no interval: alpha_N ") and fit.CAP_REACHED in text


def _stopped_grid():
    """The exact grid, the whole-split runs having run out their budget instead of stopping early."""
    recs = _grid()
    for r in recs:
        if r["config"]["data_tokens"] == 0:
            r["status"] = "ok"
    return recs


def test_the_table_reads_the_step_of_the_stop_and_whether_early_stopping_ended_the_run():
    t = overfit.table(_stopped_grid())
    B = 32 * 128  # RunConfig's batch_size × n_ctx
    assert set(t["B"]) == {B}
    assert np.allclose(t["stop_steps"], t["stop_tokens"] / B)
    assert t["stopped_early"].sum() == 20 and not t.loc[t["whole_split"], "stopped_early"].any()


def test_the_stop_bound_is_eq_5_7():
    assert overfit.stop_bound(1.0, 2.1e3, 0.76) == pytest.approx(2.1e3)
    assert overfit.stop_bound(2.0**0.76, 2.1e3, 0.76) == pytest.approx(1.05e3)  # twice the excess, half the steps
    assert np.isnan(overfit.stop_bound([0.0, -0.1], 2.1e3, 0.76)).all()
    with pytest.raises(ValueError, match="positive"):
        overfit.stop_bound(1.0, 2.1e3, 0.0)


def test_early_stopping_sets_each_stopped_run_beside_its_bound():
    t = overfit.table(_stopped_grid())
    nd = overfit.fit_nd(t)
    S_c, alpha_S = 50.0, 0.5
    es = overfit.early_stopping(t, nd, S_c, alpha_S)
    assert len(es) == 20 and WHOLE not in set(es["D"])  # the runs that ran out their budget are left out
    N, D = es["N"].to_numpy(float), es["D"].to_numpy(float)
    true_excess = fit.kaplan_nd(N, D, **TRUE) - (TRUE["N_c"] / N) ** TRUE["alpha_N"]
    assert np.allclose(es["excess"], true_excess, rtol=1e-3)
    assert np.allclose(es["S_stop"], np.minimum(8_000_000, 4 * D) / (32 * 128))
    assert np.allclose(es["bound"], S_c / es["excess"] ** (1 / alpha_S))
    assert es["S_min"].isna().all() and (es["S"] == es["S_stop"]).all()
    assert (es["above"] == (es["S_stop"] >= es["bound"])).all()
    assert 0 < es["above"].sum() < len(es)  # the constants split the grid: the comparison is not trivially one-sided


def test_at_the_critical_batch_the_minimum_steps_are_half_the_steps():
    t = overfit.table(_stopped_grid())
    nd = overfit.fit_nd(t)
    B = 32 * 128
    # α_B this large makes B_crit(L) = B*/L^(1/α_B) equal B* at every loss
    es = overfit.early_stopping(t, nd, 50.0, 0.5, bcrit=(B, 1e9))
    assert np.allclose(es["S_min"], es["S_stop"] / 2) and (es["S"] == es["S_min"]).all()
    es3 = overfit.early_stopping(t, nd, 50.0, 0.5, bcrit=(3 * B, 1e9))
    assert np.allclose(es3["S_min"], es3["S_stop"] / 4)
    assert (es3["above"] == (es3["S_min"] >= es3["bound"])).all()


def test_a_run_at_or_below_the_infinite_data_loss_has_no_bound():
    t = overfit.table(_stopped_grid())
    nd = overfit.fit_nd(t)
    t.loc[0, "L"] = float(nd.loss_infinite_data(t.loc[0, "N"])) - 0.01
    es = overfit.early_stopping(t, nd, 50.0, 0.5)
    low = es["excess"] <= 0
    assert low.sum() == 1 and es.loc[low, "bound"].isna().all() and not es.loc[low, "above"].any()
    sm = overfit.stop_summary(es)
    assert sm["bounded"] == len(es) - 1  # the run without a bound is not counted
    assert sm["above"] == int(es["above"].sum()) and sm["share"] == sm["above"] / sm["bounded"]
    ratio = (es["S"] / es["bound"])[~low]
    assert sm["median_ratio"] == float(np.median(ratio))
    none = overfit.stop_summary(es[low])
    assert none["bounded"] == 0 and none["above"] == 0 and np.isnan(none["share"]) and np.isnan(none["median_ratio"])


def test_the_early_stopping_figure_draws_the_runs_and_the_bound():
    from scaling_lib import plots

    t = overfit.table(_stopped_grid())
    es = overfit.early_stopping(t, overfit.fit_nd(t), 50.0, 0.5)
    ax = plots.overfit_early_stopping(es, [(50.0, 0.5, "Eq. 5.7")]).axes[0]
    assert len(ax.collections[0].get_offsets()) == len(es) and len(ax.get_lines()) == 1
    plots.overfit_early_stopping(es.iloc[:0], [(50.0, 0.5, "Eq. 5.7")])  # no run stopped early: empty axes, no error


# Fig. 16 (right): one size's runs along training, against the whole-split run.
REF = [(0, 8.0, None), (1000, 5.0, 5.2), (2000, 4.0, 4.1), (4000, 3.5, 3.6), (8000, 3.2, 3.3)]


def _curve_record(data_tokens: int, points, size=(4, 96)) -> dict:
    r = _record(*size, data_tokens)
    r["curve"] = [dict(step=tok // 100, tokens=tok, val_loss=v, train_loss=tr) for tok, v, tr in points]
    return r


def _curve_runs():
    return [
        _curve_record(0, REF),
        # leaves the reference at 2,000 tokens (+5%), before its lowest validation loss at 4,000
        _curve_record(2**18, [(0, 8.0, None), (1000, 5.03, 5.1), (2000, 4.2, 4.0), (4000, 3.8, 3.5),
                              (8000, 3.9, 2.9)]),
        # within 0.5% throughout
        _curve_record(2**19, [(t, v * 1.005, tr) for t, v, tr in REF]),
    ]


def test_the_size_drawn_has_the_most_dataset_sizes_the_largest_among_ties():
    recs = [_record(L, d, D) for (L, d), Ds in zip(SIZES, ([2**18, 0], [2**18, 2**19, 0], [2**18, 2**20, 0], [0]))
            for D in Ds]
    t = overfit.table(recs)
    assert overfit.curve_size(t) == RunConfig(sweep="overfit", n_layer=3, d_model=64).N  # tied with (2, 32), larger
    t2 = t[t["N"] != t["N"].unique()[2]]
    assert overfit.curve_size(t2) == RunConfig(sweep="overfit", n_layer=2, d_model=32).N  # the smaller, with more
    with pytest.raises(ValueError, match="no runs"):
        overfit.curve_size(overfit.table([]))


def test_size_curves_keeps_one_size_and_carries_each_runs_data_size_and_stop():
    recs = _curve_runs() + [_record(1, 16, 2**18)]
    N = recs[0]["N"]
    c = overfit.size_curves(recs, N)
    assert set(c["N"]) == {N} and len(c) == 15
    assert set(c.loc[c["whole_split"], "D"]) == {WHOLE}
    assert set(c.loc[c["D"] == 2**18, "stop_tokens"]) == {4000}
    assert c["train_loss"].isna().sum() == 3  # the None at 0 tokens of each run
    with pytest.raises(ValueError, match="no run of size"):
        overfit.size_curves(recs, 1)


def test_departures_find_where_a_run_leaves_the_whole_split_run_and_the_gap_at_the_stop():
    recs = _curve_runs()
    dep = overfit.departures(overfit.size_curves(recs, recs[0]["N"]), tol=0.01).set_index("D")
    left = dep.loc[2**18]
    assert left["depart_tokens"] == 2000 and left["depart_rel"] == pytest.approx(0.05)
    assert left["depart_share"] == pytest.approx(0.5) and left["compared_to"] == 8000
    assert left["val_at_stop"] == 3.8 and left["gap"] == pytest.approx(0.3)
    near = dep.loc[2**19]
    assert np.isnan(near["depart_tokens"]) and np.isnan(near["depart_share"]) and near["compared_to"] == 8000
    assert near["gap"] == pytest.approx(3.2 * 1.005 - 3.3)
    whole = dep.loc[WHOLE]
    assert whole["whole_split"] and np.isnan(whole["depart_tokens"]) and whole["gap"] == pytest.approx(-0.1)
    # a looser tolerance lets the first run follow until its 4,000 tokens (+8.6%), a tighter one catches the second
    assert overfit.departures(overfit.size_curves(recs, recs[0]["N"]), tol=0.06).set_index("D").loc[2**18,
                                                                                                   "depart_tokens"] == 4000
    assert overfit.departures(overfit.size_curves(recs, recs[0]["N"]), tol=0.004).set_index("D").loc[2**19,
                                                                                                    "depart_tokens"] == 1000
    with pytest.raises(ValueError, match="positive"):
        overfit.departures(overfit.size_curves(recs, recs[0]["N"]), tol=0)


def test_departures_interpolate_the_reference_in_log_tokens_and_compare_only_within_it():
    ref = _curve_record(0, REF[:4])  # the reference stopped at 4,000 tokens
    # at 1,414 tokens (√2 × 1,000) the reference's loss is midway between 5.0 and 4.0 in log tokens: 4.5
    run = _curve_record(2**18, [(1414, 4.5 * 1.009, 5.0), (4000, 3.5, 3.4), (8000, 9.0, 3.0)])
    dep = overfit.departures(overfit.size_curves([ref, run], ref["N"]), tol=0.01).set_index("D").loc[2**18]
    assert np.isnan(dep["depart_tokens"]) and dep["compared_to"] == 4000  # 9.0 at 8,000 lies beyond the reference
    run["curve"][0]["val_loss"] = 4.5 * 1.012
    dep = overfit.departures(overfit.size_curves([ref, run], ref["N"]), tol=0.01).set_index("D").loc[2**18]
    assert dep["depart_tokens"] == 1414 and dep["depart_rel"] == pytest.approx(0.012, abs=2e-4)


def test_departures_are_nan_without_a_reference_and_the_gap_without_a_training_loss():
    recs = _curve_runs()[1:]  # no whole-split run
    recs[0]["curve"][3]["train_loss"] = None  # none at its stop
    dep = overfit.departures(overfit.size_curves(recs, recs[0]["N"])).set_index("D")
    assert dep["depart_tokens"].isna().all() and dep["compared_to"].isna().all()
    assert np.isnan(dep.loc[2**18, "gap"]) and dep.loc[2**18, "val_at_stop"] == 3.8
    assert np.isfinite(dep.loc[2**19, "gap"])


def test_the_curves_figure_draws_both_losses_of_each_run_and_its_stop():
    from scaling_lib import plots

    recs = _curve_runs()
    c = overfit.size_curves(recs, recs[0]["N"])
    fig = plots.overfit_curves(c)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2 * len(recs)  # validation (solid) and training (dashed) loss of each run
    assert sorted(line.get_linestyle() for line in lines) == ["-"] * 3 + ["--"] * 3
    assert all(min(line.get_xdata()) > 0 for line in lines)  # 0 tokens is off the log axis
    black = [line for line in lines if line.get_color() == "black"]
    assert len(black) == 2 and list(black[0].get_ydata()) == [v for _, v, _ in REF[1:]]
    stops = sorted(tuple(col.get_offsets()[0]) for col in ax.collections)
    assert stops == [(4000, 3.8), (8000, 3.2), (8000, 3.2 * 1.005)]
    assert len(fig.axes) == 2  # the colour bar of D
    plots.overfit_curves(c.iloc[:0])  # nothing stored: empty axes, no error
