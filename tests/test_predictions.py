"""Predictions filed before their runs: what they record, what they refuse, and how they are scored."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scaling_lib import predictions, tuning
from scaling_lib.config import RunConfig
from scaling_lib.store import Store

BUDGETS = (250_000, 1_000_000, 4_000_000)
LONGEST = 16_000_000


def law(N, D):
    """The truth of the synthetic ladder: Chinchilla's form with plain exponents."""
    return 1.5 + 40 * N**-0.3 + 300 * D**-0.3


def ladder_table(Ns=(768, 3072, 13824, 55296, 147456), seeds=(0, 1, 2), noise=0.002, rng_seed=0):
    """A tuned grid's runs table: three rates in x2 steps, the middle one best, a few seeds."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for N in Ns:
        for k, lr in enumerate((0.005, 0.01, 0.02)):
            for s in seeds if k == 1 else (0,):
                for D in (*BUDGETS, LONGEST):
                    loss = law(N, D) * (1 + 0.01 * (k - 1) ** 2) * (1 + noise * rng.standard_normal())
                    rows.append(dict(N=N, tokens=D, lr=lr, seed=s, final_val_loss=loss, eval_version=2,
                                     key=f"k{N}-{lr}-{s}", status="ok"))
    return pd.DataFrame(rows)


def targets():
    base = RunConfig(sweep="tune", n_layer=4, d_model=128, tokens=LONGEST, budgets=BUDGETS, schedule="wsd")
    return [base.replace(lr=lr) for lr in (0.0025, 0.005, 0.01)]


def test_at_best_rate_keeps_every_seed_of_the_best_rate_only():
    t = ladder_table()
    best = tuning.at_best_rate(t)
    assert set(best["lr"]) == {0.01}
    assert len(best) == 5 * 4 * 3  # sizes x budgets x seeds


def test_a_prediction_records_its_sources_its_fits_and_the_keys_it_predicts(tmp_path):
    store = Store(tmp_path)
    cfgs = targets()
    rec = predictions.predict_ladder("largest", ladder_table(), cfgs, store=store, bootstrap=30, commit="abc")
    on_disk = json.loads(predictions.path("largest", store).read_text())
    assert on_disk == rec and rec["commit"] == "abc" and rec["kind"] == "prediction"
    assert rec["source_sizes"] == [768, 3072, 13824, 55296, 147456]
    assert len(rec["sources"]) == 5 * 3  # the best rate's three seeds at each size
    assert [f["form"] for f in rec["fits"]] == ["power", "kaplan-nd", "chinchilla"]
    assert all(f["resampling"] == "groups, then units within" for f in rec["fits"])
    assert {t["N"] for t in rec["targets"]} == {786_432}
    assert all(t["keys"] == sorted(c.key for c in cfgs) for t in rec["targets"])
    longest = next(t for t in rec["targets"] if t["tokens"] == LONGEST)
    assert set(longest["predicted"]) == {"power", "kaplan-nd", "chinchilla"}
    # the Chinchilla form is the truth here: its prediction lands near it, inside its own interval
    truth = law(786_432, LONGEST) * 1.0
    lo, hi = longest["ci"]["chinchilla"]
    assert lo < longest["predicted"]["chinchilla"] < hi
    assert abs(longest["predicted"]["chinchilla"] / truth - 1) < 0.02
    short = next(t for t in rec["targets"] if t["tokens"] == BUDGETS[0])
    assert "power" not in short["predicted"]  # L(N) is fitted at the longest budget only
    assert predictions.load_all(store) == [rec]


def test_a_prediction_is_never_redone_nor_made_after_its_runs(tmp_path):
    store = Store(tmp_path)
    t = ladder_table()
    predictions.predict_ladder("first", t, targets(), store=store, bootstrap=0)
    with pytest.raises(predictions.PredictionError, match="never redone"):
        predictions.predict_ladder("first", t, targets(), store=store, bootstrap=0)
    cfg = targets()[1]
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / f"{cfg.name}-{cfg.key}.json").write_text("{}")  # a target trained meanwhile
    with pytest.raises(predictions.PredictionError, match="before its runs"):
        predictions.predict_ladder("second", t, targets(), store=store, bootstrap=0)
    with pytest.raises(predictions.PredictionError, match="at least 3"):
        predictions.predict_ladder("third", ladder_table(Ns=(768, 3072)), targets()[:1], store=Store(tmp_path / "x"))


def test_the_prediction_folder_holds_no_run_records(tmp_path):
    store = Store(tmp_path)
    predictions.predict_ladder("p", ladder_table(), targets(), store=store, bootstrap=0)
    assert store.paths() == [] and store.records() == []


def test_scoring_sets_each_prediction_beside_the_measured_best_rate(tmp_path):
    store = Store(tmp_path)
    rec = predictions.predict_ladder("p", ladder_table(), targets(), store=store, bootstrap=30)
    before = predictions.score(rec, ladder_table())
    assert before["measured"].isna().all() and before["inside"].isna().all() and (before["seeds"] == 0).all()
    # the target size trained afterwards, exactly on the law
    measured = ladder_table(Ns=(786_432,), noise=0.0)
    after = predictions.score(rec, pd.concat([ladder_table(), measured]))
    row = after[(after["law"] == "chinchilla") & (after["tokens"] == LONGEST)].iloc[0]
    assert row["seeds"] == 3 and math.isclose(row["measured"], law(786_432, LONGEST), rel_tol=1e-12)
    assert math.isclose(row["error"], row["predicted"] / row["measured"] - 1)
    assert row["inside"] == (row["lo"] <= row["measured"] <= row["hi"])
    assert len(after) == 1 + 2 * 4  # L(N) at the longest budget; both joint laws at all four budgets


def test_the_command_scores_a_filed_prediction_and_asks_for_what_it_lacks(tmp_path, capsys):
    from scaling_lib.cli import main

    predictions.predict_ladder("p", ladder_table(), targets(), store=Store(tmp_path), bootstrap=0)
    assert main(["predict", "tune", "--score", "p", "--store", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 9 and all(r["measured"] is None and r["seeds"] == 0 for r in rows)  # nothing trained yet
    assert main(["predict", "tune", "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: predict needs --name and one of --min-n, --long, --between or --smaller (or --score NAME)"
    assert main(["predict", "tune", "--score", "nothing", "--store", str(tmp_path)]) == 2
    assert "no prediction 'nothing'" in capsys.readouterr().err


def test_the_command_fits_only_the_sizes_it_is_given(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from scaling_lib.cli import main

    (tmp_path / "tune").mkdir()
    for f in (Path(__file__).resolve().parents[1] / "runs" / "tune").glob("gpt-L*-T16M-*.json"):
        if f.name.startswith(("gpt-L1-d8-", "gpt-L1-d16-", "gpt-L2-d24-", "gpt-L2-d32-")):
            shutil.copy(f, tmp_path / "tune" / f.name)
    args = ["predict", "tune", "--store", str(tmp_path), "--min-n", "500000", "--name", "p", "--bootstrap", "0",
            "--dry-run"]
    assert main([*args, "--source-max-n", "20000"]) == 0
    assert json.loads(capsys.readouterr().out)["source_sizes"] == [768, 3072, 13824]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["source_sizes"] == [768, 3072, 13824, 24576]
    assert main([*args, "--source-max-n", "5000"]) == 2
    assert "a prediction needs at least 3" in capsys.readouterr().err
    assert not predictions.path("p", Store(tmp_path)).exists()  # a dry run files nothing


# --- longer runs at stored sizes (the tuned ladder's long runs) --------------------------------------
DOUBLINGS = tuple(int(250_000 * 2**k) // 4096 * 4096 for k in range(7))  # 0.25M to 16M, as trained
SHAPES = ((1, 8), (1, 16), (2, 24), (2, 32), (2, 48), (3, 64), (3, 80), (4, 80))  # 768 to 307k, as stored


def grid_table(shapes=SHAPES, noise=0.002, rng_seed=0, extra=()):
    """A tuned grid's runs table at every doubling from 0.25M to 16M tokens; `extra`: (config, loss of budget)
    of runs trained past it (their keys are the configs')."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for L, d in shapes:
        N = RunConfig(n_layer=L, d_model=d).N
        for k, lr in enumerate((0.005, 0.01, 0.02)):
            for D in DOUBLINGS:
                loss = law(N, D) * (1 + 0.01 * (k - 1) ** 2) * (1 + noise * rng.standard_normal())
                rows.append(dict(N=N, tokens=D, lr=lr, seed=0, final_val_loss=loss, eval_version=2,
                                 key=f"k{N}-{lr}", status="ok"))
    for cfg, loss_of in extra:
        for b in cfg.all_budgets:
            D = b // cfg.tokens_per_step * cfg.tokens_per_step
            rows.append(dict(N=cfg.N, tokens=D, lr=cfg.lr, seed=0, final_val_loss=loss_of(cfg.N, D), eval_version=2,
                             key=cfg.key, status="ok"))
    return pd.DataFrame(rows)


def long_targets():
    return [RunConfig(sweep="tune", n_layer=2, d_model=d, tokens=64_000_000, budgets=(32_000_000,), schedule="wsd",
                      lr=0.01) for d in (24, 32)]


def test_a_longer_prediction_fits_each_size_on_its_own_budgets_and_calibrates_its_interval(tmp_path):
    store = Store(tmp_path)
    cfgs = long_targets()
    rec = predictions.predict_longer("long", grid_table(), cfgs, store=store, bootstrap=20, commit="abc")
    assert json.loads(predictions.path("long", store).read_text()) == rec
    assert rec["scope"] == "longer" and predictions.scope(rec) == "longer" and rec["commit"] == "abc"
    assert [(t["N"], t["tokens"]) for t in rec["targets"]] == [(13824, 31_997_952), (13824, 64_000_000),
                                                               (24576, 31_997_952), (24576, 64_000_000)]
    assert all(t["keys"] == [next(c.key for c in cfgs if c.N == t["N"])] for t in rec["targets"])
    assert set(rec["backtest"]) == {"2", "4"}  # 32M is twice the grid's 16M, 64M four times
    for t in rec["targets"]:
        assert set(t["predicted"]) == {predictions.PER_SIZE, *predictions.LONGER_JOINT}
        pred = t["predicted"][predictions.PER_SIZE]
        # each size's own L(D) is exactly the law's form in D here: its extrapolation lands near the truth
        assert abs(pred / law(t["N"], t["tokens"]) - 1) < 0.01
        # its interval: the range of the same fit's errors on the stored sizes at the same ratio of budgets
        errors = [r["error"] for r in rec["backtest"][f"{round(t['ratio']):d}"] if r["law"] == predictions.PER_SIZE]
        assert len(errors) == len(SHAPES)
        assert t["ci"][predictions.PER_SIZE] == pytest.approx([pred / (1 + max(errors)), pred / (1 + min(errors))])
        lo, hi = t["ci"]["chinchilla"]
        assert lo is not None and hi is not None and lo <= hi
    per_size = [f for f in rec["fits"] if f["form"] == predictions.PER_SIZE]
    assert [f["n_points"] for f in per_size] == [6, 6]  # 0.5M to 16M: the 0.25M branch is left out
    assert predictions.load_all(store) == [rec]


def test_a_longer_prediction_refuses_what_it_cannot_predict_honestly(tmp_path):
    store = Store(tmp_path)
    t = grid_table()
    with pytest.raises(predictions.PredictionError, match="its own size's grid"):
        predictions.predict_longer("a", grid_table(shapes=SHAPES[:2]), long_targets(), store=store, bootstrap=0)
    with pytest.raises(predictions.PredictionError, match="past its size's longest"):
        predictions.predict_longer("a", t, [long_targets()[0].replace(tokens=16_000_000, budgets=())], store=store,
                                   bootstrap=0)
    predictions.predict_longer("a", t, long_targets(), store=store, bootstrap=0)
    with pytest.raises(predictions.PredictionError, match="never redone"):
        predictions.predict_longer("a", t, long_targets(), store=store, bootstrap=0)
    cfg = long_targets()[1]
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / f"{cfg.name}-{cfg.key}.json").write_text("{}")
    with pytest.raises(predictions.PredictionError, match="before its runs"):
        predictions.predict_longer("b", t, long_targets(), store=store, bootstrap=0)


def test_the_longer_runs_move_a_vertex_off_its_small_edge_as_predicted_and_are_scored_on_the_same_runs(tmp_path):
    rec = predictions.predict_longer("long", grid_table(), long_targets(), store=Store(tmp_path), bootstrap=0,
                                     levels=dict(per_decade=3, min_sizes=3))
    lv = rec["levels"]
    assert lv["per_decade"] == 3 and lv["law"] == predictions.PER_SIZE and lv["sources"]
    rows = {round(r["C"], -6): r for r in lv["rows"]}
    for r in rows.values():
        if r["sizes"] == r["sizes_now"]:  # a level the long runs do not reach keeps its vertex
            assert r["N_opt"] == pytest.approx(r["N_opt_now"]) and r["edge"] == r["edge_now"]
        else:
            assert set(r["sizes_now"]) < set(r["sizes"]) <= set(r["sizes_now"]) | {13824, 24576}
            assert r["N_opt_lo"] <= r["N_opt"] <= r["N_opt_hi"] and r["corners"] == 4
    top = max((r for r in rows.values() if r["sizes"] != r["sizes_now"]), key=lambda r: r["C"])
    assert top["edge_now"] and top["side_now"] == "small N"  # no size below its vertex before the long runs
    assert not top["edge"] and top["edge_corners"] == 0 and top["below"] >= 2
    # scored once the long runs land: on the prediction's sources and its targets only (another run is ignored)
    before = predictions.score_levels(rec, grid_table())  # not scored before every long run has landed
    assert before["N_opt_measured"].isna().all() and before["edge_measured"].isna().all()
    half = predictions.score_levels(rec, grid_table(extra=[(long_targets()[0], law)]))
    assert half["N_opt_measured"].isna().all() and half["inside"].isna().all()
    landed = grid_table(extra=[(c, law) for c in long_targets()])
    other = RunConfig(sweep="tune", n_layer=1, d_model=8, tokens=64_000_000, budgets=(32_000_000,), schedule="wsd")
    after = predictions.score_levels(rec, pd.concat([landed, grid_table(shapes=(), extra=[(other, lambda N, D: 1.0)])]))
    row = after[np.isclose(after["C"], top["C"])].iloc[0]
    assert not row["edge_measured"] and row["N_opt_measured"] == pytest.approx(top["N_opt"], rel=0.1)
    scored = predictions.score(rec, landed)
    assert (scored["measured"].notna()).all() and (scored["seeds"] == 1).all()
    assert predictions.summary(rec, grid_table()) == ""  # nothing to say before a run lands
    text = predictions.summary(rec, landed)
    inside = scored.dropna(subset=["inside"]).groupby("law")["inside"].agg(["sum", "count"])
    for name, (k, n) in inside.iterrows():
        assert f"{name} {k} of {n} inside" in text
    moved = sum(r["sizes"] != r["sizes_now"] for r in rec["levels"]["rows"])
    assert after["moved"].sum() == moved and bool(row["moved"])  # the top level reached is one the long runs move
    assert f"Of the {moved} levels whose sizes the long runs change" in text
    ladder = predictions.predict_ladder("ladder", ladder_table(), targets(), store=Store(tmp_path), bootstrap=0)
    assert predictions.scope(ladder) == "larger" and "scope" not in ladder
    with pytest.raises(predictions.PredictionError, match="no levels"):
        predictions.score_levels(ladder, landed)


def test_the_levels_are_scored_on_the_grid_as_the_prediction_saw_it(tmp_path):
    # a seed at 13.8k's middle rate, stored before the prediction, moves its best rate at 1M tokens to 0.02
    seed1 = grid_table(shapes=((2, 24),), noise=0.0)
    seed1 = seed1[seed1["lr"] == 0.01].assign(seed=1, key="seed1")
    seed1.loc[seed1["tokens"] == DOUBLINGS[2], "final_val_loss"] *= 1.10
    grid = pd.concat([grid_table(), seed1], ignore_index=True)
    rec = predictions.predict_longer("long", grid, long_targets(), store=Store(tmp_path), bootstrap=0,
                                     levels=dict(per_decade=3, min_sizes=3))
    kept = [i for i, r in enumerate(rec["levels"]["rows"]) if r["sizes"] == r["sizes_now"]]
    assert kept  # levels the long runs do not reach: the prediction says they keep their vertex

    def after(*extra):
        rows = grid_table(extra=[(c, law) for c in long_targets()])
        rows = pd.concat([rows, seed1, *extra], ignore_index=True)
        return predictions.score_levels(rec, rows).iloc[kept]

    def unmoved(scored):
        return np.allclose(scored["N_opt_measured"], scored["N_opt_now"], rtol=1e-9)

    assert unmoved(after())
    # a seed stored after the prediction, 5% worse at the best rate everywhere, is not read
    late = grid_table(shapes=((1, 16), (2, 24), (2, 32)))
    late = late[late["lr"] == 0.01].assign(seed=2, key=lambda d: "late" + d["N"].astype(str),
                                           final_val_loss=lambda d: d["final_val_loss"] * 1.05,
                                           finished="2099-01-01T00:00:00+0000")
    assert unmoved(after(late))
    assert not unmoved(after(late.assign(finished=None)))  # the same rows read as stored before do move it
    # the long runs' branches at the grid's budgets were not predicted (here 3% below the grid's runs)
    branches = pd.DataFrame([dict(N=c.N, tokens=D, lr=c.lr, seed=0, final_val_loss=0.97 * law(c.N, D), eval_version=2,
                                  key=c.key, status="ok") for c in long_targets() for D in DOUBLINGS])
    assert unmoved(after(branches))


def fake_long_record(grid_file, profile_name: str = "cpu", loss: float = 4.0) -> dict:
    """A stored grid run's record as its long run would file it: the long config and key, its budgets past
    the grid's (32M, 64M) appended at `loss`; for the readers that must tell a long run from the grid."""
    from scaling_lib import plans

    rec = json.loads(grid_file.read_text())
    cfg = plans.tune_long_run(RunConfig.from_stored(rec["config"]), plans.profile(profile_name))
    last = rec["budgets"][-1]
    extra = [dict(last, tokens=b // cfg.tokens_per_step * cfg.tokens_per_step, steps=b // cfg.tokens_per_step,
                  val_loss=loss - 0.01 * i, epochs=last["epochs"] * b / last["tokens"])
             for i, b in enumerate(cfg.all_budgets) if b > last["tokens"]]
    return dict(rec, key=cfg.key, name=cfg.name, config=cfg.to_dict(), tokens=cfg.tokens, steps=cfg.steps,
                budgets=rec["budgets"] + extra, final=dict(rec["final"], val_loss=extra[-1]["val_loss"]))


def _copy_grids(tmp_path, prefixes=("gpt-L1-d8-", "gpt-L1-d16-", "gpt-L2-d24-", "gpt-L2-d32-")):
    import shutil
    from pathlib import Path

    stored = Path(__file__).resolve().parents[1] / "runs" / "tune"
    (tmp_path / "tune").mkdir()
    for f in stored.glob("gpt-L*-T16M-*.json"):
        if f.name.startswith(prefixes):
            shutil.copy(f, tmp_path / "tune" / f.name)
    return stored


def test_the_command_predicts_the_long_runs_and_keeps_them_out_of_a_ladder_prediction(tmp_path, capsys):
    from scaling_lib.cli import main

    stored = _copy_grids(tmp_path)
    args = ["predict", "tune", "--store", str(tmp_path), "--bootstrap", "0", "--dry-run"]
    assert main([*args, "--long", "--name", "long"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["scope"] == "longer" and rec["source_sizes"] == [768, 3072, 13824, 24576]
    assert {t["N"] for t in rec["targets"]} == {768, 3072, 13824, 24576}  # the book's long sizes whose grids are here
    assert {round(t["tokens"], -6) for t in rec["targets"]} == {32_000_000, 64_000_000, 128_000_000}  # tune_longer's
    assert rec["levels"]["per_decade"] == 3 and rec["levels"]["rows"]
    ladder = [*args, "--min-n", "500000", "--name", "p"]
    assert main(ladder) == 0
    before = json.loads(capsys.readouterr().out)
    # one long run lands: the long prediction is refused, a ladder prediction reads the grids as before
    grid = next(stored.glob("gpt-L2-d24-T16M-lr0.01-s0-*.json"))
    Store(tmp_path).save(fake_long_record(grid))
    assert main([*args, "--long", "--name", "long"]) == 2
    assert "stored already" in capsys.readouterr().err
    assert main(ladder) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["sources"] == before["sources"] and after["source_budgets"] == before["source_budgets"]
    assert after["targets"] == before["targets"]


def test_a_second_long_prediction_leaves_the_runs_a_filed_one_predicts(tmp_path, capsys, monkeypatch):
    from scaling_lib import plans
    from scaling_lib.cli import main

    _copy_grids(tmp_path)
    args = ["predict", "tune", "--store", str(tmp_path), "--bootstrap", "0", "--long"]
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_longer", ())
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_long_sizes", ((2, 24),))
    assert main([*args, "--name", "first"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert {t["N"] for t in first["targets"]} == {13824}
    assert predictions.claimed(Store(tmp_path)) == {k for t in first["targets"] for k in t["keys"]}
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_long_sizes", ((2, 24), (2, 32)))
    assert main([*args, "--name", "second"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert {t["N"] for t in second["targets"]} == {24576}  # 13.8k is the first prediction's
    assert main([*args, "--name", "third"]) == 2
    assert "no target" in capsys.readouterr().err


# --- new sizes between stored ones ---------------------------------------------------------------------
def between_targets(n_layer=2, d_model=16):
    base = RunConfig(sweep="tune", n_layer=n_layer, d_model=d_model, tokens=16_000_000, schedule="wsd",
                     budgets=(250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000))
    return [base.replace(lr=lr) for lr in (0.005, 0.01, 0.02)]


def test_a_prediction_between_sizes_interpolates_and_files_the_levels_it_moves(tmp_path):
    store = Store(tmp_path)
    cfgs = between_targets()  # N = 6,144, between 3,072 and 13,824
    rec = predictions.predict_ladder("mid", grid_table(), cfgs, store=store, bootstrap=20, scope="between",
                                     levels=dict(per_decade=3, min_sizes=3))
    assert predictions.scope(rec) == "between" and rec["scope"] == "between"
    assert rec["source_sizes"] == sorted(RunConfig(n_layer=L, d_model=d).N for L, d in SHAPES)  # both sides
    assert {t["N"] for t in rec["targets"]} == {6144} and len(rec["targets"]) == len(DOUBLINGS)
    assert all(t["keys"] == sorted(c.key for c in cfgs) for t in rec["targets"])  # every rate of the grid
    for t in rec["targets"]:  # the joint laws interpolate a size close to the truth at every budget
        assert abs(t["predicted"]["chinchilla"] / law(6144, t["tokens"]) - 1) < 0.01
        lo, hi = t["ci"]["kaplan-nd"]
        assert lo <= t["predicted"]["kaplan-nd"] <= hi
    lv = rec["levels"]
    assert lv["law"] == predictions.NEW_SIZE_LEVELS_LAW and lv["rows"]
    moved = [r for r in lv["rows"] if r["sizes"] != r["sizes_now"]]
    # the new size joins levels, or makes one that had too few sizes (sizes_now empty)
    assert moved and all(6144 in r["sizes"] and (not r["sizes_now"] or set(r["sizes"]) - set(r["sizes_now"]) == {6144})
                         for r in moved)
    assert all(r["corners"] == 2 for r in moved)  # one new size, at either end of its interval
    # scored once the grid lands: the moved levels' vertices are measured, the summary names the new sizes
    assert predictions.score_levels(rec, grid_table())["N_opt_measured"].isna().all()
    landed = pd.concat([grid_table(), grid_table(shapes=(), extra=[(c, law) for c in cfgs])], ignore_index=True)
    scored = predictions.score_levels(rec, landed)
    assert scored.loc[scored["moved"], "N_opt_measured"].notna().all()
    assert "levels whose sizes the new sizes change" in predictions.summary(rec, landed)
    # a level without a vertex (no minimum inside its sizes) is not scored as inside or off the edge
    flat = predictions.score_levels(rec, landed)
    flat_level = [r for r in rec["levels"]["rows"] if r["sizes"] != r["sizes_now"]][0]
    no_vertex = dict(rec, levels=dict(rec["levels"], rows=[dict(r, N_opt=float("nan")) if r is flat_level else r
                                                            for r in rec["levels"]["rows"]]))
    text = predictions.summary(no_vertex, landed)
    assert f"Of the {int(flat['moved'].sum()) - 1} levels" in text and "1 more without a vertex" in text
    # the grid grows past its edge after the prediction: the rate it adds is read, as the chapter reads it
    better = cfgs[0].replace(lr=0.0025)
    grown = pd.concat([landed, grid_table(shapes=(), extra=[(better, lambda N, D: 0.9 * law(N, D))])],
                      ignore_index=True)
    cut = predictions._as_predicted(rec, grown)
    assert better.key in set(cut["key"]) and set(cut["key"]) >= {c.key for c in cfgs}
    moved = predictions.score_levels(rec, grown)["moved"]
    assert not np.allclose(predictions.score_levels(rec, grown).loc[moved, "N_opt_measured"],
                           scored.loc[moved, "N_opt_measured"])


def test_a_prediction_of_a_smaller_size_extrapolates_down_from_every_stored_size(tmp_path):
    store = Store(tmp_path)
    cfgs = between_targets(1, 4)  # N = 192, below 768
    rec = predictions.predict_ladder("low", grid_table(), cfgs, store=store, bootstrap=20, scope="smaller",
                                     levels=dict(per_decade=3, min_sizes=3))
    assert predictions.scope(rec) == "smaller" and predictions.load(rec["name"], store) == rec
    assert rec["source_sizes"] == sorted(RunConfig(n_layer=L, d_model=d).N for L, d in SHAPES)
    for t in rec["targets"]:  # the synthetic law holds below the sizes too: the joint fits find it
        assert abs(t["predicted"]["chinchilla"] / law(192, t["tokens"]) - 1) < 0.02
    moved = [r for r in rec["levels"]["rows"] if r["sizes"] != r["sizes_now"]]
    assert moved and all(192 in r["sizes"] for r in moved)
    landed = pd.concat([grid_table(), grid_table(shapes=(), extra=[(c, law) for c in cfgs])], ignore_index=True)
    assert "levels whose sizes the new sizes change" in predictions.summary(rec, landed)
    with pytest.raises(predictions.PredictionError, match="stored sizes below it"):  # 6,144 lies inside them
        predictions.predict_ladder("mid", grid_table(), between_targets(), store=store, bootstrap=0, scope="smaller")
    with pytest.raises(predictions.PredictionError, match="scope must be one of"):
        predictions.predict_ladder("odd", grid_table(), cfgs, store=store, bootstrap=0, scope="lower")


def test_a_prediction_between_sizes_needs_a_stored_size_on_either_side(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(predictions.PredictionError, match="no stored size on one side"):  # 192: below 768
        predictions.predict_ladder("low", grid_table(), between_targets(1, 4), store=store, bootstrap=0, scope="between")
    with pytest.raises(predictions.PredictionError, match="levels are filed"):  # a ladder prediction files none
        predictions.predict_ladder("top", ladder_table(), targets(), store=store, bootstrap=0,
                                   levels=dict(per_decade=3, min_sizes=3))
    assert predictions.load_all(store) == []


def test_the_command_predicts_planned_sizes_between_stored_ones(tmp_path, capsys):
    from scaling_lib.cli import main

    _copy_grids(tmp_path)  # 768, 3,072, 13,824 and 24,576
    args = ["predict", "tune", "--store", str(tmp_path), "--bootstrap", "0", "--dry-run", "--name", "mid"]
    assert main([*args, "--between", "6144"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["scope"] == "between" and {t["N"] for t in rec["targets"]} == {6144}
    assert rec["source_sizes"] == [768, 3072, 13824, 24576] and rec["levels"]["rows"]
    assert main([*args, "--between", "5000"]) == 2  # not a planned size
    assert "no planned run" in capsys.readouterr().err
    assert main([*args, "--between", "6144", "--long"]) == 2
    assert "one of --min-n, --long, --between or --smaller" in capsys.readouterr().err
    assert main([*args, "--between", "6144", "--smaller", "192"]) == 2
    assert "one of --min-n" in capsys.readouterr().err


def test_the_command_predicts_a_planned_size_below_the_stored_ones(tmp_path, capsys, monkeypatch):
    from scaling_lib import plans
    from scaling_lib.cli import main

    _copy_grids(tmp_path)  # 768, 3,072, 13,824 and 24,576
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_ladder", ((1, 4), *plans.PROFILES["cpu"]["tune_ladder"]))
    args = ["predict", "tune", "--store", str(tmp_path), "--bootstrap", "0", "--dry-run", "--name", "low"]
    assert main([*args, "--smaller", "192"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["scope"] == "smaller" and {t["N"] for t in rec["targets"]} == {192}
    assert rec["source_sizes"] == [768, 3072, 13824, 24576] and rec["levels"]["law"] == "kaplan-nd"
    assert main([*args, "--smaller", "6144"]) == 2  # planned, but stored sizes lie below it
    assert "stored sizes below it" in capsys.readouterr().err
    assert main([*args, "--smaller", ","]) == 2
    assert "(none given)" in capsys.readouterr().err


def test_a_longer_round_is_predicted_from_the_long_runs_stored_before_it(tmp_path, capsys, monkeypatch):
    from scaling_lib import plans
    from scaling_lib.cli import main

    stored = _copy_grids(tmp_path)
    args = ["predict", "tune", "--store", str(tmp_path), "--bootstrap", "0", "--long"]
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_long_sizes", ((2, 32),))
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_longer", ())
    assert main([*args, "--name", "first"]) == 0  # the first round is predicted, then trained
    capsys.readouterr()
    first = fake_long_record(next(stored.glob("gpt-L2-d32-T16M-lr0.005-s0-*.json")))  # 24.6k's 64M run
    Store(tmp_path).save(first)
    monkeypatch.setitem(plans.PROFILES["cpu"], "tune_longer", ((2, 32, 128_000_000),))
    assert main([*args, "--dry-run", "--name", "longer"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert [(t["N"], round(t["tokens"], -6)) for t in rec["targets"]] == [(24576, 128_000_000)]
    assert first["key"] in rec["sources"] and max(rec["source_budgets"]) == 64_000_000  # read, not only the grid
    assert set(rec["backtest"]) == {"2"}  # 128M is twice the longest stored budget of its size


class _HasOnly(Store):
    """A store that holds exactly the configs given (by key), for predictions that need a stored twin."""

    def __init__(self, root, keys):
        super().__init__(root)
        self._keys = set(keys)

    def has(self, cfg):
        return cfg.key in self._keys


def _warmup_case():
    """A tuned run, its warmup twin, and the fixed ladder's gaps at two budgets (3% at 1M, none at 2M)."""
    twin = RunConfig(sweep="tune", n_layer=2, d_model=16, tokens=4_000_000, budgets=(1_000_000, 2_000_000),
                     schedule="wsd", lr=0.0025)
    run = twin.replace(sweep="warmup", warmup_tokens=192_000)
    gaps = pd.DataFrame(dict(N=[twin.N] * 2, tokens=[1_000_000, 2_000_000], lr_fixed=0.00244, lr_grid=0.0025,
                             loss_fixed=[4.0, 3.8], loss_grid=[4.12, 3.8], gap=[0.03, 0.0]))
    return twin, run, gaps


def test_a_warmup_prediction_puts_each_run_where_the_fixed_ladder_sits_against_its_twin(tmp_path):
    twin, run, gaps = _warmup_case()
    store = _HasOnly(tmp_path, [twin.key])
    rec = predictions.predict_warmup("warm", gaps, [run], [twin], store=store)
    assert predictions.scope(rec) == "warmup" and rec["sweep"] == "warmup" and predictions.load("warm", store) == rec
    first = rec["targets"][0]
    assert first["predicted"][predictions.WARMUP_LAW] == pytest.approx(4.0 / 4.12 - 1)
    assert first["ci"][predictions.WARMUP_LAW] == pytest.approx([4.0 / 4.12 - 1.01, 4.0 / 4.12 - 0.99])
    with pytest.raises(predictions.PredictionError, match="never redone"):
        predictions.predict_warmup("warm", gaps, [run], [twin], store=store)
    with pytest.raises(predictions.PredictionError, match="twin"):
        predictions.predict_warmup("other", gaps, [run], [twin], store=_HasOnly(tmp_path, []))
    with pytest.raises(predictions.PredictionError, match="one size"):
        predictions.predict_warmup("other", gaps.assign(N=twin.N + 1), [run], [twin], store=store)
    # scored: the first budget lands as the fixed ladder's run did, the second does not
    table = pd.DataFrame(dict(key=[run.key, twin.key] * 2, tokens=[1_000_000] * 2 + [2_000_000] * 2,
                              final_val_loss=[4.001, 4.12, 3.9, 3.8]))
    sc = predictions.score_twins(rec, table)
    assert list(sc["inside"]) == [True, False]
    assert sc["measured"].iloc[1] == pytest.approx(3.9 / 3.8 - 1)
    assert predictions.score_twins(rec, table[table["key"] != run.key])["inside"].isna().all()


def test_a_warmup_summary_says_what_was_predicted_and_then_how_it_scored(tmp_path):
    twin = RunConfig(sweep="tune", n_layer=2, d_model=16, tokens=4_000_000, budgets=(1_000_000,), schedule="wsd",
                     lr=0.0025)
    run = twin.replace(sweep="warmup", warmup_tokens=192_000)
    gaps = pd.DataFrame(dict(N=[twin.N], tokens=[999_424], lr_fixed=0.00244, lr_grid=0.0025, loss_fixed=[4.0],
                             loss_grid=[4.12], gap=[0.03]))
    rec = predictions.predict_warmup("warm", gaps, [run], [twin], store=_HasOnly(tmp_path, [twin.key]))
    twin_only = pd.DataFrame(dict(key=[twin.key], tokens=[999_424], final_val_loss=[4.12]))
    assert "192,000 tokens" in predictions.warmup_summary(rec, twin_only)
    assert "not stored yet" in predictions.warmup_summary(rec, twin_only)
    both = pd.concat([twin_only, pd.DataFrame(dict(key=[run.key], tokens=[999_424], final_val_loss=[4.2]))])
    text = predictions.warmup_summary(rec, both)
    assert "+1.9% (predicted -2.9%) at 1M" in text and "inside the band at 0 of 1 budgets" in text


def test_the_warmup_and_runner_up_commands_ask_for_what_they_need_and_name_what_they_cannot_predict(tmp_path, capsys):
    from scaling_lib.cli import main

    assert main(["predict", "warmup", "--name", "w", "--store", str(tmp_path)]) == 2
    assert "predict warmup needs --name and --min-n" in capsys.readouterr().err
    assert main(["predict", "warmup", "--name", "w", "--min-n", "1234", "--store", str(tmp_path)]) == 2
    assert "no planned run of the warmup sweep (cpu) at N = 1,234" in capsys.readouterr().err
    assert main(["predict", "tune", "--runner-up", "1234", "--store", str(tmp_path)]) == 2
    assert "predict --runner-up needs --name" in capsys.readouterr().err
    assert main(["predict", "tune", "--name", "r", "--runner-up", "1234", "--store", str(tmp_path)]) == 2
    assert "no stored grid run of the 'tune' sweep" in capsys.readouterr().err


def test_a_warmup_reading_speaks_only_once_the_prediction_held_at_every_budget(tmp_path):
    twin, run, gaps = _warmup_case()
    rec = predictions.predict_warmup("warm", gaps, [run], [twin], store=_HasOnly(tmp_path, [twin.key]))

    def table(run_losses):
        return pd.DataFrame(dict(key=[run.key, twin.key] * 2, tokens=[1_000_000] * 2 + [2_000_000] * 2,
                                 final_val_loss=[run_losses[0], 4.12, run_losses[1], 3.8]))

    held = predictions.warmup_reading(rec, table([4.0, 3.8]), 25_000)
    assert "the warmup, not the rate" in held and "over 25,000 tokens" in held
    assert "by -2.9% at 1M tokens and by +0.0% at 2M" in held
    assert predictions.warmup_reading(rec, table([4.0, 3.9]), 25_000) == ""  # outside its band at 2M
    assert predictions.warmup_reading(rec, table([4.0, 3.8]).iloc[2:], 25_000) == ""  # 1M not measured


def test_a_seed_prediction_moves_the_runner_up_as_the_seed_moved_the_best_rate(tmp_path):
    base = RunConfig(sweep="tune", n_layer=2, d_model=16, tokens=2_000_000, budgets=(1_000_000,), schedule="wsd")
    best, runner = base.replace(lr=0.005), base.replace(lr=0.0025)
    target = runner.replace(seed=1)
    rows = [(best, 0, 4.0, 3.0), (best.replace(seed=1), 1, 4.2, 3.03), (runner, 0, 4.1, 3.02)]
    table = pd.DataFrame([dict(key=c.key, N=c.N, lr=c.lr, seed=s, tokens=t, final_val_loss=v)
                          for c, s, short, long_ in rows for t, v in ((1_000_000, short), (2_000_000, long_))])
    store = _HasOnly(tmp_path, [runner.key])
    rec = predictions.predict_seeds("seeds", table, [target], store=store)
    assert predictions.scope(rec) == "seeds" and predictions.load("seeds", store) == rec
    first, last = rec["targets"]
    assert first["predicted"][predictions.SEEDS_LAW] == pytest.approx(4.2 / 4.0 - 1)  # seed 1 moved the best +5%
    assert last["ci"][predictions.SEEDS_LAW] == pytest.approx([0.01 - 0.01, 0.01 + 0.01])
    assert first["keys"] == [target.key] and first["twin_keys"] == [runner.key] and first["basis"]["lr_best"] == 0.005
    assert "not stored yet" in predictions.seeds_summary(rec, table)
    with pytest.raises(predictions.PredictionError, match="never redone"):
        predictions.predict_seeds("seeds", table, [target], store=store)
    with pytest.raises(predictions.PredictionError, match="twin"):
        predictions.predict_seeds("other", table, [target], store=_HasOnly(tmp_path, []))
    with pytest.raises(predictions.PredictionError, match="one other rate"):  # no rate has seed 2 yet
        predictions.predict_seeds("other", table, [runner.replace(seed=2)], store=store)
    # measured: seed 1 moves the runner-up as it moved the best at 1M, not at all at 2M
    landed = pd.concat([table, pd.DataFrame([dict(key=target.key, N=target.N, lr=target.lr, seed=1, tokens=t, final_val_loss=v)
                                             for t, v in ((1_000_000, 4.1 * 1.05), (2_000_000, 3.02))])])
    sc = predictions.score_twins(rec, landed)
    assert list(sc["inside"]) == [True, False] and list(sc["seed"]) == [1, 1]
    text = predictions.seeds_summary(rec, landed)
    assert "inside the band at 1 of 2 (seed, budget) points, the null (0) at 1" in text
    assert "seed 1 +0.00% (predicted +1.00%)" in text
