"""The command line, ``python -m scaling_lib``: count, train, runs, sweep; errors without tracebacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_lib.cli import main
from scaling_lib.config import RunConfig
from scaling_lib.flops import C_forward_counted, Shape
from scaling_lib.store import DEFAULT_ROOT, Store, load_record
from scaling_lib.train import train

pytestmark = pytest.mark.usefixtures("runs_env", "torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
RUNS_KEYS = {"path", "sweep", "arch", "N", "n_layer", "d_model", "seed", "batch_size", "data_tokens", "tokens",
             "final_val_loss"}


@pytest.fixture
def env(linked_cache, runs_env) -> dict[str, str]:
    """A subprocess environment: private cache (real corpora linked), private default store, one thread."""
    e = dict(os.environ)
    e.update(SCALING_LIB_CACHE=str(linked_cache), SCALING_LIB_RUNS=str(runs_env), OMP_NUM_THREADS="1",
             MKL_NUM_THREADS="1")
    return e


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling_lib", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --- count -----------------------------------------------------------------------------------
def test_count_prints_table1_as_json(env):
    r = cli("count", "--n-layer", "2", "--d-model", "64", "--n-ctx", "128", "--vocab", "4096", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"N", "N_total", "N_embedding", "params_counted", "params_total", "C_forward", "C_forward_exact",
            "C_forward_counted", "n_head", "d_ff"} <= set(out)
    assert out["N"] == out["params_counted"] == 98_304
    assert out["N_total"] == 98_304 + (4096 + 128) * 64
    assert out["C_forward"] == 2 * 98_304 + 2 * 2 * 128 * 64
    assert out["n_head"] == 2 and out["d_ff"] == 256


def test_count_with_d_ff_heads_and_measure(capsys):
    rc = main(["count", "--n-layer", "3", "--d-model", "48", "--n-ctx", "32", "--vocab", "50257", "--d-ff", "100",
               "--n-head", "4", "--measure"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["N"] == out["params_counted"] == 2 * 3 * 48 * (2 * 48 + 100)
    assert out["n_head"] == 4 and out["d_ff"] == 100
    assert out["C_forward_measured"] == out["C_forward_counted"] == C_forward_counted(Shape(3, 48, 32, 50257, 100))
    rc = main(["count", "--n-layer", "1", "--d-model", "16", "--n-ctx", "8", "--vocab", "256"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["params_counted"] == 12 * 16**2


def test_count_bad_input_exits_2_with_one_error_line(env):
    r = cli("count", "--n-layer", "0", "--d-model", "64", "--n-ctx", "128", "--vocab", "4096", env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert "n_layer" in _one_error_line(r.stderr)


@pytest.mark.parametrize("args, words", [
    (["--n-layer", "2", "--d-model", "64", "--n-ctx", "128", "--vocab", "4096", "--n-head", "5"], ["divisible"]),
    (["--n-layer", "2", "--d-model", "64", "--n-ctx", "0", "--vocab", "4096"], ["n_ctx"]),
    (["--n-layer", "2", "--d-model", "64", "--n-ctx", "8", "--vocab", "4096", "--d-ff", "-3"], ["d_ff"]),
])
def test_count_errors_in_process(capsys, args, words):
    assert main(["count", *args]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert all(w in err for w in words), err


def test_argparse_errors_exit_2_without_traceback(env):
    r = cli("count", "--n-layer", "two", "--d-model", "64", "--n-ctx", "128", "--vocab", "4096", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid int value" in r.stderr


# --- train -----------------------------------------------------------------------------------
@pytest.fixture
def tiny_record(tiny_corpus, tmp_path) -> tuple[RunConfig, Path]:
    """A tiny run trained here (one thread) and stored in a temporary store."""
    cfg = RunConfig(sweep="cli", corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=4, tokens=3_072,
                    eval_tokens=1024, lr=1e-2)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path / "ckpt")
    return cfg, Store(tmp_path / "store1").save(rec)


def test_train_from_a_stored_record_reproduces_it(tiny_record, tmp_path, env):
    cfg, path = tiny_record
    stored = load_record(path)
    r = cli("train", "--config", str(path), "--store", str(tmp_path / "store2"), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    new_path = Path(r.stdout.strip().splitlines()[-1])
    assert new_path == Store(tmp_path / "store2").path(cfg) and new_path.exists()
    new = load_record(new_path)
    assert new["key"] == stored["key"] and new["config"] == stored["config"]
    assert new["final"]["val_loss"] == pytest.approx(stored["final"]["val_loss"], rel=1e-6, abs=0)
    assert [p["val_loss"] for p in new["curve"]] == pytest.approx([p["val_loss"] for p in stored["curve"]], rel=1e-6)
    # a second call finds it stored and does not train
    r = cli("train", "--config", str(path), "--store", str(tmp_path / "store2"), "--quiet", env=env)
    assert r.returncode == 0 and r.stdout.strip() == str(new_path)
    assert load_record(new_path)["provenance"]["finished"] == new["provenance"]["finished"]


def test_train_from_a_plain_config_into_the_default_store(tmp_path, env, runs_env, tiny_corpus):
    cfg = RunConfig(sweep="cli", corpus="tiny", n_layer=1, d_model=8, n_ctx=16, batch_size=2, tokens=512,
                    eval_tokens=256)
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps(cfg.to_dict()))
    r = cli("train", "--config", str(f), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == Store(runs_env).path(cfg) and Store(runs_env).has(cfg)
    assert not list(Path(env["SCALING_LIB_CACHE"], "checkpoints").iterdir())


def test_train_errors_exit_2(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.json"), "--store", str(tmp_path)]) == 2
    assert "cannot read config" in _one_error_line(capsys.readouterr().err)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {"n_layer": 1, "attn_pdrop": 0.1}}))  # not a field (dropout is one now)
    assert main(["train", "--config", str(bad), "--store", str(tmp_path)]) == 2
    assert "unknown config field(s): attn_pdrop" in _one_error_line(capsys.readouterr().err)
    bad.write_text(json.dumps({"arch": "transformer"}))
    assert main(["train", "--config", str(bad), "--store", str(tmp_path)]) == 2
    assert "arch" in _one_error_line(capsys.readouterr().err)


# --- runs ------------------------------------------------------------------------------------
def test_runs_json_lists_the_stored_records(tiny_record, tmp_path, env):
    cfg, path = tiny_record
    store = Store(path.parents[1])
    other = load_record(path)
    other_cfg = cfg.replace(seed=5)
    other.update(key=other_cfg.key, name=other_cfg.name, config=other_cfg.to_dict())
    store.save(other)
    r = cli("runs", "--json", "--store", str(store.root), env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 2 and all(RUNS_KEYS <= set(row) for row in rows)
    by_seed = {row["seed"]: row for row in rows}
    rec = load_record(path)
    assert by_seed[0]["path"] == str(path) and by_seed[0]["final_val_loss"] == pytest.approx(rec["final"]["val_loss"])
    assert (by_seed[0]["sweep"], by_seed[0]["arch"], by_seed[0]["N"], by_seed[0]["n_layer"], by_seed[0]["d_model"],
            by_seed[0]["batch_size"], by_seed[0]["tokens"], by_seed[0]["data_tokens"]) == (
        "cli", "gpt", cfg.N, 1, 16, 4, rec["tokens"], rec["data_tokens"])
    # the plain table, and a sweep filter
    r = cli("runs", "--store", str(store.root), "--sweep", "cli", env=env)
    assert r.returncode == 0 and "final_val_loss" in r.stdout and str(path) not in r.stdout
    assert len(r.stdout.strip().splitlines()) == 3


def test_runs_of_an_empty_store(tmp_path, capsys):
    assert main(["runs", "--json", "--store", str(tmp_path / "empty")]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--store", str(tmp_path / "empty")]) == 0
    assert "no runs stored" in capsys.readouterr().out


def test_runs_reads_the_book_store(capsys):
    """Read only: the repository's own store lists one row per record file."""
    before = len(Store(DEFAULT_ROOT).paths())
    assert main(["runs", "--json", "--store", str(DEFAULT_ROOT)]) == 0
    rows = json.loads(capsys.readouterr().out)
    after = len(Store(DEFAULT_ROOT).paths())  # a running sweep may file a record meanwhile
    assert before <= len(rows) <= after and all(RUNS_KEYS <= set(r) for r in rows)


def test_progress_counts_every_chapter_sweep_of_an_empty_store(capsys, tmp_path):
    from scaling_lib.pages import CHAPTER_SWEEPS
    from scaling_lib.progress import sweeps_of

    assert main(["progress", "--json", "--profile", "smoke", "--store", str(tmp_path / "empty")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["sweep"] for r in rows] == list(sweeps_of(CHAPTER_SWEEPS))
    assert all(r["stored"] == 0 and r["planned_left"] + r["foreseen"] > 0 for r in rows if not r["note"])
    assert main(["progress", "--profile", "nope"]) == 2
    assert "unknown profile" in capsys.readouterr().err


# --- sweep -----------------------------------------------------------------------------------
def test_sweep_dry_run_lists_configs(tmp_path, env):
    r = cli("sweep", "lr", "--profile", "smoke", "--dry-run", "--store", str(tmp_path / "s"), env=env)
    assert r.returncode == 0, r.stderr
    from scaling_lib.sweep import configs

    cfgs = configs("lr", "smoke", Store(tmp_path / "s"))
    lines = r.stdout.strip().splitlines()
    assert f"{len(cfgs)} run(s) to train" in lines[0]
    for c in cfgs:
        assert any(f"{c.sweep}/{c.name} ({c.key}) N={c.N}" in ln for ln in lines), c.name
    assert not (tmp_path / "s").exists()


def test_sweep_set_replaces_profile_entries(capsys, tmp_path):
    store = str(tmp_path / "s")
    assert main(["sweep", "ladder", "--profile", "smoke", "--dry-run", "--store", store]) == 0
    default = capsys.readouterr().out
    assert main(["sweep", "ladder", "--profile", "smoke", "--dry-run", "--store", store,
                 "--set", "long_max_N=0", "--set", "seeds=(0,)"]) == 0
    changed = capsys.readouterr().out
    from scaling_lib.sweep import configs

    expected = configs("ladder", "smoke", Store(store), {"long_max_N": 0, "seeds": (0,)})
    assert f"{len(expected)} run(s) to train" in changed and f"{len(expected)} run(s)" not in default
    assert all(f"({c.key})" in changed for c in expected)
    assert main(["sweep", "ladder", "--profile", "smoke", "--dry-run", "--store", store, "--set", "lots=1"]) == 2
    assert "profile 'smoke' has no entry 'lots'" in _one_error_line(capsys.readouterr().err)
    assert main(["sweep", "ladder", "--profile", "smoke", "--dry-run", "--store", store, "--set", "long_max_N"]) == 2
    assert "--set takes KEY=VALUE" in _one_error_line(capsys.readouterr().err)


def test_sweep_size_bounds_select_the_sizes_between_them(capsys, tmp_path):
    from scaling_lib.sweep import configs

    store = str(tmp_path / "s")
    sizes = sorted({c.N for c in configs("ladder", "smoke", Store(store))})
    assert len(sizes) >= 3
    lo, hi = sizes[1], sizes[-2]
    assert main(["sweep", "ladder", "--profile", "smoke", "--dry-run", "--store", store,
                 "--min-n", str(lo), "--max-n", str(hi)]) == 0
    listed = {int(ln.rsplit("N=", 1)[1]) for ln in capsys.readouterr().out.splitlines() if "N=" in ln}
    assert listed == {n for n in sizes if lo <= n <= hi}


def test_sweep_unknown_name_exits_2(capsys, tmp_path):
    assert main(["sweep", "nope", "--profile", "smoke", "--dry-run", "--store", str(tmp_path)]) == 2
    assert "unknown sweep 'nope'" in _one_error_line(capsys.readouterr().err)
    assert main(["sweep", "lr", "--profile", "nope", "--dry-run", "--store", str(tmp_path)]) == 2
    assert "unknown profile 'nope'" in _one_error_line(capsys.readouterr().err)


def test_sweep_executor_choices_are_the_sweep_modules(capsys, tmp_path):
    """The parser lists its executors itself (importing `sweep` would slow every command); they must stay
    the ones `sweep.make_executor` knows."""
    from scaling_lib.sweep import EXECUTORS

    with pytest.raises(SystemExit):
        main(["sweep", "lr", "--executor", "nope"])
    listed = capsys.readouterr().err.rsplit("choose from", 1)[1]
    assert sorted(w.strip(" '\n)") for w in listed.split(",")) == sorted(EXECUTORS)


# --- re-training the smallest stored CPU run of the book -------------------------------------
# The stored run is re-trained only if it took at most this long to train the first time: the ladder
# stores its largest sizes first, and re-training one of those would take the best part of an hour.
RETRAIN_MAX_S = float(os.environ.get("SCALING_LIB_RETRAIN_MAX_S", 300))


def _smallest_stored_cpu_run() -> Path | None:
    best = None
    for p in Store(DEFAULT_ROOT).paths():
        try:
            rec = load_record(p)
        except ValueError:
            continue
        c = rec["config"]
        if c.get("device") != "cpu" or rec.get("status") != "ok" or "val_loss" not in rec.get("final", {}):
            continue
        cost = rec["N"] * c["tokens"]
        if best is None or cost < best[0]:
            best = (cost, p)
    return best[1] if best else None


@pytest.mark.slow
# a choice, not a missing prerequisite: a run too long to retrain in a test run (runs/ is in the repository,
# so "no CPU run stored" is not allowed and fails under CI)
@pytest.mark.allowed_skip(match="SCALING_LIB_RETRAIN_MAX_S")
def test_retraining_the_smallest_stored_cpu_run_reproduces_it(tmp_path, env):
    path = _smallest_stored_cpu_run()
    if path is None:
        pytest.skip(f"no CPU run (config.device == 'cpu', status ok) is stored under {DEFAULT_ROOT} yet")
    stored = load_record(path)
    wall = stored["provenance"].get("wall_time_s") or float("inf")
    if wall > RETRAIN_MAX_S:
        pytest.skip(f"the smallest stored CPU run, {path.relative_to(DEFAULT_ROOT)}, took {wall:.0f}s to train, "
                    f"more than {RETRAIN_MAX_S:.0f}s (raise SCALING_LIB_RETRAIN_MAX_S to re-train it anyway)")
    threads = stored["provenance"].get("threads") or 1
    env = dict(env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    r = cli("train", "--config", str(path), "--store", str(tmp_path / "retrain"), "--quiet", env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    new = load_record(Path(r.stdout.strip().splitlines()[-1]))
    assert new["key"] == stored["key"]
    assert new["final"]["val_loss"] == pytest.approx(stored["final"]["val_loss"], rel=1e-3), (
        f"{path.name}: stored {stored['final']['val_loss']}, retrained {new['final']['val_loss']}")
