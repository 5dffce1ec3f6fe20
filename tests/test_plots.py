"""The figure helpers draw what they are given: one mark per family or run, log axes, a legend."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scaling_lib import fit, plots


def _law(N, alpha, Nc=1e9):
    return (Nc / np.asarray(N, float)) ** alpha


def test_power_laws_draws_each_family_with_its_fit():
    N = np.geomspace(1e3, 1e6, 5)
    groups = {}
    for name, alpha in (("Transformer", 0.07), ("LSTM", 0.04)):
        df = pd.DataFrame(dict(N=N, loss=_law(N, alpha)))
        groups[name] = (df, fit.fit("power", df["N"], df["loss"]))
    groups["no fit"] = (pd.DataFrame(dict(N=N[:2], loss=[5.0, 4.9])), None)
    fig = plots.power_laws(groups, "N", "loss", xlabel="N")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.collections) == 3 and len(ax.lines) == 2  # three point sets, two fitted laws
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(groups)
    # the fitted line of the first family passes through its points
    x, y = ax.lines[0].get_data()
    assert np.allclose(np.interp(np.log(N), np.log(x), np.log(y)), np.log(_law(N, 0.07)), atol=1e-3)


def test_per_position_one_line_per_run_and_a_style_per_family():
    T = np.arange(1, 65)
    rows = [pd.DataFrame(dict(T=T, loss=3 + 2 * T**-0.5 * k, N=1000 * k, key=f"{fam}{k}", family=fam))
            for fam in ("Transformer", "LSTM") for k in (1, 2, 3)]
    fig = plots.per_position(pd.concat(rows))
    ax = fig.axes[0]
    runs = [line for line in ax.lines if len(line.get_xdata())]
    assert len(runs) == 6
    assert {line.get_linestyle() for line in runs[:3]} == {"-"} and {line.get_linestyle() for line in runs[3:]} == {"--"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Transformer", "LSTM"]
    assert ax.get_xscale() == "log" and len(fig.axes) == 2  # the axis and its colour bar


def test_per_position_without_a_style_draws_solid_lines_and_no_legend():
    T = np.arange(1, 33)
    df = pd.concat([pd.DataFrame(dict(T=T, loss=3 + T**-0.5, N=n, key=str(n))) for n in (10, 100)])
    ax = plots.per_position(df, style=None).axes[0]
    assert [line.get_linestyle() for line in ax.lines] == ["-", "-"] and ax.get_legend() is None


def test_estimates_draws_each_value_with_its_interval_and_the_bands():
    df = pd.DataFrame(dict(budget=[1e6, 2e6, 4e6, 2e6, 4e6], alpha=[0.03, 0.035, 0.04, 0.05, 0.055],
                           lo=[0.02, 0.03, 0.035, 0.045, 0.05], hi=[0.04, 0.04, 0.045, 0.055, 0.06],
                           ladder=["CPU", "CPU", "CPU", "GPU", "GPU"]))
    fig = plots.estimates(df, "budget", "alpha", hue="ladder", bands={"limit": (0.07, 0.06, 0.08)})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["limit", "CPU", "GPU"]
    cpu = ax.containers[0]  # the CPU points, in budget order, with bars from lo to hi
    assert np.allclose(cpu.lines[0].get_ydata(), [0.03, 0.035, 0.04])
    (bars,) = cpu.lines[2]
    assert np.allclose([seg[:, 1] for seg in bars.get_segments()], df.loc[:2, ["lo", "hi"]].to_numpy())
    assert len(ax.patches) == 1  # the band's interval
    assert plots.estimates(df[df["ladder"] == "CPU"], "budget", "alpha").axes[0].get_legend() is None


def test_loss_vs_budget_draws_one_line_per_run_even_with_seeds():
    rows = [dict(key=f"{N}-{seed}", N=N, seed=seed, tokens=b, final_val_loss=5 - 0.1 * seed - np.log10(N * b) / 20)
            for N in (1e3, 1e4) for seed in ((0, 1) if N == 1e3 else (0,)) for b in (1e6, 2e6, 4e6)]
    ax = plots.loss_vs_budget(pd.DataFrame(rows)).axes[0]
    assert len(ax.lines) == 3  # two seeds at N = 1e3, one at 1e4: no line jumps between seeds
    assert all(np.all(np.diff(line.get_xdata()) > 0) for line in ax.lines)


def test_power_law_fit_draws_the_held_out_fit_dashed():
    N = np.geomspace(1e3, 1e6, 6)
    df = pd.DataFrame(dict(N=N, loss=_law(N, 0.05) * np.array([1, 1, 1, 1, 1.02, 1.04])))
    ext = fit.extrapolation_check("power", df["N"], df["loss"], holdout=2)
    ax = plots.power_law_fit(df, "N", "loss", fit.fit("power", df["N"], df["loss"]), held_out=ext["held_out"],
                             held_out_fit=ext["fit"]).axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    x, y = dashed[0].get_data()  # it passes through the fit's predictions, not through the held-out points
    assert np.allclose(np.interp(np.log(N[-2:]), np.log(x), y), ext["predicted"], rtol=1e-3)
    assert "fit without the held-out points" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_against_paper_draws_ratios_with_intervals_and_skips_rows_without_a_paper_value():
    rows = pd.DataFrame(dict(label=["a", "b", "c"], value=[0.1, 0.2, 0.3], lo=[0.05, np.nan, 0.2],
                             hi=[0.15, np.nan, 0.4], paper_value=[0.1, 0.1, np.nan]))
    fig = plots.against_paper(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.get_legend() is not None
    # an interval with a lower end only (an exponent's at the fitter's cap) draws an arrow towards larger ratios
    one = pd.DataFrame(dict(label=["capped", "capped, paper negative"], value=[0.2, -0.2], lo=[0.15, -0.25],
                            hi=[np.nan, np.nan], paper_value=[0.1, -0.1]))
    ax = plots.against_paper(one).axes[0]
    arrows = [(a.xy[0], a.xyann[0]) for a in ax.texts]
    assert len(arrows) == 2 and arrows[0][0] > arrows[0][1] and arrows[1][0] < arrows[1][1]
    assert any("one end only" in t.get_text() for t in ax.get_legend().get_texts())
    empty = plots.against_paper(rows.iloc[:0])
    assert "no results" in empty.axes[0].texts[0].get_text()


def test_loss_vs_budget_labels_its_axes_with_units():
    df = pd.DataFrame(dict(N=[1e3, 1e3, 1e4, 1e4], tokens=[1e6, 2e6, 1e6, 2e6], final_val_loss=[5.0, 4.8, 4.5, 4.2]))
    fig = plots.loss_vs_budget(df)
    assert fig.axes[0].get_xlabel() == "tokens processed D"
    assert fig.axes[1].get_ylabel() == "non-embedding parameters N"  # the colour bar


def test_best_rates_fills_the_inside_points_and_draws_the_rule_at_each_budget():
    best = pd.DataFrame(dict(N=[1e3, 1e4, 1e5, 1e3, 1e4, 1e5], tokens=[1e6] * 3 + [4e6] * 3,
                             inside=[True, True, False, True, False, True],
                             lr_star=[0.04, 0.02, 0.01, 0.03, 0.015, 0.008], lr_grid=[0.04, 0.02, 0.005] * 2))
    fig = plots.best_rates(best, rule=lambda N, D: 0.5 * N**-0.3 * (D / 1e6) ** -0.1)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    marks = [c for c in ax.collections if len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in marks] == [2, 1, 2, 1]  # per budget: inside, then edge
    assert np.allclose(marks[1].get_offsets()[0], [1e5, 0.005])  # an edge best at its grid rate
    assert len(ax.lines) == 2  # the rule at each budget



def test_isoflop_profiles_mark_each_convex_vertex_filled_inside_and_hollow_at_an_edge():
    slices = pd.DataFrame([dict(C=C, N=N, L=3 + (np.log(N) - np.log(C) / 2.5) ** 2 / 20)
                           for C in (1e15, 1e17) for N in np.geomspace(1e4, 1e7, 5)])
    optima = pd.DataFrame(dict(C=[1e15, 1e17, 1e16], N_opt=[1e6, 1e7, 3e6], L_opt=[3.0, 3.0, 3.0],
                               convex=[True, True, False], edge=[False, True, False]))
    fig = plots.isoflop_profiles(slices, optima)
    ax = fig.axes[0]
    assert len(ax.lines) == 4  # each level's points and its parabola
    vertices = [c for c in ax.collections if len(c.get_offsets())]
    assert [tuple(c.get_offsets()[0]) for c in vertices] == [(1e6, 3.0), (1e7, 3.0)]  # not the concave level
    assert vertices[0].get_facecolor()[0][3] == 1 and vertices[1].get_facecolor().size == 0  # filled, hollow
    assert np.allclose(vertices[1].get_edgecolor()[0], ax.lines[2].get_color())  # the colour of its level
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vertex inside the sizes", "vertex at an edge"]
    assert fig.axes[1].get_ylabel() == "compute C (FLOPs)"  # the colour bar


def test_compute_optimal_sizes_rounds_the_fitted_and_the_reference_slopes_alike():
    C = np.geomspace(1e15, 1e17, 4)
    optima = {"fit": (pd.DataFrame(dict(C=C, N_opt=1e-6 * C ** 0.7304)), 0.7304, 1e-6)}
    ax = plots.compute_optimal_sizes(optima, reference={"App. B": 0.120452, "Kaplan": 0.73}).axes[0]
    assert len(ax.lines) == 3  # the fitted line and a line per reference slope
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fit: a = 0.73", "slope 0.12 (App. B)",
                                                                   "slope 0.73 (Kaplan)"]

def test_reference_lines_draw_the_orders_inside_the_loss_range_only():
    fig = plots.loss_vs_budget(pd.DataFrame(dict(key=["a"] * 3, N=[1e3] * 3, tokens=[1e6, 2e6, 4e6],
                                                 final_val_loss=[4.0, 4.5, 5.0])))
    ax = fig.axes[0]
    before = len(ax.lines)
    ylim = ax.get_ylim()
    assert plots.reference_lines(ax, dict(unigram=6.75, bigram=4.7, trigram=4.19)) == ["bigram", "trigram"]
    added = ax.lines[before:]
    assert sorted(line.get_ydata()[0] for line in added) == [4.19, 4.7]  # 6.75 is off the axis
    assert [t.get_text() for t in ax.texts] == ["bigram", "trigram"]
    assert ax.get_ylim() == ylim  # the lines do not stretch the axis
    assert plots.reference_lines(ax, None) == []
    assert plots.reference_lines(ax, dict(unigram=9.0, bigram=8.0)) == []  # all off the axis: nothing drawn
    assert len(ax.lines) == before + 2


# --- the budget and context chapters' figures ------------------------------------------------------
def test_serving_tradeoff_draws_N_and_D_per_law_and_leaves_no_serving_off_the_log_axis():
    r = np.array([0.0, 1.0, 10.0])
    serve = pd.concat([pd.DataFrame({"law": law, "T / D_opt": r, "N / N_opt": [1, 0.8, 0.5], "D / D_opt": [1, 1.5, 3],
                                     "FLOPs saved": [0, 0.05, 0.3]}) for law in ("A", "B")])
    fig = plots.serving_tradeoff(serve)
    left, right = fig.axes
    assert (left.get_xscale(), left.get_yscale(), right.get_yscale()) == ("log", "log", "linear")
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["A: N", "A: D", "B: N", "B: D"]
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["A", "B"]
    assert len(left.lines) == 5 and len(right.lines) == 3  # two per law and one per law, and each axis' level
    assert np.isnan(left.lines[0].get_xdata()[0])  # T = 0: no point on the log axis
    assert np.allclose(right.lines[0].get_ydata(), [0, 5, 30])  # in percent
    assert left.lines[-1].get_ydata()[0] == 1.0 and right.lines[-1].get_ydata()[0] == 0.0


def test_latency_price_draws_the_cost_ratio_against_a_bound_that_tightens_to_the_right():
    bounds = pd.DataFrame({"latency bound (ms)": [20.0, 15.0, 10.0], "extra FLOPs": [0.0, 0.1, 2.0]})
    ax = plots.latency_price(bounds, 0.25).axes[0]
    (line,) = ax.lines
    assert np.allclose(line.get_ydata(), [1.0, 1.1, 3.0]) and ax.get_yscale() == "log"
    assert ax.xaxis_inverted() and "0.25 ms a layer" in ax.get_xlabel()


def test_loss_at_positions_draws_one_line_per_position_it_has():
    curves = pd.DataFrame([dict(T=t, tokens=k, loss=5 - np.log(t * k) / 10, N=1234) for t in (1, 2, 3, 4, 8)
                           for k in (4e6, 1e6, 2e6)])
    ax = plots.loss_at_positions(curves).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["T = 1", "T = 2", "T = 4", "T = 8"]  # 3 not picked
    assert all(np.all(np.diff(line.get_xdata()) > 0) for line in ax.lines)  # along training
    assert ax.get_title().endswith("N = 1,234") and ax.get_xscale() == "log"


def test_context_difference_draws_one_line_per_size_and_the_zero_line():
    diff = pd.DataFrame([dict(N=n, T=t, **{"short minus full": 0.01 * t - 0.1}) for n in (1000, 20000) for t in (1, 2, 4)])
    ax = plots.context_difference(diff, 32, 128).axes[0]
    assert len(ax.lines) == 3 and ax.lines[-1].get_ydata()[0] == 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["N = 1,000", "N = 20,000"]
    assert ax.get_ylabel() == "loss, n_ctx 32 minus n_ctx 128 (nats)"
    assert ax.lines[0].get_color() != ax.lines[1].get_color()  # coloured by N


def test_recurrent_draws_each_number_of_passes_against_N_and_against_C():
    runs = pd.DataFrame(dict(N=[1e4, 1e5, 1e4, 1e5], C=[1e12, 1e13, 2e12, 2e13], final_val_loss=[5.0, 4.5, 4.9, 4.4],
                             n_recur=[1, 1, 2, 2]))
    per_N, per_C = plots.recurrent(runs).axes
    assert [t.get_text() for t in per_N.get_legend().get_texts()] == ["1 pass", "2 passes"]
    assert np.allclose(per_C.lines[1].get_xdata(), [2e12, 2e13]) and np.allclose(per_N.lines[1].get_xdata(), [1e4, 1e5])
    assert per_N.get_shared_y_axes().joined(per_N, per_C)


def test_overfit_early_stopping_draws_each_bound_it_is_given_within_the_points_range():
    es = pd.DataFrame(dict(N=[1e3, 1e4, 1e5, 1e5], D=[1e5, 1e5, 1e6, 1e6], excess=[0.05, 0.2, 0.5, -0.1],
                           S=[3000.0, 800.0, 200.0, 100.0]))
    bounds = [(2100.0, 0.76, "Kaplan"), (50.0, 0.11, "book")]
    ax = plots.overfit_early_stopping(es, bounds).axes[0]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 3  # no place for excess <= 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Kaplan", "book"]
    x, y = ax.lines[1].get_data()
    assert np.allclose(y, 50.0 / x ** (1 / 0.11))
    assert ax.get_ylim() == (20.0, 30000.0)  # a steep bound does not stretch the frame past the points
    assert plots.overfit_early_stopping(es, []).axes[0].get_legend() is None


def test_the_reference_phrase_names_only_the_orders_drawn():
    assert plots.reference_phrase(["bigram", "trigram"]) == "; dotted, the corpus's bigram and trigram cross-entropies"
    assert plots.reference_phrase(["trigram"], [], sep=", ") == ", dotted, the corpus's trigram cross-entropy"
    assert plots.reference_phrase(["trigram"], ["unigram", "bigram"]).endswith("unigram, bigram and trigram "
                                                                               "cross-entropies")
    assert plots.reference_phrase([]) == "" and plots.reference_phrase() == ""
    assert plots.reference_phrase(["bigram"], quantity=("perplexity", "perplexities")).endswith("bigram perplexity")
