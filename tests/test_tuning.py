"""The best rate of each (N, D) of a tuned grid, and the rule LR*(N, D) fitted to them."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling_lib import tuning


def grid_table(rule=lambda N, D: 0.5 * N**-0.4 * D**-0.1, Ns=(1e3, 4e3, 16e3, 64e3),
               Ds=(2.5e5, 1e6, 4e6, 16e6), steps=(-2, -1, 0, 1, 2), seeds=(0,)):
    """A runs table whose loss is exactly quadratic in log rate around `rule`, on a x2 lattice."""
    rows = []
    for N in Ns:
        centre = 2.0 ** round(math.log2(rule(N, Ds[-1])))
        for k in steps:
            lr = centre * 2.0**k
            for seed in seeds:
                for D in Ds:
                    loss = 10 * N**-0.1 + 0.3 * math.log(lr / rule(N, D)) ** 2 + 0.001 * seed
                    rows.append(dict(N=int(N), tokens=int(D), lr=lr, seed=seed, final_val_loss=loss))
    return pd.DataFrame(rows)


def test_best_rates_reads_the_parabola_minimum_between_grid_points():
    t = grid_table()
    best = tuning.best_rates(t)
    assert len(best) == 16 and best["inside"].all() and (best["rates"] == 5).all()
    true = 0.5 * best["N"] ** -0.4 * best["tokens"] ** -0.1
    np.testing.assert_allclose(best["lr_star"], true, rtol=1e-6)  # exact for a quadratic in log rate
    np.testing.assert_allclose(best["loss_star"], 10 * best["N"] ** -0.1, rtol=1e-9)
    assert (best["loss_grid"] >= best["loss_star"] - 1e-12).all()


def test_best_at_budget_averages_the_seeds_at_the_best_rate_of_the_nearest_budget():
    t = grid_table(seeds=(0, 1, 2)).assign(N_total=lambda d: 2 * d["N"], flops_per_token=lambda d: 6 * d["N"])
    t["tokens"] = t["tokens"].where(t["tokens"] != 4e6, 3_999_488)  # budgets train whole steps
    got = tuning.best_at_budget(t, 4e6)
    best = tuning.best_rates(t).query("tokens == 3_999_488").set_index("N")
    assert got["N"].tolist() == sorted(best.index) and (got["tokens"] == 3_999_488).all()
    assert (got["seeds"] == 3).all() and got["inside"].all()
    np.testing.assert_allclose(got["lr"], best.loc[got["N"], "lr_grid"])
    np.testing.assert_allclose(got["final_val_loss"], best.loc[got["N"], "loss_grid"], rtol=1e-12)  # mean of seeds
    assert (got["N_total"] == 2 * got["N"]).all() and (got["flops_per_token"] == 6 * got["N"]).all()
    assert tuning.best_at_budget(t, 3e6).empty and tuning.best_at_budget(t.iloc[:0], 4e6).empty


def test_a_best_at_the_grid_edge_is_not_inside_and_is_left_out_of_the_rule():
    t = grid_table(steps=(0, 1, 2))  # the rule's rate sits at or below the grid's lowest rate at large D
    best = tuning.best_rates(t)
    edge = best[~best["inside"]]
    assert len(edge) > 0
    assert (edge["lr_star"] == edge["lr_grid"]).all()
    rule = tuning.fit_rule(tuning.best_rates(grid_table()))
    assert rule.left_out == 0
    assert best.loc[best["inside"], "N"].nunique() >= 2
    assert tuning.fit_rule(best).left_out == len(edge)


def test_fit_rule_recovers_the_exponents_and_round_trips(tmp_path):
    best = tuning.best_rates(grid_table(seeds=(0, 1)))
    rule = tuning.fit_rule(best, bootstrap=50, seed=0, sources=["k2", "k1"])
    assert rule.a == pytest.approx(-0.4, abs=1e-6) and rule.b == pytest.approx(-0.1, abs=1e-6)
    assert rule.A == pytest.approx(0.5, rel=1e-5)
    assert rule(1e4, 1e6) == pytest.approx(0.5 * 1e4**-0.4 * 1e6**-0.1, rel=1e-5)
    lo, hi = rule.ci["a"]
    assert lo - 1e-9 <= -0.4 <= hi + 1e-9 and rule.ci_text("a") != "" and rule.sources == ("k1", "k2")
    again = tuning.LRRule.load(rule.save(tmp_path / "rules" / "lr.json"))
    assert again == rule
    assert [p.name for p in (tmp_path / "rules").iterdir()] == ["lr.json"]


def test_a_single_budget_fixes_the_D_exponent_at_zero_and_too_few_points_raise():
    best = tuning.best_rates(grid_table(Ds=(1e6,)))
    rule = tuning.fit_rule(best)
    assert rule.b == 0.0 and "b" not in rule.ci
    with pytest.raises(tuning.RuleError, match="at least 3 points over 2 sizes"):
        tuning.fit_rule(best.iloc[:2])
    with pytest.raises(tuning.RuleError):
        tuning.fit_rule(tuning.best_rates(grid_table(Ns=(1e3,))))


def test_a_diverged_rate_is_the_worst_result_not_a_missing_one():
    t = grid_table(Ns=(1e3,), Ds=(1e6,))
    top = t["lr"] == t["lr"].max()
    t.loc[top, "final_val_loss"] = np.nan       # the highest rate diverged
    best = tuning.best_rates(t)
    assert best["rates"].iloc[0] == 5 and best["lr_grid"].iloc[0] < t["lr"].max()
    assert tuning.best_rates(t.iloc[:0]).empty


def test_the_optimum_of_one_size_is_the_parabola_through_the_grid_and_flags_an_edge():
    lrs = np.array([0.0025, 0.005, 0.01, 0.02, 0.04])
    g = pd.DataFrame(dict(lr=lrs[::-1], final_val_loss=4 + 0.3 * np.log(lrs[::-1] / 0.007) ** 2))
    o = tuning.optimum(g)
    assert o["lr_best"] == pytest.approx(0.007, rel=1e-6) and o["lr_grid_best"] == 0.005 and not o["at_edge"]
    assert o["n_lr"] == 5 and o["loss_at_best"] == pytest.approx(4 + 0.3 * math.log(0.005 / 0.007) ** 2)
    edge = tuning.optimum(g.assign(final_val_loss=g["lr"]))  # lower is better all the way down
    assert edge["at_edge"] and edge["lr_grid_best"] == 0.0025


def test_only_finished_grids_enter_the_rule_and_the_rule_says_which():
    t = grid_table()
    edge = grid_table(Ns=(256e3,), steps=(1, 2, 3))  # a size whose best is at the grid's low edge
    t = pd.concat([t, edge], ignore_index=True)
    best = tuning.best_rates(t)
    done, why = tuning.complete_sizes(best, grid_missing=[16_000, 1_000_000])
    assert done == [1000, 4000, 64000]
    assert why[16000] == "grid runs still planned" and "edge of the grid" in why[256000]
    assert why[1_000_000] == "no grid run stored"
    rule = tuning.fit_rule_on_complete(t, grid_missing=[16_000], bootstrap=20)
    assert rule.sizes_used == (1000, 4000, 64000) and rule.a == pytest.approx(-0.4, abs=1e-6)
    assert "N = 16,000 (grid runs still planned)" in rule.note and "N = 256,000" in rule.note
    capped = tuning.fit_rule_on_complete(t, max_n=5000)
    assert capped.sizes_used == (1000, 4000) and "above --max-n" in capped.note
    with pytest.raises(tuning.RuleError, match="1 size"):
        tuning.fit_rule_on_complete(t, grid_missing=[4000, 16_000, 64_000])


def test_a_rule_filed_before_these_fields_existed_still_loads(tmp_path):
    old = {"A": 0.5, "a": -0.4, "b": 0.0, "ci": {}, "points": 3, "sizes": 2, "left_out": 0, "rmse_log": 0.1,
           "n_boot": 0, "n_boot_ok": 0, "sources": ["k"]}
    rule = tuning.LRRule.from_dict(old)
    assert rule.sizes_used == () and rule.note == "" and rule(1e4, 1e6) == pytest.approx(0.5 * 1e4**-0.4)


def test_the_rule_command_fits_the_finished_grids_of_stored_runs_and_files_them(tmp_path, capsys):
    import json
    import shutil
    from pathlib import Path

    from scaling_lib.cli import main
    from scaling_lib.store import Store

    stored = Path(__file__).resolve().parents[1] / "runs" / "tune"
    (tmp_path / "tune").mkdir()
    for f in stored.glob("gpt-L[12]-d*-T16M-*.json"):  # the grids of 768 to 55k, finished and stored
        if f.name.startswith(("gpt-L1-d8-", "gpt-L1-d16-", "gpt-L2-d24-")):
            shutil.copy(f, tmp_path / "tune" / f.name)
    args = ["rule", "tune", "--store", str(tmp_path), "--bootstrap", "20"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes_used"] == [768, 3072, 13824] and "N = 24,576 (no grid run stored)" in out["note"]
    rule = tuning.LRRule.load(tmp_path / tuning.RULE_FILE)
    assert out["path"] == str(tmp_path / tuning.RULE_FILE) and rule.a == pytest.approx(out["a"])
    assert len(rule.sources) == out["sources"] > 0
    assert main(args) == 2  # filed already: refitting is asked for
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--replace" in err[0]
    assert main([*args, "--replace", "--max-n", "5000"]) == 0
    assert tuning.LRRule.load(tmp_path / tuning.RULE_FILE).sizes_used == (768, 3072)
    assert main(["rule", "tune", "--store", str(tmp_path / "empty")]) == 2
    assert "no stored run" in capsys.readouterr().err
    assert len(Store(tmp_path).records("tune")) == len(list((tmp_path / "tune").glob("*.json")))  # rules/ is no sweep


def test_the_rule_command_reads_the_grids_and_not_a_long_run(tmp_path, capsys):
    """A long run (one rate, past the grid's budgets, seed 0) is no grid: the rule is fitted as without it, and its
    size's grid does not count as unfinished while the long run is planned or once it is stored."""
    import json
    import shutil
    from pathlib import Path

    from scaling_lib.cli import main
    from scaling_lib.store import Store
    from test_predictions import fake_long_record

    stored = Path(__file__).resolve().parents[1] / "runs" / "tune"
    (tmp_path / "tune").mkdir()
    for f in stored.glob("gpt-L[12]-d*-T16M-*.json"):
        if f.name.startswith(("gpt-L1-d8-", "gpt-L1-d16-", "gpt-L2-d24-")):
            shutil.copy(f, tmp_path / "tune" / f.name)
    args = ["rule", "tune", "--store", str(tmp_path), "--bootstrap", "20", "--dry-run"]
    assert main(args) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["sizes_used"] == [768, 3072, 13824]  # 13,824's long run is planned, its grid is finished
    Store(tmp_path).save(fake_long_record(next(stored.glob("gpt-L2-d24-T16M-lr0.01-s0-*.json"))))
    assert main(args) == 0
    after = json.loads(capsys.readouterr().out)
    assert after == before


def test_rate_margins_set_the_best_rate_s_lead_beside_its_seed_spread():
    # one size, one budget: three rates on seed 0; the best (0.01) has two more seeds
    t = pd.DataFrame(dict(N=1000, tokens=1_000_000, lr=[0.005, 0.01, 0.02, 0.01, 0.01], seed=[0, 0, 0, 1, 2],
                          final_val_loss=[5.10, 5.00, 5.05, 5.20, 5.03]))
    got = tuning.rate_margins(t).iloc[0]
    assert got["lr_best"] == 0.01 and got["seeds"] == 3
    assert got["margin"] == pytest.approx(5.05 / 5.00 - 1) and got["spread"] == pytest.approx(5.20 / 5.00 - 1)
    assert got["under"]  # a 1% lead beside a 4% spread
    assert got["lr_mean"] == 0.02  # averaged, the best rate's unlucky seed hands the budget to 0.02
    # a firm lead; a budget whose best rate has one seed is not read; a diverged rate loses
    firm = t.assign(final_val_loss=[5.50, 5.00, 5.40, 5.02, 5.01])
    assert not tuning.rate_margins(firm)["under"].iloc[0]
    assert tuning.rate_margins(t[t["seed"] == 0]).empty and tuning.rate_margins(t.iloc[:0]).empty
    diverged = firm.assign(final_val_loss=[np.nan, 5.00, 5.40, 5.02, 5.01])
    assert tuning.rate_margins(diverged)["margin"].iloc[0] == pytest.approx(5.40 / 5.00 - 1)
    assert got["lr_next"] == 0.02 and got["paired_seeds"] == 1 and np.isnan(got["paired"])  # 0.02 has one seed


def test_rate_margins_compare_the_best_rate_and_the_next_on_the_seeds_they_share():
    t = pd.DataFrame(dict(N=1000, tokens=1_000_000, lr=[0.005, 0.01, 0.02, 0.01, 0.01, 0.02, 0.02],
                          seed=[0, 0, 0, 1, 2, 1, 2], final_val_loss=[5.10, 5.00, 5.05, 5.20, 5.03, 5.10, 5.06]))
    got = tuning.rate_margins(t).iloc[0]
    assert got["lr_best"] == 0.01 and got["lr_next"] == 0.02 and got["paired_seeds"] == 3
    assert got["paired"] == pytest.approx((5.05 + 5.10 + 5.06) / (5.00 + 5.20 + 5.03) - 1)
    assert got["paired_wins"] == 2  # 0.01 is the lower on seeds 0 and 2, not on 1


def test_the_best_rate_can_be_named_on_the_grid_s_seed_and_keeps_every_seed_of_it():
    t = pd.DataFrame(dict(N=1000, tokens=1_000_000, lr=[0.005, 0.01, 0.02, 0.01, 0.01], seed=[0, 0, 0, 1, 2],
                          final_val_loss=[5.10, 5.00, 5.05, 5.20, 5.03]))
    assert set(tuning.at_best_rate(t)["lr"]) == {0.02}  # averaged, 0.01's unlucky seed hands it to 0.02
    on_seed = tuning.at_best_rate(t, named_on="grid seed")
    assert set(on_seed["lr"]) == {0.01} and sorted(on_seed["seed"]) == [0, 1, 2]
    with pytest.raises(ValueError, match="named_on"):
        tuning.at_best_rate(t, named_on="median")


def test_a_rule_s_penalty_is_read_off_each_grid_s_parabola():
    t = grid_table()
    exact = tuning.rule_penalty(t, lambda N, D: 0.5 * N**-0.4 * D**-0.1)
    assert len(exact) == 16 and np.allclose(exact["penalty"], 0, atol=1e-9)  # the true rule costs nothing
    off = tuning.rule_penalty(t, lambda N, D: 0.5 * 2**0.5 * N**-0.4 * D**-0.1)  # half an octave too high
    assert (off["penalty"] > 0).all()
    # the loss is 10 N^-0.1 + 0.3 log(lr / lr*)^2: half an octave costs 0.3 (ln 2 / 2)^2 over 10 N^-0.1
    np.testing.assert_allclose(off["penalty"], 0.3 * (math.log(2) / 2) ** 2 / (10 * off["N"] ** -0.1), rtol=1e-6)
    snapped = tuning.rule_penalty(t, lambda N, D: 1e-9, snap=lambda lr: 1.0)  # far outside every grid
    assert snapped["penalty"].isna().all() and (snapped["lr_rule"] == 1.0).all()
