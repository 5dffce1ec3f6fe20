"""Planning a sweep's device time (`gpuplan`, `python -m scaling_lib gpu-plan`): the work a run
computes, counted as train.py spends it; the simulated pool of P workers; the plan's arithmetic;
and the command on the smoke profile, measured here, with an assumed speedup, and from a rates file.
"""
from __future__ import annotations

import json

import pytest

from scaling_lib import cli
from scaling_lib import train as train_mod
from scaling_lib.config import RunConfig
from scaling_lib.gpuplan import Job, Rate, Work, best, corpus_splits, pack, plan, run_work, shape_of
from scaling_lib.store import Store
from scaling_lib.sweep import configs

OVERRIDES = dict(shapes=({"n_layer": 1, "d_model": 8}, {"n_layer": 2, "d_model": 8}), shape_tokens=2048,
                 shape_lr_tuned=())
SETS = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v!r}")]


# --- the work of a run ---------------------------------------------------------------------------
def test_run_work_counts_the_steps_and_windows_of_a_run():
    # 100 steps of 4 x 32 tokens; a branch from step round(0.8 * 50) = 40 to the 6,400-token budget (50 steps)
    cfg = RunConfig(n_ctx=32, batch_size=4, tokens=12_800, schedule="wsd", budgets=(6_400,), eval_tokens=1024)
    splits = {"train": 10**6, "val": 10_000, "test": 3_000, "email": 5_000}
    w = run_work(cfg, splits, final_eval_tokens=2048)
    assert w.train_tokens == (100 + 10) * 128
    # 16 curve evaluations (steps 0, 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 42, 56, 75, 100), each 32
    # validation windows and 8 e-mail windows (a quarter of the tokens) of 32 tokens; the branch and
    # the end on 64 final validation windows; the test and e-mail splits on 64 windows each
    assert len(train_mod.eval_steps(100, 8)) == 16
    assert w.eval_tokens == 16 * (1024 + 256) + 2048 + 3 * 2048
    # evaluation 1 scored the branch on the curve's windows; a short split caps its windows
    v1 = run_work(cfg.replace(eval_version=1), splits, final_eval_tokens=2048)
    assert v1.eval_tokens == w.eval_tokens - 2048 + 1024 and v1.train_tokens == w.train_tokens
    short = run_work(cfg, dict(splits, test=500), final_eval_tokens=2048)
    assert short.eval_tokens == w.eval_tokens - 2048 + (499 // 32) * 32
    assert (w.key, w.name, w.N, w.shape) == (cfg.key, cfg.name, cfg.N, shape_of(cfg))
    # the noise scale's batches at every curve evaluation (config noise_batches), each about a training step
    noisy = run_work(cfg.replace(noise_batches=2), splits, final_eval_tokens=2048)
    assert noisy.train_tokens == w.train_tokens + 16 * 2 * 128 and noisy.eval_tokens == w.eval_tokens
    with pytest.raises(ValueError, match="needs 'val' and 'test'"):
        run_work(cfg, {"val": 10_000})


@pytest.mark.slow
@pytest.mark.parametrize("eval_version", [1, 2])
def test_run_work_is_what_the_training_loop_trains_and_scores(eval_version, tiny_cfg, tmp_path, linked_cache,
                                                             monkeypatch, torch_one_thread):
    cfg = tiny_cfg(tokens=4096, schedule="wsd", budgets=(1024, 2048), eval_version=eval_version)
    trained, scored = [0], [0]
    real_step, real_eval, real_score = train_mod._train_step, train_mod.evaluate, train_mod.score

    def step(model, opt, c, *a, **kw):
        trained[0] += c.tokens_per_step
        return real_step(model, opt, c, *a, **kw)

    def evaluate(model, windows, c, *a, **kw):
        scored[0] += windows.shape[0] * c.n_ctx
        return real_eval(model, windows, c, *a, **kw)

    def score(model, windows, c, *a, **kw):
        scored[0] += windows.shape[0] * c.n_ctx
        return real_score(model, windows, c, *a, **kw)

    monkeypatch.setattr(train_mod, "_train_step", step)
    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    monkeypatch.setattr(train_mod, "score", score)
    rec = train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path / "ckpt")
    assert rec["status"] == "ok"
    w = run_work(cfg, corpus_splits(cfg))
    assert (w.train_tokens, w.eval_tokens) == (trained[0], scored[0])


# --- packing into P workers -------------------------------------------------------------------------
def test_pack_simulates_the_pool_workers_sharing_and_start_ups():
    jobs = [Job(f"j{i}", 0.0, 10.0) for i in range(3)]
    assert pack(jobs, 1).total_s == pytest.approx(30)
    perfect = pack(jobs, 2)  # sharing costs nothing: two at once, then the third
    assert perfect.total_s == pytest.approx(20) and perfect.worker == (0, 1, 0)
    assert perfect.start_s == pytest.approx((0, 0, 10)) and perfect.busy_s == pytest.approx((20, 10))
    half = lambda job, k: 1.0 / k  # noqa: E731  (sharing gains nothing: two at once, each at half speed)
    assert pack(jobs, 2, share=half).end_s == pytest.approx((20, 20, 30))
    # a fresh worker starts in 5 s: only the first run of each worker pays it when they are kept ...
    assert pack(jobs, 2, share=half, startup_s=5).end_s == pytest.approx((25, 25, 35))
    # ... every run when each has a fresh process, and every second run with a limit of 2
    assert pack(jobs, 2, share=half, startup_s=5, runs_per_worker=1).total_s == pytest.approx(40)
    assert pack(jobs * 2, 1, startup_s=5, runs_per_worker=2).total_s == pytest.approx(60 + 3 * 5)
    # a long and a short run: both at half speed until the short one ends (at 20), then the long one alone
    two = pack([Job("short", 0, 10), Job("long", 0, 30)], 2, share=half)
    assert two.end_s == pytest.approx((20, 40))
    # set-ups are not slowed by sharing, and a run computes only once it is set up
    setup = pack([Job("a", 4, 10), Job("b", 0, 10)], 2, share=half)
    # b alone for 4 s (6 left), then both at half speed until b ends at 4 + 12; a's last 4 s alone
    assert setup.end_s == pytest.approx((20, 16))
    assert pack([], 4).total_s == 0
    with pytest.raises(ValueError, match="processes must be at least 1"):
        pack(jobs, 0)
    with pytest.raises(ValueError, match=r"a share must lie in \(0, 1\]"):
        pack(jobs, 2, share=lambda job, k: 0.0)


def test_a_shapes_share_of_the_device_is_measured_interpolated_or_assumed():
    r = Rate("s", 1000.0, 4000.0, 0.5, shared={2: 800.0, 4: 500.0})
    assert r.share(1) == (1.0, "measured")
    assert r.share(2) == (pytest.approx(0.8), "measured") and r.share(4) == (pytest.approx(0.5), "measured")
    # totals 1, 1.6, 2.0 at k = 1, 2, 4: 1.8 at k = 3; flat at 2.0 past 4
    assert r.share(3) == (pytest.approx(1.8 / 3), "interpolated")
    assert r.share(8) == (pytest.approx(2.0 / 8), "interpolated")
    lone = Rate("s", 1000.0, 4000.0, 0.5)
    assert lone.share(4, contention=1.0) == (pytest.approx(0.25), "assumed")
    assert lone.share(4, contention=0.0) == (1.0, "assumed")
    assert lone.share(3, contention=0.5) == (pytest.approx(0.5), "assumed")


def test_a_measured_share_above_one_is_noise_and_counts_as_one():
    # CI met this: two processes timed at once each ran 3% faster than the lone one had
    noisy = Rate("s", 1000.0, 4000.0, 0.5, shared={2: 1030.0, 3: 700.0})
    assert noisy.share(2) == (1.0, "measured")
    assert noisy.share(3) == (pytest.approx(0.7), "measured")
    assert Rate("s", 1000.0, 4000.0, 0.5, shared={2: 1100.0}).share(4) == (pytest.approx(2.2 / 4), "interpolated")
    assert Rate("s", 1000.0, 4000.0, 0.5, shared={3: 1100.0}).share(2) == (1.0, "interpolated")
    p = pack([Job("a", 0.0, 10.0, "s"), Job("b", 0.0, 10.0, "s")], 2, share=lambda job, k: noisy.share(k)[0])
    assert p.total_s == pytest.approx(10.0)


def test_plan_turns_work_into_seconds_at_the_rates_and_says_what_it_assumed():
    works = [Work(f"k{i}", "ladder", f"run{i}", 100, "A", 1_000_000, 400_000) for i in range(2)]
    works.append(Work("k2", "ladder", "run2", 200, "B", 2_000_000, 0))
    rates = {"A": Rate("A", 10_000.0, 40_000.0, 1.0), "B": Rate("B", 5_000.0, 20_000.0, 2.0, shared={2: 4_000.0})}
    out = plan(works, rates, processes=(1, 2), speedup=4.0, startup_s=3.0, contention=0.5)
    # alone: setup + (trained / rate + scored / rate) / speedup
    assert [r["alone_s"] for r in out["runs"]] == pytest.approx([1 + (100 + 10) / 4, 1 + 110 / 4, 2 + 400 / 4])
    assert [r["train_s"] for r in out["runs"]] == pytest.approx([25, 25, 100])
    one, two = out["packings"]
    assert one["processes"] == 1 and one["total_s"] == pytest.approx(3 + sum(r["alone_s"] for r in out["runs"]))
    assert one["sharing"] == "measured" and two["sharing"] == "assumed"  # shape A's sharing was not measured
    assert two["total_s"] < one["total_s"] and [r["worker"] for r in two["runs"]] == [0, 1, 0]
    assert out["assumed"] == dict(speedup=4.0, startup_s=3.0, contention=0.5)
    assert (out["train_tokens"], out["eval_tokens"]) == (4_000_000, 800_000)
    fresh = plan(works, rates, processes=(1,), startup_s=3.0, runs_per_worker=1)
    assert fresh["packings"][0]["total_s"] == pytest.approx(3 * 3 + sum(1 + 110 + 0 for _ in range(2)) + 2 + 400)
    assert fresh["assumed"]["speedup"] is None and fresh["assumed"]["contention"] is None  # nothing left to assume
    # the pool to use: the fewest processes within 1% of the shortest total
    totals = lambda *pt: dict(packings=[dict(processes=p, total_s=t) for p, t in pt])  # noqa: E731
    assert best(totals((1, 100.0), (2, 60.0), (4, 59.7), (8, 40.0)))["processes"] == 8
    assert best(totals((1, 100.0), (2, 60.0), (4, 59.7)))["processes"] == 2
    assert best(totals()) is None
    with pytest.raises(LookupError, match="no measured rate for shape 'C'"):
        plan([Work("k", "s", "n", 1, "C", 1, 1)], rates)
    with pytest.raises(ValueError, match="speedup must be positive"):
        plan(works, rates, speedup=0.0)
    with pytest.raises(ValueError, match=r"contention must lie in \[0, 1\]"):
        plan(works, rates, contention=2.0)


# --- the command ---------------------------------------------------------------------------------
def gpu_plan(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["gpu-plan", "shape", "--profile", "smoke", *SETS, "--quiet", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
def test_the_gpu_plan_command_measures_the_smoke_sweep_here_and_plans_it(tmp_path, capsys, tiny_corpus, linked_cache,
                                                                         runs_env, torch_one_thread):
    rc, out, err = gpu_plan(capsys, "--steps", "2", "--warmup", "1", "--processes", "1,2,3",
                            "--measure-processes", "2", "--json")
    assert rc == 0, err
    res = json.loads(out)
    cfgs = configs("shape", "smoke", Store(runs_env), OVERRIDES)
    assert [r["key"] for r in res["runs"]] == [c.key for c in cfgs] and len(cfgs) == 2
    m = res["measured"]
    assert m["device"] == "cpu" and m["processes"] == [1, 2] and m["steps"] == 2
    assert set(m["rates"]) == {shape_of(c) for c in cfgs}
    for r in m["rates"].values():
        assert r["train_tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 and r["setup_s"] >= 0
        assert set(r["shared"]) == {"2"} and r["shared"]["2"] > 0
    assert [p["processes"] for p in res["packings"]] == [1, 2, 3]
    assert [p["sharing"] for p in res["packings"]] == ["measured", "measured", "interpolated"]
    assert res["assumed"] == dict(speedup=None, startup_s=5.0, contention=None)  # measured on the runs' device
    for r in res["runs"]:
        rate = m["rates"][r["shape"]]
        assert r["train_s"] == pytest.approx(r["train_tokens"] / rate["train_tokens_per_s"])
        assert r["train_tokens"] == 2048 and r["eval_tokens"] > 0
    assert res["packings"][0]["total_s"] == pytest.approx(5.0 + sum(r["alone_s"] for r in res["runs"]))

    # the same sweep on cuda, measured on this cpu: a speedup must be assumed, or rates measured on the device
    rates = tmp_path / "rates.json"
    rates.write_text(out)
    rc, _, err = gpu_plan(capsys, "--set", "device=cuda", "--measure-device", "cpu", "--steps", "1", "--warmup", "0")
    assert rc == 2 and "the runs train on cuda but the rates would be measured on cpu: give --speedup" in err
    rc, _, err = gpu_plan(capsys, "--set", "device=cuda", "--rates", str(rates))
    assert rc == 2 and "the runs train on cuda but the rates were measured on cpu: give --speedup" in err
    rc, out, err = gpu_plan(capsys, "--set", "device=cuda", "--rates", str(rates), "--speedup", "10", "--json")
    assert rc == 0, err
    fast = json.loads(out)
    assert fast["target_device"] == "cuda" and fast["measured"] == m  # nothing measured again
    assert [r["train_s"] for r in fast["runs"]] == pytest.approx([r["train_s"] / 10 for r in res["runs"]])
    assert fast["assumed"]["speedup"] == 10 and all(r["sweep"] == "shape-gpu" for r in fast["runs"])
    rc, out, err = gpu_plan(capsys, "--set", "device=cuda", "--rates", str(rates), "--speedup", "10",
                            "--processes", "1,4", "--runs-per-worker", "1")
    assert rc == 0, err
    assert "measured (" in out and "assumed: the device runs 10x the measured rates (--speedup)" in out
    assert "replaced every 1 run(s)" in out and "runs at P = " in out
    assert all(c.key in out for c in configs("shape", "smoke", Store(runs_env), dict(OVERRIDES, device="cuda")))


def test_the_gpu_plan_command_refuses_bad_input(tmp_path, capsys, runs_env):
    bad = tmp_path / "rates.json"
    bad.write_text('{"rates": {}}')
    rc, _, err = gpu_plan(capsys, "--rates", str(bad))
    assert rc == 2 and "not a gpu-plan measurement" in err
    rc, _, err = gpu_plan(capsys, "--rates", str(tmp_path / "missing.json"))
    assert rc == 2 and "cannot read rates" in err
    rc, _, err = gpu_plan(capsys, "--processes", "1,two")
    assert rc == 2 and "expected integers joined by commas" in err
