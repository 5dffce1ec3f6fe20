"""The ladder's laws in N, on synthetic ladders whose exponents are known."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from scaling_lib import ladder

SIZES = ((1, 768), (1, 3072), (2, 13824), (2, 55296), (3, 147456), (4, 442368), (4, 786432))
BUDGETS = (1_000_000, 2_000_000, 4_000_000, 8_000_000, 16_000_000)


def chinchilla(N, D):
    return 1.8 + 30 * N**-0.25 + 2000 * D**-0.45


def table(sizes=SIZES, budgets=BUDGETS, seeds=(0,), law=chinchilla, noise=0.0, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for n_layer, N in sizes:
        for s in seeds:
            for D in budgets:
                loss = law(N, D) * (1 + noise * rng.standard_normal())
                rows.append(dict(N=N, N_total=N + 4096 * 64, n_layer=n_layer, d_model=round(math.sqrt(N / (12 * n_layer))),
                                 seed=s, tokens=D, final_val_loss=loss,
                                 C_exact=6 * (N + 20_000) * D, is_longest=D == budgets[-1], epochs=D / 9e6))
    return pd.DataFrame(rows)


def test_a_fixed_budget_power_law_is_recovered_and_predicts_its_held_out_sizes():
    t = table(law=lambda N, D: (1e13 / N) ** 0.07)
    fb = ladder.fixed_budget(t, 16_000_000, bootstrap=0)
    assert math.isclose(fb.fit.params["alpha"], 0.07, rel_tol=1e-6)
    assert fb.held_out_errors() == "+0.00%, +0.00%"
    few = ladder.fixed_budget(t[t["N"] < 100_000], 16_000_000, bootstrap=0)
    assert few.extrapolation is None and few.held_out_errors() == "n/a"


def test_held_out_errors_average_over_seeds_and_say_how_many():
    t = table(seeds=(0, 1, 2), noise=0.003, law=lambda N, D: (1e13 / N) ** 0.07)
    text = ladder.fixed_budget(t, 16_000_000, bootstrap=0).held_out_errors()
    assert text.count("(3 seeds)") == 2


def test_the_joint_laws_recover_the_chinchilla_exponents_with_a_hierarchical_bootstrap():
    t = table(seeds=(0, 1), noise=0.001)
    fits = ladder.joint(t, bootstrap=20)
    ch = fits["chinchilla"]
    assert abs(ch.params["alpha"] - 0.25) < 0.05 and abs(ch.params["beta"] - 0.45) < 0.05
    assert ch.resampling == "groups, then units within"
    assert set(fits) == {"kaplan-nd", "chinchilla"}


def test_the_exponent_by_budget_uses_the_same_sizes_at_every_budget():
    t = table()
    # the largest size reached only the two shortest budgets: it is left out of every budget
    t = t[~((t["N"] == 786432) & (t["tokens"] > 2_000_000))]
    by = ladder.alpha_by_budget(t, bootstrap=0)
    assert list(by["budget"]) == list(BUDGETS) and (by["sizes"] == 6).all()
    assert by["alpha_N"].is_monotonic_increasing  # the data term flattens the short budgets most


def test_the_last_doubling_is_the_largest_sizes_loss_drop_over_its_last_two_budgets():
    t = table(seeds=(0, 1))
    at = t[t["N"] == 786432].groupby("tokens")["final_val_loss"].mean()
    drop = 1 - at[16_000_000] / at[8_000_000]
    assert ladder.last_doubling(t) == f"N = 786,432 still lost {drop:.1%} of its loss from 8M to 16M tokens"
    assert drop > 0.001
    stepped = t.assign(tokens=t["tokens"] // 4096 * 4096)  # budgets rounded to whole steps are still doublings
    assert ladder.last_doubling(stepped) == ladder.last_doubling(t)
    odd = t[~((t["N"] == 786432) & (t["tokens"] == 8_000_000))]  # 4M then 16M: not a doubling
    assert ladder.last_doubling(odd).startswith("n/a")


def test_the_budget_trend_counts_the_doublings_that_move_the_way_it_moves():
    def trend(*alphas, last=2):
        return ladder.budget_trend(pd.DataFrame(dict(budget=BUDGETS[:len(alphas)], alpha_N=alphas)), last=last)

    # one early fall in the noise, then three rises: still rising, so not levelled
    assert trend(0.0227, 0.0205, 0.0256, 0.0367, 0.0457) == dict(moves="rises", steps=3, doublings=4, levelled=False)
    assert trend(0.02, 0.03, 0.04, 0.039)["levelled"]  # the last doubling no longer raises it
    assert trend(0.02, 0.03, 0.04, 0.039, last=1)["levelled"] and not trend(0.02, 0.03, 0.04, last=2)["levelled"]
    # falling overall: the count is of the falls
    assert trend(0.05, 0.04, 0.045, 0.03) == dict(moves="falls", steps=2, doublings=3, levelled=True)
    by = ladder.alpha_by_budget(table(), bootstrap=0)
    assert ladder.budget_trend(by.iloc[::-1]) == ladder.budget_trend(by)  # read in budget order
    with pytest.raises(ValueError, match="2 budgets"):
        trend(0.02)


def test_chinchillas_local_slope_is_the_slope_of_its_infinite_data_law():
    t = table(noise=0.0)
    ch = ladder.joint(t, bootstrap=0)["chinchilla"]
    N = np.array([1e3, 1e5, 1e7])
    local = ladder.chinchilla_local_alpha(ch, N)
    L = lambda n: ch.params["E"] + ch.params["A"] * n ** -ch.params["alpha"]  # noqa: E731
    numeric = -(np.log(L(N * 1.001)) - np.log(L(N / 1.001))) / (2 * np.log(1.001))
    np.testing.assert_allclose(local, numeric, rtol=1e-5)
    assert (local < ch.params["alpha"]).all() and np.all(np.diff(local) < 0)  # E flattens it, the more the larger N


def test_the_seed_spread_is_the_relative_sample_std_at_the_longest_shared_budget():
    t = table(sizes=SIZES[:2], seeds=(0, 1, 2), noise=0.01)
    t = t[~((t["seed"] == 2) & (t["tokens"] == 16_000_000))]  # one seed stopped short
    sp = ladder.seed_spread(t)
    assert list(sp["budget"]) == [8_000_000, 8_000_000] and (sp["seeds"] == 3).all()
    at = t[(t["N"] == 768) & (t["tokens"] == 8_000_000)]["final_val_loss"]
    assert math.isclose(sp["rel_std"].iloc[0], at.std(ddof=1) / at.mean())
    assert ladder.seed_spread(table()).empty


def test_the_nearest_seed_spread_is_the_size_nearest_in_log_n():
    sp = ladder.seed_spread(table(sizes=SIZES[:3], seeds=(0, 1), noise=0.01))  # N = 768, 3072, 13824
    near = ladder.nearest_seed_spread(sp, 2000)  # log-nearer 3072 (x1.5) than 768 (x2.6), though nearer 768 in N
    assert near["N"] == 3072 and isinstance(near["N"], int) and near["rel_std"] == sp["rel_std"].iloc[1] > 0
    assert ladder.nearest_seed_spread(sp, 1e9)["N"] == 13824 and ladder.nearest_seed_spread(sp, 1)["N"] == 768
    assert ladder.nearest_seed_spread(sp, 1536)["N"] == 768  # twice 768, half 3072: as near, the smaller
    assert ladder.nearest_seed_spread(ladder.seed_spread(table()), 2000) is None  # one seed: no spread


def test_the_choices_table_changes_one_thing_at_a_time():
    t = table(noise=0.001)
    ch = ladder.choices(t, bootstrap=0)
    assert list(ch["choice"]) == list(ladder.CHOICES)
    base, no_one_layer, no_short = ch.iloc[0], ch.iloc[1], ch.iloc[2]
    assert base["sizes"] == 7 and no_one_layer["sizes"] == 5 and no_short["points"] == 7 * 4
    # leaving out the shortest budget does not move L(N) at the longest one
    assert no_short["fixed_alpha_N"] == base["fixed_alpha_N"]
    # another parameter count moves the exponents
    named = ch.set_index("choice")
    for other in ("all parameters N_total in place of N", "N from the exact compute, C_exact / 6D"):
        assert named.loc[other, "fixed_alpha_N"] != base["fixed_alpha_N"]
    # the budgets from 4M on: the same sizes, fewer points, the same L(N) at the longest budget
    late = named.loc["budgets below 4M left out (chosen after the warmup run)"]
    assert late["sizes"] == 7 and late["points"] == 7 * sum(b >= 0.99 * 4e6 for b in BUDGETS)
    assert late["fixed_alpha_N"] == base["fixed_alpha_N"]
    assert base["fixed_alpha_N_ci"].startswith("n/a (no bootstrap")
    # another reading of the same runs is one more row, fitted as the book's choice is
    read = ladder.choices(t, bootstrap=0, readings={"read otherwise": t, "half the loss": t.assign(
        final_val_loss=t["final_val_loss"] / 2)}).set_index("choice")
    assert list(read.index)[-2:] == ["read otherwise", "half the loss"]
    assert read.loc["read otherwise", "fixed_alpha_N"] == pytest.approx(base["fixed_alpha_N"])
    assert read.loc["half the loss", "points"] == base["points"]
    spread = ladder.choice_spread(ch)
    row = spread.set_index("exponent").loc["ch_alpha"]
    assert row["lo"] <= row["book"] <= row["hi"] and math.isclose(row["spread"], row["hi"] - row["lo"])
    # the book's value is its own row's, wherever the row stands
    pd.testing.assert_frame_equal(ladder.choice_spread(ch.iloc[::-1]), spread)
    assert ch.iloc[0]["choice"] == ladder.BOOK_CHOICE and row["book"] == base["ch_alpha"]


def test_the_book_row_takes_the_fits_the_caller_holds_and_refits_the_others():
    t = table(noise=0.001)
    held = {"power": ladder.fixed_budget(t, BUDGETS[-1], bootstrap=0).fit, **ladder.joint(t, bootstrap=0)}
    refit, reused = ladder.choices(t, bootstrap=0), ladder.choices(t, bootstrap=0, book=held)
    pd.testing.assert_frame_equal(refit, reused)  # the same table as fitting them again
    fake = dict(held, power=dataclasses.replace(held["power"], params={**held["power"].params, "alpha": 9.0}))
    used = ladder.choices(t, bootstrap=0, book=fake)
    assert used.iloc[0]["fixed_alpha_N"] == 9.0  # the held fit is read, not refitted
    assert (used.iloc[1:]["fixed_alpha_N"] < 1).all()  # only the book's own row
    wrong = dict(held, power=dataclasses.replace(held["power"], n_points=3))  # a fit of other points
    with pytest.raises(ValueError, match="3 points"):
        ladder.choices(t, bootstrap=0, book=wrong)


def test_one_size_per_width_leaves_out_the_deeper_sizes_of_a_width():
    t = table(sizes=(*SIZES, (2, 1536), (2, 6144)))  # 2 x 8 and 2 x 16: the widths of 768 and 3,072
    ch = ladder.choices(t, bootstrap=0).set_index("choice")
    assert ch.loc["as fitted in the book", "sizes"] == 9
    assert ch.loc["one size per width (a deeper size of a width left out)", "sizes"] == 7
    assert ladder.choices(table(), bootstrap=0).iloc[-1]["sizes"] == 7  # one depth a width: nothing to leave out


def test_a_choice_that_leaves_too_few_sizes_says_so():
    t = table(sizes=((1, 768), (1, 3072), (2, 13824)))
    ch = ladder.choices(t, bootstrap=0)
    row = ch.set_index("choice").loc["1-layer sizes left out (as Kaplan et al. do)"]
    assert np.isnan(row["nd_alpha_N"]) and row["nd_alpha_N_ci"] == "n/a (fewer than 3 sizes)"


def test_same_rate_gaps_compare_the_runs_of_nearly_one_rate_budget_by_budget():
    fixed = pd.DataFrame(dict(N=[786_432] * 3 + [442_368], tokens=[1e6, 8e6, 8e6, 8e6], lr=[0.00244] * 3 + [0.00339],
                              seed=0, final_val_loss=[5.38, 4.25, 4.23, 4.33]))  # two runs reach 8M: their mean
    grid = pd.DataFrame(dict(N=[786_432] * 4 + [442_368] * 2, tokens=[1e6, 8e6, 1e6, 8e6, 8e6, 8e6],
                             lr=[0.00125, 0.00125, 0.0025, 0.0025, 0.0025, 0.005], seed=0,
                             final_val_loss=[5.48, 4.32, 5.55, 4.28, 4.34, 4.35]))
    got = ladder.same_rate_gaps(fixed, grid)
    assert got["N"].tolist() == [786_432, 786_432]  # 442k's nearest grid rate is 26% off the rule's: left out
    assert (got["lr_grid"] == 0.0025).all() and got["tokens"].tolist() == [1e6, 8e6]
    assert got["gap"].tolist() == pytest.approx([5.55 / 5.38 - 1, 4.28 / 4.24 - 1])
    assert (got["seeds"] == 1).all() and (got["spread"] == 0).all()
    assert len(ladder.same_rate_gaps(fixed, grid, within=1.5)) == 3
    assert ladder.same_rate_gaps(fixed, grid[grid["N"] == 1]).empty
    # more seeds in the grid: the gap is read on the seed the fixed ladder holds, the spread over all of them
    more = pd.concat([grid, grid[np.isclose(grid["lr"], 0.0025)].assign(seed=1, final_val_loss=[5.38, 4.27, 4.33])])
    got = ladder.same_rate_gaps(fixed, more)
    assert got["gap"].tolist() == pytest.approx([5.55 / 5.38 - 1, 4.28 / 4.24 - 1])
    assert got["spread"].tolist() == pytest.approx([5.55 / 5.38 - 1, 4.28 / 4.27 - 1])
    # with no seed in common, every seed of the grid is averaged
    got = ladder.same_rate_gaps(fixed.assign(seed=7), more)
    assert (got["seeds"] == 2).all() and got["gap"].iloc[0] == pytest.approx((5.55 + 5.38) / 2 / 5.38 - 1)


def test_reach_names_each_longest_budget():
    t = table()
    assert ladder.reach(t) == "N = 768 to 786,432 to 16M tokens (1.8 epochs)"
    # a rate added to a grid past an edge, trained only to 4M: its size still reaches 16M
    short = t[(t["N"] == t["N"].max()) & (t["tokens"] <= 4_000_000)].assign(lr=1.0)
    short["is_longest"] = short["tokens"] == 4_000_000
    assert ladder.reach(pd.concat([t, short])) == ladder.reach(t)


def _record(N, tokens, seed=0):
    return dict(key=f"{N}-{tokens}-{seed}", N=N, tokens=tokens - 512, config=dict(tokens=tokens, seed=seed),
                final=dict(per_position_loss=[5.0, 4.0]))


def test_sizes_are_compared_at_the_longest_budget_they_all_reached():
    # the smaller sizes went on to 16M, the largest stopped at 8M: all are read at 8M
    recs = [_record(N, T) for N in (768, 3072, 13824) for T in (8_000_000, 16_000_000)] + [_record(1_536_000, 8_000_000)]
    budget, runs = ladder.runs_at_shared_budget(recs)
    assert budget == 8_000_000 and [r["N"] for r in runs] == [768, 3072, 13824, 1_536_000]
    assert {r["config"]["tokens"] for r in runs} == {8_000_000}
    # once the largest reaches 16M too, all are read there; a record given twice counts once; the lowest seed wins
    more = recs + [_record(1_536_000, 16_000_000, seed=1), _record(1_536_000, 16_000_000, seed=0), recs[0]]
    budget, runs = ladder.runs_at_shared_budget(more)
    assert budget == 16_000_000 and len(runs) == 4 and runs[-1]["config"]["seed"] == 0
    assert ladder.runs_at_shared_budget([_record(768, 1_000_000), _record(3072, 2_000_000)]) == (None, [])
    assert ladder.runs_at_shared_budget([]) == (None, [])
