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
    assert capsys.readouterr().err.strip() == "error: predict needs --name and --min-n (or --score NAME)"
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
