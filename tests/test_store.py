"""The run store: atomic saves, keyed paths, the runs table; and the runner's get_or_train."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from scaling_lib import store as store_mod
from scaling_lib import train as train_mod
from scaling_lib.config import RunConfig
from scaling_lib.runner import get_or_train
from scaling_lib.store import (DEFAULT_ROOT, Store, curves_table, load_record, machine_pairs, prefer_cpu,
                               runs_table)

pytestmark = pytest.mark.usefixtures("runs_env", "torch_one_thread")

TABLE_COLUMNS = ["path", "sweep", "arch", "N", "n_layer", "d_model", "seed", "batch_size", "data_tokens", "tokens",
                 "final_val_loss"]


def fake_record(cfg: RunConfig, val_loss: float = 5.0, status: str = "ok", budgets=()) -> dict:
    """A minimal record with every field the store and its table read (no training)."""
    tokens = cfg.steps * cfg.tokens_per_step
    data_tokens = 1_000_000

    def budget(t, v, longest):
        return dict(tokens=t, steps=t // cfg.tokens_per_step, cooldown_from_step=None if longest else 1,
                    val_loss=v, epochs=t / data_tokens, C=6.0 * cfg.N * t, C_exact=7.0 * cfg.N * t, status=status)

    return dict(
        key=cfg.key, name=cfg.name, sweep=cfg.sweep, config=cfg.to_dict(), status=status, diverged_at_step=None,
        N=cfg.N, params_counted=cfg.N, N_total=cfg.N + 1000, tokens=tokens, steps=cfg.steps, data_tokens=data_tokens,
        epochs=tokens / data_tokens, C=6.0 * cfg.N * tokens, C_exact=7.0 * cfg.N * tokens,
        curve=[dict(step=0, tokens=0, C=0.0, C_exact=0.0, lr=0.0, val_loss=8.3, train_loss=None),
               dict(step=cfg.steps, tokens=tokens, C=1.0, C_exact=1.0, lr=cfg.lr, val_loss=val_loss, train_loss=5.5)],
        budgets=[*(budget(b, val_loss + 0.5, False) for b in budgets), budget(tokens, val_loss, True)],
        final=dict(val_loss=val_loss, per_position_loss=[val_loss] * 4, test_loss=val_loss + 0.01,
                   other={"email": 7.0}, best_val_loss=val_loss),
        provenance=dict(git_commit="0" * 40, device="cpu:test", wall_time_s=1.5, tokens_per_s=100.0),
    )


def _cfg(**kw) -> RunConfig:
    return RunConfig(**{"sweep": "unit", "corpus": "tiny", "n_layer": 1, "d_model": 16, "n_ctx": 32,
                        "batch_size": 4, "tokens": 4096, **kw})


# --- saving ----------------------------------------------------------------------------------
def test_save_is_atomic_and_loads_back(tmp_path):
    s = Store(tmp_path)
    cfg = _cfg()
    rec = fake_record(cfg)
    p = s.save({**rec, "path": "/somewhere/else.json"})
    assert p == tmp_path / "unit" / f"{cfg.name}-{cfg.key}.json" == s.path(cfg)
    assert [q.name for q in p.parent.iterdir()] == [p.name]  # no temporary file left
    on_disk = json.loads(p.read_text())
    assert "path" not in on_disk and on_disk == rec  # where it lies is not part of it
    assert s.has(cfg) and s.load(cfg) == {**rec, "path": str(p)}
    assert s.load(_cfg(seed=9)) is None and not s.has(_cfg(seed=9))
    # saving again replaces the record
    s.save(fake_record(cfg, val_loss=4.0))
    assert s.load(cfg)["final"]["val_loss"] == 4.0
    assert len(list(p.parent.iterdir())) == 1


def test_save_refuses_a_record_whose_key_does_not_match_its_config(tmp_path):
    rec = fake_record(_cfg())
    rec["key"] = "0123456789ab"
    with pytest.raises(ValueError, match="does not match its config"):
        Store(tmp_path).save(rec)
    rec = fake_record(_cfg())
    rec["config"]["lr"] = 0.5  # a config edited after the fact
    with pytest.raises(ValueError, match="does not match"):
        Store(tmp_path).save(rec)
    assert not list(tmp_path.rglob("*.json"))


def test_save_keeps_nan(tmp_path):
    rec = fake_record(_cfg(), status="diverged")
    rec["final"] = {}
    rec["budgets"][-1]["val_loss"] = float("nan")
    Store(tmp_path).save(rec)
    back = Store(tmp_path).load(_cfg())
    assert math.isnan(back["budgets"][-1]["val_loss"]) and back["final"] == {}


def test_a_failed_save_leaves_no_record(tmp_path):
    rec = fake_record(_cfg())
    rec["final"]["val_loss"] = object()  # not JSON
    with pytest.raises(TypeError):
        Store(tmp_path).save(rec)
    assert not Store(tmp_path).has(_cfg())
    assert Store(tmp_path).paths() == []


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    rec = fake_record(_cfg())
    rec["final"]["val_loss"] = object()
    with pytest.raises(TypeError):
        Store(tmp_path).save(rec)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_paths_records_and_bad_files(tmp_path):
    s = Store(tmp_path)
    for seed in range(3):
        s.save(fake_record(_cfg(seed=seed)))
    s.save(fake_record(_cfg(sweep="other")))
    (tmp_path / "unit" / ".tmp-abc.json").write_text("{")  # a save under way is not a record
    assert len(s.paths()) == 4 and len(s.paths("unit")) == 3 and s.paths("nothing") == []
    assert sorted(r["config"]["seed"] for r in s.records("unit")) == [0, 1, 2]
    assert all(Path(r["path"]).exists() for r in s.records())
    bad = tmp_path / "unit" / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable run record"):
        load_record(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a run record"):
        load_record(bad)


def test_the_default_store_follows_scaling_lib_runs(runs_env):
    assert Store().root == runs_env
    assert store_mod.default_root() == runs_env
    assert DEFAULT_ROOT.name == "runs"


# --- the tables ------------------------------------------------------------------------------
def test_early_stopped_loss_is_the_curve_minimum_and_nan_without_a_curve(tmp_path):
    rec = fake_record(_cfg(), val_loss=5.0)
    rec["curve"].insert(1, dict(step=3, tokens=384, C=0.5, C_exact=0.5, lr=0.01, val_loss=4.5, train_loss=5.0))
    rec["curve"].insert(2, dict(step=4, tokens=512, C=0.5, C_exact=0.5, lr=0.01, val_loss=float("nan"), train_loss=5.0))
    row = runs_table([rec]).iloc[0]
    assert (row["early_stopped_loss"], row["early_stopped_tokens"]) == (4.5, 384)
    row = runs_table([dict(rec, curve=[])]).iloc[0]
    assert math.isnan(row["early_stopped_loss"]) and math.isnan(row["early_stopped_tokens"])


def test_runs_table_columns_and_values(tmp_path):
    s = Store(tmp_path)
    cfgs = [_cfg(seed=0), _cfg(n_layer=2, d_model=24, seed=1, schedule="wsd", budgets=(1024, 2048))]
    for c in cfgs:
        s.save(fake_record(c, budgets=c.budgets, val_loss=5.0 + c.seed))
    df = s.table()
    assert len(df) == 2
    for col in TABLE_COLUMNS + ["key", "name", "status", "N_total", "vocab", "lr", "C", "C_exact", "epochs", "steps",
                                "test_loss", "best_val_loss", "wall_time_s", "device_name", "loss_email"]:
        assert col in df.columns, col
    row = df[df["seed"] == 1].iloc[0]
    assert (row["sweep"], row["arch"], row["n_layer"], row["d_model"], row["N"]) == ("unit", "gpt", 2, 24, cfgs[1].N)
    assert (row["batch_size"], row["data_tokens"], row["tokens"]) == (4, 1_000_000, 4096)
    assert row["final_val_loss"] == 6.0 and row["vocab"] == 4096 and row["loss_email"] == 7.0
    assert Path(row["path"]).exists()
    # the early-stopped loss is the lowest point of the curve, wherever it lies
    assert (row["early_stopped_loss"], row["early_stopped_tokens"]) == (6.0, 4096)

    by_budget = s.table(budgets=True)
    assert len(by_budget) == 1 + 3
    b = by_budget[by_budget["seed"] == 1].sort_values("tokens")
    assert list(b["tokens"]) == [1024, 2048, 4096]
    assert list(b["is_longest"]) == [False, False, True]
    assert list(b["final_val_loss"]) == [6.5, 6.5, 6.0]
    assert {"budget_status", "C", "epochs", "steps"} <= set(b.columns)
    assert s.table("nothing").empty and runs_table([]).empty


def test_curves_table(tmp_path):
    cfg = _cfg()
    df = curves_table([fake_record(cfg)])
    assert len(df) == 2 and list(df["step"]) == [0, cfg.steps]
    assert {"key", "N", "n_layer", "d_model", "lr", "seed", "arch", "val_loss"} <= set(df.columns)
    assert (df["batch_size"].iloc[0], df["n_ctx"].iloc[0], df["peak_lr"].iloc[0]) == (4, 32, cfg.lr)
    assert list(df["budget"]) == [cfg.steps * cfg.tokens_per_step] * 2  # the run's tokens, at every point
    empty = curves_table([])
    assert empty.empty and {"key", "N", "batch_size", "budget", "step", "tokens", "val_loss"} <= set(empty.columns)


# --- get_or_train ----------------------------------------------------------------------------
def test_get_or_train_trains_once_then_loads(tmp_path, tiny_corpus, linked_cache, monkeypatch):
    s = Store(tmp_path / "runs")
    cfg = _cfg(tokens=2048, eval_tokens=1024)
    rec = get_or_train(cfg, s, progress=False)
    assert rec["status"] == "ok" and rec["path"] == str(s.path(cfg)) and s.has(cfg)
    assert not list((linked_cache / "checkpoints").iterdir())

    def must_not_train(*a, **kw):
        raise AssertionError("get_or_train trained a run that was already stored")

    monkeypatch.setattr(train_mod, "train", must_not_train)
    again = get_or_train(cfg, s, progress=False)
    assert again == rec
    assert get_or_train(cfg, s, train_missing=False) == rec


def test_get_or_train_without_training_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "train", lambda *a, **kw: pytest.fail("trained with train_missing=False"))
    cfg = _cfg()
    with pytest.raises(LookupError) as e:
        get_or_train(cfg, Store(tmp_path), train_missing=False)
    msg = str(e.value)
    assert cfg.name in msg and cfg.key in msg and str(tmp_path) in msg and "run its sweep first" in msg


# --- the real store, read only ---------------------------------------------------------------
def test_every_stored_record_matches_its_config_key_and_file_name():
    """The records of the book (read only): each file is named <name>-<key> of its own config."""
    paths = Store(DEFAULT_ROOT).paths()
    if not paths:
        pytest.skip(f"no runs stored under {DEFAULT_ROOT}")
    for p in paths:
        rec = load_record(p)
        cfg = RunConfig.from_stored(rec["config"])
        assert rec["key"] == cfg.key, p
        assert p.name == f"{cfg.name}-{cfg.key}.json", p
        assert p.parent.name == cfg.sweep == rec["sweep"], p
        assert rec["N"] == rec["params_counted"] == cfg.N, p


def test_prefer_cpu_keeps_the_cpu_row_of_a_run_trained_on_both_machines():
    t = pd.DataFrame(dict(N=[1, 1, 2], lr=[0.1, 0.1, 0.1], device=["cuda", "cpu", "cuda"], loss=[4.0, 4.1, 3.0]))
    out = prefer_cpu(t, ["N", "lr"])
    assert out[["N", "device", "loss"]].values.tolist() == [[1, "cpu", 4.1], [2, "cuda", 3.0]]


def test_machine_pairs_measures_the_configurations_trained_on_both_machines():
    # N=1: rates 0.1 (best, cuda 0.1% above) and 1.0 (10% above the best, cuda 2% above); N=2: one rate, CPU only
    t = pd.DataFrame(dict(N=[1, 1, 1, 1, 2], lr=[0.1, 0.1, 1.0, 1.0, 0.1], device=["cpu", "cuda", "cpu", "cuda", "cpu"],
                          final_val_loss=[4.0, 4.004, 4.4, 4.488, 3.0]))
    p = machine_pairs(t)
    assert p["pairs"] == 2
    assert p["median"] == pytest.approx(0.0105) and p["max"] == pytest.approx(0.02)
    assert p["reading"] == ("The largest difference is at N = 1, lr = 1, a rate whose loss is more than 2% above that "
                            "size's best; at each size's best rate the two machines differ by at most 0.10%.")
    # the largest difference at a size's best rate reads without the clause
    near = t.assign(final_val_loss=[4.0, 4.2, 4.04, 4.05, 3.0])
    assert machine_pairs(near)["reading"] == "The largest difference is at N = 1, lr = 0.1."
    none = dict(pairs=0, median=None, max=None, reading="")
    assert machine_pairs(t[t["device"] == "cpu"]) == none  # one machine only
    assert machine_pairs(t.iloc[[1, 2]]) == none  # both machines, but never the same configuration
    assert machine_pairs(t.iloc[:0]) == none


def test_a_table_refuses_to_mix_evaluation_versions_unless_asked(tmp_path):
    from scaling_lib.store import MixedEvaluation

    old, new = RunConfig(eval_version=1, tokens=4096), RunConfig(tokens=4096, seed=1)
    recs = [fake_record(old), fake_record(new)]
    with pytest.raises(MixedEvaluation, match=r"eval_version \[1, 2\]"):
        runs_table(recs)
    both = runs_table(recs, mixed_eval=True)
    assert sorted(both["eval_version"]) == [1, 2]
    s = Store(tmp_path)
    for r in recs:
        s.save(r)
    assert len(s.table(mixed_eval=True)) == 2 and len(runs_table([recs[1]])) == 1


def test_runs_table_counts_forward_flops_per_token_by_architecture():
    from scaling_lib import arch, flops

    gpt, lstm = _cfg(), _cfg(arch="lstm", n_layer=1, d_model=16)
    t = runs_table([fake_record(gpt), fake_record(lstm)]).set_index("arch")
    assert t.loc["gpt", "flops_per_token"] == pytest.approx(flops.C_forward_exact(flops.Shape.of(gpt)))
    assert t.loc["lstm", "flops_per_token"] == pytest.approx(2 * 8 * 16**2 + 2 * 16 * gpt.vocab)
    assert t.loc["gpt", "flops_per_token"] != t.loc["lstm", "flops_per_token"]
    assert arch.get("lstm").forward_flops(lstm) == t.loc["lstm", "flops_per_token"]


def test_per_position_table_has_one_row_per_run_and_position():
    a, b = fake_record(_cfg(seed=0), val_loss=5.0), fake_record(_cfg(seed=1), val_loss=4.0)
    b["final"]["per_position_loss"] = [6.0, 5.0, 4.5, 4.0]
    t = store_mod.per_position_table([a, b], family="Transformer")
    assert len(t) == 8 and list(t["T"][:4]) == [1, 2, 3, 4] and set(t["family"]) == {"Transformer"}
    assert t.loc[t["key"] == b["key"], "loss"].tolist() == [6.0, 5.0, 4.5, 4.0]
    empty = store_mod.per_position_table([], family="LSTM")
    assert empty.empty and list(empty.columns) == ["T", "loss", "N", "key", "family"]
