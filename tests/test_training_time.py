"""Training time (Kaplan §5.2): S_min and C_min at the critical batch, L(N, S_min) recovered, steps to a loss."""
import numpy as np
import pandas as pd
import pytest

from scaling_lib import fit, training_time
from scaling_lib.batch import bcrit_of_loss

TRUE = dict(alpha_N=0.08, N_c=1e9, alpha_S=0.7, S_c=300.0)
B_STAR, ALPHA_B = 2e5, 0.3
B = 4096.0  # tokens a step


def _curves(sizes=(3e3, 3e4, 3e5)) -> pd.DataFrame:
    """Curves whose S_min follows Eq. 1.6 exactly: for each loss on the law, S = S_min (1 + B_crit/B)."""
    rows = []
    for N in sizes:
        S_min = np.geomspace(50, 5e4, 60)
        L = fit.kaplan_ns(N, S_min, **TRUE)
        S = S_min * (1 + bcrit_of_loss(L, B_STAR, ALPHA_B) / B)
        rows += [dict(key=f"n{int(N)}", N=N, step=s, tokens=s * B, C=6 * N * s * B, val_loss=l) for s, l in zip(S, L)]
    return pd.DataFrame(rows)


def test_the_adjustment_is_eqs_5_4_and_5_5():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    assert np.allclose(adj["B"], B)
    Bc = bcrit_of_loss(adj["val_loss"], B_STAR, ALPHA_B)
    assert np.allclose(adj["S_min"], adj["step"] / (1 + Bc / B))
    assert np.allclose(adj["C_min"], adj["C"] / (1 + B / Bc))
    with pytest.raises(ValueError):
        training_time.adjusted(_curves(), -1.0, ALPHA_B)
    with pytest.raises(KeyError, match="val_loss"):
        training_time.adjusted(_curves().drop(columns="val_loss"), B_STAR, ALPHA_B)


def test_eq_1_6_is_recovered_from_adjusted_curves():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    res = training_time.fit_ns(adj, min_S=60, bootstrap=10)
    for k in ("alpha_N", "alpha_S"):
        assert res.params[k] == pytest.approx(TRUE[k], rel=1e-3)
    assert res.resampling == "groups"
    with pytest.raises(fit.FitError, match="2 sizes"):
        training_time.fit_ns(adj[adj["N"] == 3e3])


def test_steps_to_loss_reads_S_and_converts_it_at_the_targets_critical_batch():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    out = training_time.steps_to_loss(adj, [3.0, 1.0], B_STAR, ALPHA_B)
    assert out[out["target"] == 1.0]["S"].isna().all()  # below every curve's end: never reached
    reached = out.dropna()
    assert len(reached) == 3  # every size gets to 3 nats (the smallest ends at 2.79)
    for _, got in reached.iterrows():
        assert float(fit.kaplan_ns(got["N"], got["S_min"], **TRUE)) == pytest.approx(got["target"], rel=0.01)


def test_fig_4_right_draws_a_curve_and_a_fit_per_size():
    from scaling_lib import plots

    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    fig = plots.loss_against_min_steps(adj, TRUE)
    assert len(fig.axes[0].get_lines()) == 6 and fig.axes[0].get_xscale() == "log"


def test_the_ladder_curves_are_each_sizes_best_seed_0_run_after_its_warmup():
    from scaling_lib.config import RunConfig

    def rec(d_model, lr, seed, final):
        cfg = RunConfig(sweep="tune", corpus="tiny", n_layer=1, d_model=d_model, tokens=100_000, lr=lr, seed=seed,
                        warmup_tokens=1000)
        curve = [dict(step=s, tokens=t, C=6.0 * cfg.N * t, val_loss=v)
                 for s, t, v in ((0, 0, 8.0), (1, 500, 7.0), (4, 2000, 6.0), (40, 20_000, final))]
        return dict(key=f"{d_model}-{lr}-{seed}", name="x", sweep="tune", config=cfg.to_dict(), status="ok", N=cfg.N,
                    N_total=cfg.N, tokens=cfg.tokens, steps=40, data_tokens=0, epochs=0, C=0, C_exact=0, curve=curve,
                    budgets=[], final=dict(val_loss=final), provenance={})

    recs = [rec(8, 1e-3, 0, 5.0), rec(8, 3e-3, 0, 4.9), rec(8, 3e-3, 1, 4.8), rec(16, 1e-3, 0, 4.5)]
    c = training_time.ladder_curves(recs)
    assert set(c["key"]) == {"8-0.003-0", "16-0.001-0"}  # the best rate, seed 0 (not the better seed 1)
    assert (c["tokens"] > 1000).all() and len(c) == 4


def test_loss_at_reads_each_curve_at_a_level_and_leaves_the_rest_nan():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    g = adj[adj["N"] == 3e4]
    mid = float(g["S_min"].iloc[30])
    out = training_time.loss_at(adj, "S_min", [mid, 1e9]).set_index(["N", "level"])
    assert out.loc[(3e4, mid), "val_loss"] == pytest.approx(g["val_loss"].iloc[30])
    assert out.xs(1e9, level="level")["val_loss"].isna().all()  # past every curve's end
    with pytest.raises(KeyError, match="nope"):
        training_time.loss_at(adj, "nope", [1.0])


def test_loss_at_compute_solves_eq_1_6_at_the_critical_batch():
    for N, C in ((3e3, 1e12), (3e5, 1e15)):
        L = float(training_time.loss_at_compute(TRUE, N, C, B_STAR, ALPHA_B))
        S_min = C / (6 * N * float(bcrit_of_loss(L, B_STAR, ALPHA_B)))
        assert L == pytest.approx(float(fit.kaplan_ns(N, S_min, **TRUE)), rel=1e-8)
    more = training_time.loss_at_compute(TRUE, [3e3, 3e5], 1e16, B_STAR, ALPHA_B)
    assert more.shape == (2,) and np.all(more < training_time.loss_at_compute(TRUE, [3e3, 3e5], 1e13, B_STAR, ALPHA_B))


def test_fig_11_points_lie_on_eq_1_6_when_the_curves_do():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    out = training_time.fixed_compute_and_steps(adj, TRUE, B_STAR, ALPHA_B, n_levels=3)
    for name in ("C", "S"):
        pts = out[f"at_{name}"]
        assert len(pts) >= 3 and pts["level"].nunique() == 3
        assert np.allclose(pts["val_loss"], pts["predicted"], rtol=5e-3)  # interpolation error only
        assert len(out[f"pred_{name}"]) == 3 * 60
    best = training_time.best_size_at_compute(out["at_C"], out["pred_C"])
    assert list(best.columns) == ["C_min", "sizes", "N_best", "N_eq16", "inside", "within_2x"] and len(best) == 3
    assert (best["sizes"] >= 1).all()


def test_best_size_says_whether_eq_1_6_puts_it_inside_and_near():
    at_C = pd.DataFrame(dict(level=[1e12] * 3 + [1e13] * 3, N=[1e3, 1e4, 1e5] * 2,
                             val_loss=[5.0, 4.8, 4.9, 4.0, 4.1, 4.2]))
    Ns = np.geomspace(1e3, 1e5, 9)
    pred_C = pd.DataFrame(dict(level=[1e12] * 9 + [1e13] * 9, N=np.r_[Ns, Ns],
                               val_loss=np.r_[np.abs(np.log(Ns / 1.5e4)), Ns / 1e3]))  # optima 1.5e4ish, 1e3
    best = training_time.best_size_at_compute(at_C, pred_C)
    assert best["N_best"].tolist() == [1e4, 1e3]
    assert best["inside"].tolist() == [True, False]  # the second optimum is the grid's end
    assert best["within_2x"].tolist() == [True, True]
    assert not training_time.best_size_at_compute(at_C.assign(N=at_C["N"] * 8), pred_C)["within_2x"].iloc[1]


def test_levels_and_targets_are_passed_by_enough_runs():
    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    for col in ("S_min", "C_min"):
        levels = training_time.spanning_levels(adj, col, 4)
        assert len(levels) == 4 and np.all(np.diff(levels) > 0)
        span = adj.groupby("key")[col].agg(["min", "max"])
        for lv in levels[[0, -1]]:
            assert ((span["min"] <= lv * (1 + 1e-9)) & (span["max"] >= lv * (1 - 1e-9))).sum() >= 3
    targets = training_time.reach_targets(adj, 4)
    assert len(targets) == 4 and np.all(np.diff(targets) < 0)
    lowest = np.sort(adj.groupby("key")["val_loss"].min().to_numpy())  # each run's lowest loss
    assert targets[0] == pytest.approx(lowest[-1] * 1.01) and targets[-1] == pytest.approx(lowest[2])
    wider = training_time.reach_targets(adj, 4, min_runs=2, margin=0.05)
    assert wider[0] == pytest.approx(lowest[-1] * 1.05) and wider[-1] == pytest.approx(lowest[1])
    assert len(training_time.reach_targets(adj, 4, min_runs=len(lowest) + 1)) == 0
    reached = training_time.steps_to_loss(adj, targets, B_STAR, ALPHA_B).dropna()
    assert reached.groupby("target").size().min() >= 3
    assert len(training_time.spanning_levels(adj[adj["N"] == 3e3], "S_min")) == 0  # one run: no levels


def test_figs_11_and_19_draw_a_point_set_and_a_line_per_level():
    from scaling_lib import plots

    adj = training_time.adjusted(_curves(), B_STAR, ALPHA_B)
    out = training_time.fixed_compute_and_steps(adj, TRUE, B_STAR, ALPHA_B, n_levels=3)
    fig = plots.at_fixed_compute_and_steps(out["at_C"], out["at_S"], out["pred_C"], out["pred_S"])
    assert [len(ax.get_lines()) for ax in fig.axes] == [6, 6]  # 3 levels x (points, Eq. 1.6)
    steps = training_time.steps_to_loss(adj, training_time.reach_targets(adj, 4), B_STAR, ALPHA_B)
    fig = plots.steps_to_targets(steps)
    assert len(fig.axes[0].get_lines()) == 4 and fig.axes[0].get_yscale() == "log"


def test_the_ladder_curves_take_the_grid_run_not_a_longer_run_at_the_same_rate():
    from scaling_lib.config import RunConfig

    def rec(tokens, final, key):
        cfg = RunConfig(sweep="tune", corpus="tiny", n_layer=1, d_model=8, tokens=tokens, lr=1e-3, warmup_tokens=1000)
        curve = [dict(step=s, tokens=t, C=6.0 * cfg.N * t, val_loss=v)
                 for s, t, v in ((0, 0, 8.0), (4, 2000, 6.0), (40, 20_000, 5.2), (400, 200_000, final))]
        return dict(key=key, name="x", sweep="tune", config=cfg.to_dict(), status="ok", N=cfg.N, N_total=cfg.N,
                    tokens=cfg.tokens, steps=cfg.steps, data_tokens=0, epochs=0, C=0, C_exact=0, curve=curve,
                    budgets=[], final=dict(val_loss=final), provenance={})

    # a long run (four times the grid's budget, the same rate) ends lower, and is still not the grid's best run
    c = training_time.ladder_curves([rec(100_000, 5.0, "grid"), rec(400_000, 4.5, "long")])
    assert set(c["key"]) == {"grid"}
    # a rate added for the shorter budgets alone stops short of the grid's budget: named, the budget keeps it out
    runs = [rec(100_000, 5.0, "grid"), rec(400_000, 4.5, "long"), rec(25_000, 5.6, "growth")]
    assert set(training_time.ladder_curves(runs, tokens=100_000)["key"]) == {"grid"}
    assert set(training_time.ladder_curves(runs)["key"]) == {"growth"}  # what the shortest-run rule would take
