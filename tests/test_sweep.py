"""Named sweeps: their grids, the learning-rate edge extension, and the resumable runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from scaling_lib import plans as plans_mod
from scaling_lib.config import RunConfig
from scaling_lib.plans import PROFILES
from scaling_lib.store import Store
from scaling_lib.plans import SWEEPS, configs, ladder_lr, sweep_lr, sweep_lstm
from scaling_lib.runner import progress_line
from scaling_lib.sweep import load_by_machine, run_sweep

pytestmark = pytest.mark.usefixtures("runs_env", "torch_one_thread")


def fake_record(cfg: RunConfig, val_loss: float, status: str = "ok") -> dict:
    """What sweep_lr reads of a record (status and final val_loss), plus what the store needs."""
    return dict(key=cfg.key, name=cfg.name, sweep=cfg.sweep, config=cfg.to_dict(), status=status,
                final=dict(val_loss=val_loss) if status == "ok" else {})


# --- grids -----------------------------------------------------------------------------------
def test_the_named_sweeps():
    assert set(SWEEPS) == {"lr", "ladder", "tune", "data", "shape", "lstm", "context", "recur", "overfit", "batch", "depth",
                           "schedule", "warmup"}


def test_smoke_grids(tmp_path):
    s = Store(tmp_path)
    p = PROFILES["smoke"]
    lr = configs("lr", "smoke", s)
    assert len(lr) == len(p["ladder"]) * len(p["lr_grid"])
    assert all(c.sweep == "lr" and c.corpus == "tiny" and c.tokens == p["lr_tokens"] for c in lr)
    ladder = configs("ladder", "smoke", s)
    assert len(ladder) == len(p["ladder"]) + len(p["seeds"]) - 1
    assert all(c.schedule == "wsd" and c.lr == ladder_lr(c.N) for c in ladder)
    # the sizes up to long_max_N train on to long_tokens; the others stop at tokens
    long = [c.N <= p["long_max_N"] for c in ladder]
    assert any(long) and not all(long)
    assert all((c.tokens, c.budgets) == ((p["long_tokens"], p["long_budgets"]) if is_long else (p["tokens"], p["budgets"]))
               for c, is_long in zip(ladder, long))
    assert [c.seed for c in ladder] == sorted(c.seed for c in ladder)  # every size once before extra seeds
    data = configs("data", "smoke", s)
    # the largest subsets (the longest runs) first, the whole split (data_tokens 0) the largest of all
    assert [c.data_tokens for c in data] == sorted(p["data_sizes"], key=lambda d: d or float("inf"), reverse=True)
    assert all(c.early_stop for c in data)
    shape = configs("shape", "smoke", s)
    assert [(c.n_layer, c.d_model) for c in shape] == [(d["n_layer"], d["d_model"]) for d in p["shapes"]]
    lstm = configs("lstm", "smoke", s)
    assert all(c.arch == "lstm" for c in lstm)
    tune = configs("tune", "smoke", s)
    assert len(tune) == 3 * len(p["tune_ladder"]) and all(c.eval_version == 2 and c.schedule == "wsd" for c in tune)
    context, recur = configs("context", "smoke", s), configs("recur", "smoke", s)
    overfit, batch = configs("overfit", "smoke", s), configs("batch", "smoke", s)
    depth, schedule = configs("depth", "smoke", s), configs("schedule", "smoke", s)
    assert len(schedule) == len(p["schedule_variants"])
    warmup = configs("warmup", "smoke", s)
    assert warmup == []  # planned once a tuned grid is finished: none is stored here
    everything = configs("all", "smoke", s)
    assert len(everything) == len(lr) + len(ladder) + len(data) + len(shape) + len(lstm) + len(tune) + len(context) + \
        len(recur) + len(overfit) + len(batch) + len(depth) + len(schedule) + len(warmup)
    assert len({c.key for c in everything}) == len(everything)


@pytest.mark.parametrize("name", ["smoke", "book"])
def test_long_ladder_runs_extend_the_short_ones(name):
    """A long run keeps the short run's warmup and budgets (so its stable phase is the same run) and adds its own."""
    s = Store("/nonexistent-store")
    short = {(c.N, c.seed): c for c in configs("ladder", name, s, {"long_max_N": 0})}
    long = [c for c in configs("ladder", name, s) if c.tokens > PROFILES[name]["tokens"]]
    assert long and all(c.N <= PROFILES[name]["long_max_N"] for c in long)
    for c in long:
        was = short[c.N, c.seed]
        assert (c.warmup_tokens, c.lr, c.schedule) == (was.warmup_tokens, was.lr, was.schedule)
        assert set(was.all_budgets) < set(c.all_budgets)
    assert all(c.tokens == PROFILES[name]["tokens"] for c in short.values())


def test_the_gpu_ladder_has_no_long_runs():
    assert configs("ladder", "gpu", Store("/nonexistent-store"), {"long_max_N": 0}) == \
        configs("ladder", "gpu", Store("/nonexistent-store"))


def test_overrides_reach_load_by_machine(runs_env):
    store = Store(runs_env)
    short = configs("ladder", "book", store, {"long_max_N": 0})
    for c in short:
        store.save(dict(fake_record(c, 4.0), N=c.N))
    runs, missing = load_by_machine("ladder", "book", overrides={"long_max_N": 0})
    assert len(runs["CPU"]) == len(short) and not missing
    runs, missing = load_by_machine("ladder", "book")  # the long runs are other runs, not stored here
    assert missing and all(c.tokens == PROFILES["book"]["long_tokens"] for c in missing)
    with pytest.raises(ValueError, match="no entry 'nope'"):
        load_by_machine("ladder", "book", overrides={"nope": 1})


def test_several_sweeps_by_name():
    s = Store("/nonexistent-store")
    both = configs("data,lstm", "smoke", s)
    assert both == configs("data", "smoke", s) + configs("lstm", "smoke", s)
    with pytest.raises(ValueError, match="unknown sweep 'nope'"):
        configs("data,nope", "smoke", s)


def test_load_by_machine_splits_cpu_and_gpu_runs_and_waits_for_enough_sizes(runs_env):
    store = Store(runs_env)  # where the 'book' and 'gpu' profiles look, redirected by runs_env
    cpu, gpu = configs("ladder", "book", store), configs("ladder", "gpu", store)
    for i, c in enumerate(cpu[:3]):
        store.save(dict(fake_record(c, 4.0, "diverged" if i == 2 else "ok"), N=c.N))
    for c in gpu[:3]:
        store.save(dict(fake_record(c, 4.0), N=c.N))
    runs, missing = load_by_machine("ladder", "book")
    assert [len(runs["CPU"]), len(runs["GPU"])] == [2, 3]  # the diverged run is left out
    assert {r["config"]["device"] for r in runs["GPU"]} == {"cuda"}
    assert len(missing) == len(cpu) - 3
    runs, _ = load_by_machine("ladder", "book", min_sizes=3)
    assert list(runs) == ["GPU"]  # two finished CPU sizes are not yet a ladder
    assert load_by_machine("ladder", "book", status=("diverged",))[0].keys() == {"CPU"}


def test_gpu_profile_files_its_runs_apart():
    cfgs = configs("ladder", "gpu", Store("/nonexistent-store"))
    assert {c.sweep for c in cfgs} == {"ladder-gpu"} and {c.device for c in cfgs} == {"cuda"}
    # the gpu ladder extends the cpu one
    assert len({(c.n_layer, c.d_model) for c in cfgs}) == len(PROFILES["gpu"]["ladder"])


def test_unknown_sweep_or_profile():
    with pytest.raises(ValueError, match="unknown sweep 'nope'.*lr, ladder"):
        configs("nope", "smoke", Store("/nonexistent-store"))
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        configs("lr", "nope", Store("/nonexistent-store"))


# --- the learning-rate grid grows at a winning edge ------------------------------------------
def _lr_profile(grid=(1e-2, 3e-2, 1e-1)):
    return dict(PROFILES["smoke"], ladder=((1, 8),), lr_grid=grid)


def _fill(store, p, losses: dict, status=None):
    status = status or {}
    for c in sweep_lr(p, store):
        if c.lr in losses:
            store.save(fake_record(c, losses[c.lr], status.get(c.lr, "ok")))


def test_lr_grid_is_unchanged_when_incomplete_or_best_inside(tmp_path):
    s, p = Store(tmp_path), _lr_profile()
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1]  # nothing stored yet
    _fill(s, p, {1e-2: 5.0, 3e-2: 4.0})  # one missing: no extension yet
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1]
    _fill(s, p, {1e-1: 4.5})  # best in the middle
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1]


def test_lr_grid_extends_up_when_the_largest_wins(tmp_path):
    s, p = Store(tmp_path), _lr_profile()
    _fill(s, p, {1e-2: 5.0, 3e-2: 4.5, 1e-1: 4.0})
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1, 0.3]
    _fill(s, p, {0.3: 3.9})  # wins again: a second extension
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1, 0.3, 0.9]
    _fill(s, p, {0.9: 3.8})  # and again: at most two extensions
    assert [c.lr for c in sweep_lr(p, s)] == [1e-2, 3e-2, 1e-1, 0.3, 0.9]
    assert all(c.sweep == "lr" and c.n_layer == 1 and c.d_model == 8 for c in sweep_lr(p, s))


def test_lr_grid_extends_down_when_the_smallest_wins(tmp_path):
    s, p = Store(tmp_path), _lr_profile()
    _fill(s, p, {1e-2: 4.0, 3e-2: 4.5, 1e-1: 5.0})
    lrs = [c.lr for c in sweep_lr(p, s)]
    assert lrs[1:] == [1e-2, 3e-2, 1e-1] and lrs[0] == pytest.approx(1e-2 / 3, rel=1e-5)
    _fill(s, p, {lrs[0]: 4.2})  # the new edge loses: no further extension
    assert [c.lr for c in sweep_lr(p, s)] == lrs


def test_lr_grid_stops_below_one(tmp_path):
    s, p = Store(tmp_path), _lr_profile(grid=(0.1, 0.5))
    _fill(s, p, {0.1: 5.0, 0.5: 4.0})
    assert [c.lr for c in sweep_lr(p, s)] == [0.1, 0.5]  # 1.5 would be past 1.0


def test_lr_grid_extends_down_even_when_the_largest_diverged(tmp_path):
    s, p = Store(tmp_path), _lr_profile()
    _fill(s, p, {1e-2: 4.0, 3e-2: 4.5, 1e-1: float("nan")}, status={1e-1: "diverged"})
    lrs = [c.lr for c in sweep_lr(p, s)]
    assert len(lrs) == 4 and lrs[0] == pytest.approx(1e-2 / 3, rel=1e-5)


# --- running ---------------------------------------------------------------------------------
def test_run_sweep_trains_what_is_missing_then_nothing(tmp_path, tiny_corpus, linked_cache, monkeypatch):
    def sweep_tiny2(p, store):
        base = RunConfig(sweep="tiny2", corpus=p["corpus"], n_layer=1, d_model=8, n_ctx=32, batch_size=4,
                         tokens=2048, eval_tokens=1024)
        return [base, base.replace(seed=1)]

    monkeypatch.setitem(SWEEPS, "tiny2", sweep_tiny2)
    s = Store(tmp_path / "runs")
    log: list[str] = []
    results = run_sweep("tiny2", "smoke", store=s, workers=1, log=log.append)
    cfgs = sweep_tiny2(PROFILES["smoke"], s)
    assert [r.status for r in results] == ["trained", "trained"]
    assert sorted(r.path for r in results) == sorted(str(s.path(c)) for c in cfgs)
    assert all(s.load(c)["status"] == "ok" for c in cfgs)
    assert "2 run(s) to train" in log[0] and any(" ok val " in line for line in log)
    assert not list((linked_cache / "checkpoints").iterdir())

    def must_not_train(*a, **kw):
        raise AssertionError("the second run_sweep trained again")

    monkeypatch.setattr("scaling_lib.train.train", must_not_train)
    log.clear()
    assert run_sweep("tiny2", "smoke", store=s, workers=1, log=log.append) == []
    assert log == []


def test_run_sweep_dry_run_and_deadline_train_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("scaling_lib.train.train", lambda *a, **kw: pytest.fail("trained"))
    s = Store(tmp_path)
    log: list[str] = []
    assert run_sweep("lr", "smoke", store=s, workers=1, dry_run=True, log=log.append) == []
    n = len(configs("lr", "smoke", s))
    assert f"{n} run(s) to train" in log[0] and len(log) == 1 + n
    assert all(line.startswith("  lr/gpt-") and " N=" in line for line in log[1:])
    log.clear()
    results = run_sweep("lr", "smoke", store=s, workers=1, deadline_s=1e-9, log=log.append)
    assert results and all(r.status == "stopped" for r in results)
    assert any("deadline reached" in line for line in log)
    assert not list(tmp_path.rglob("*.json"))


def test_a_failing_run_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch):
    def sweep_two(p, store):
        base = RunConfig(sweep="two", corpus="tiny", n_layer=1, d_model=8, n_ctx=32, batch_size=4, tokens=2048)
        return [base, base.replace(seed=1)]

    monkeypatch.setitem(SWEEPS, "two", sweep_two)
    seen = []

    def boom(cfg, **kw):
        seen.append(cfg.seed)
        raise RuntimeError("out of memory")

    monkeypatch.setattr("scaling_lib.train.train", boom)
    log: list[str] = []
    results = run_sweep("two", "smoke", store=Store(tmp_path), workers=1, log=log.append)
    assert [r.status for r in results] == ["failed", "failed"] and not any(r.ok for r in results)
    assert set(seen) == {0, 1}
    assert any("FAILED: RuntimeError: out of memory" in line for line in log)


def test_a_failing_run_is_tried_once_per_call(tmp_path, monkeypatch):
    monkeypatch.setitem(SWEEPS, "one", lambda p, store: [RunConfig(sweep="one", corpus="tiny", tokens=2048)])
    seen = []

    def boom(cfg, **kw):
        seen.append(cfg.key)
        raise RuntimeError("out of memory")

    monkeypatch.setattr("scaling_lib.train.train", boom)
    run_sweep("one", "smoke", store=Store(tmp_path), workers=1, log=lambda m: None)
    assert len(seen) == 1


@pytest.mark.slow
def test_the_smoke_lr_sweep_of_one_size_runs_and_resumes(tmp_path, tiny_corpus, linked_cache, monkeypatch):
    """The real sweep_lr on the smoke profile cut to one size: trains its grid (and any edge extension)."""
    monkeypatch.setitem(plans_mod.PROFILES, "unit", dict(PROFILES["smoke"], ladder=((1, 8),), lr_tokens=10_240))
    s = Store(tmp_path / "runs")
    results = run_sweep("lr", "unit", store=s, workers=1, log=lambda m: None)
    cfgs = configs("lr", "unit", s)
    assert 2 <= len(results) == len(cfgs) <= 4 and all(r.status == "trained" for r in results)
    assert all(s.has(c) for c in cfgs)
    assert {1e-2, 3e-2} <= {c.lr for c in cfgs}
    recs = [s.load(c) for c in cfgs]
    losses = {r["config"]["lr"]: r["final"]["val_loss"] for r in recs if r["status"] == "ok"}
    if len(cfgs) > 2:  # the grid grew at the edge that held the minimum
        grid = sorted(PROFILES["smoke"]["lr_grid"])
        assert min(losses, key=losses.get) not in grid[1:-1]
    assert run_sweep("lr", "unit", store=s, workers=1, log=lambda m: None) == []


def test_a_run_held_by_another_process_is_skipped_as_locked(tmp_path, monkeypatch):
    from scaling_lib.train import RunLocked

    monkeypatch.setitem(SWEEPS, "one", lambda p, store: [RunConfig(sweep="one", corpus="tiny", tokens=2048)])

    def held(cfg, **kw):
        raise RunLocked("held elsewhere")

    monkeypatch.setattr("scaling_lib.train.train", held)
    log: list[str] = []
    results = run_sweep("one", "smoke", store=Store(tmp_path), workers=1, log=log.append)
    assert [r.status for r in results] == ["locked"] and results[0].error is None
    assert any("skipped: another process is training it" in line for line in log)
    assert not any("FAILED" in line or "Traceback" in line for line in log)


def test_a_deadline_inside_a_run_checkpoints_it_and_the_next_call_resumes(tmp_path, tiny_corpus, linked_cache,
                                                                         monkeypatch):
    import time

    from scaling_lib import train as train_mod

    cfg = RunConfig(sweep="one", corpus="tiny", n_layer=1, d_model=8, n_ctx=32, batch_size=4, tokens=16_384,
                    eval_tokens=1024)
    monkeypatch.setitem(SWEEPS, "one", lambda p, store: [cfg])
    s = Store(tmp_path / "runs")
    real_step, calls = train_mod._train_step, []

    def slow_step(*a, **kw):  # each step takes a little while, so the deadline falls mid-run
        calls.append(1)
        time.sleep(0.01)
        return real_step(*a, **kw)

    monkeypatch.setattr(train_mod, "_train_step", slow_step)
    first = run_sweep("one", "smoke", store=s, workers=1, deadline_s=0.5, log=lambda m: None)
    assert [r.status for r in first] == ["stopped"] and not s.has(cfg)
    ckpt = linked_cache / "checkpoints" / f"{cfg.key}.pt"
    assert ckpt.exists()
    done_before = len(calls)
    assert 0 < done_before < cfg.steps
    second = run_sweep("one", "smoke", store=s, workers=1, log=lambda m: None)
    assert [r.status for r in second] == ["trained"] and s.has(cfg)
    assert len(calls) - done_before < cfg.steps  # it resumed: the first steps were not trained again
    assert not ckpt.exists()


def test_progress_line_reports_the_runs_that_checkpointed(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    cfgs = configs("ladder", "smoke", Store(tmp_path / "runs"))[:2]
    assert progress_line(cfgs) == ""
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / f"{cfgs[1].key}.progress.json").write_text(
        json.dumps(dict(step=30, steps=120, wall_s=600.0, val_loss=4.25, name=cfgs[1].name)))
    assert progress_line(cfgs) == f"ladder/{cfgs[1].name} 25% (val 4.250, 10 min)"


def test_the_lstm_grid_grows_at_a_winning_edge_too(tmp_path):
    s = Store(tmp_path)
    p = dict(PROFILES["smoke"], lstm_ladder=((1, 16),), lstm_lr_grid=(1e-2, 3e-2))
    assert [c.lr for c in sweep_lstm(p, s)] == [1e-2, 3e-2]
    for c, loss in zip(sweep_lstm(p, s), (5.0, 4.0)):
        s.save(fake_record(c, loss))
    grown = sweep_lstm(p, s)
    assert [c.lr for c in grown] == [1e-2, 3e-2, 9e-2] and {c.arch for c in grown} == {"lstm"}


def test_progress_line_counts_a_checkpoint_older_than_the_sweep_as_queued(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    cfgs = configs("ladder", "smoke", Store(tmp_path / "runs"))[:2]
    d = tmp_path / "checkpoints"
    d.mkdir()
    for c in cfgs:
        (d / f"{c.key}.progress.json").write_text(json.dumps(dict(step=30, steps=120, wall_s=600.0, val_loss=4.25)))
    old = d / f"{cfgs[0].key}.progress.json"
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # left by a sweep stopped an hour ago
    assert progress_line(cfgs, since=time.time() - 60) == f"ladder/{cfgs[1].name} 25% (val 4.250, 10 min); " \
                                                         "1 queued to resume from a checkpoint"


def test_progress_line_leaves_out_the_runs_another_process_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    cfgs = configs("ladder", "smoke", Store(tmp_path / "runs"))[:3]
    d = tmp_path / "checkpoints"
    d.mkdir()
    me = os.getpid()
    for c, pids in zip(cfgs, ([me, 1], [me + 1, me], [me + 1, me + 2])):  # this process; a child of it; another sweep
        (d / f"{c.key}.progress.json").write_text(json.dumps(dict(step=30, steps=120, wall_s=600.0, pids=pids)))
    mine = [f"ladder/{c.name} 25% (10 min)" for c in cfgs[:2]]
    assert progress_line(cfgs, owner=me) == "; ".join(mine)
    assert progress_line(cfgs) == "; ".join(mine + [f"ladder/{cfgs[2].name} 25% (10 min)"])  # no owner: every run


def test_a_stopped_run_resumes_from_its_checkpoint_only_if_it_has_one(tmp_path, monkeypatch):
    from scaling_lib import runner

    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    store = Store(tmp_path / "runs")
    cfg = configs("ladder", "smoke", store)[0]
    past = runner.InlineExecutor().submit(cfg, store, stop_at=time.time() - 1).result()  # the deadline came first
    assert past.status == "stopped" and not past.checkpointed
    assert past.line() == f"ladder/{cfg.name} stopped (at the deadline): it runs next time"
    monkeypatch.setattr(runner.preempt, "requested", lambda: 15)  # SIGTERM before the run began
    asked = runner.run_one(cfg, store)
    assert asked.line() == f"ladder/{cfg.name} stopped (asked to stop before it began): it runs next time"
    # an earlier sweep stopped it at a checkpoint (its progress file beside it): it resumes from there
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / f"{cfg.key}.progress.json").write_text(json.dumps(dict(step=30, steps=120, wall_s=60.0)))
    assert runner.run_one(cfg, store).line() == (f"ladder/{cfg.name} stopped (asked to stop before it began): "
                                                 "it resumes from its checkpoint next time")
    assert runner.InlineExecutor().submit(cfg, store, stop_at=time.time() - 1).result().checkpointed
    # another process is training it now: the checkpoint is that process's, and the line says so
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "checkpoints" / f"{cfg.key}.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        held = runner.run_one(cfg, store)
        assert held.status == "locked" and held.line() == f"ladder/{cfg.name} skipped: another process is training it"
    finally:
        holder.kill()
        holder.wait()
    assert runner.run_one(cfg, store).checkpointed  # its holder gone, the lock file left behind is free


def test_the_first_progress_line_comes_once_a_run_has_checkpointed_not_an_interval_later(tmp_path, monkeypatch):
    """The runs checkpoint (and so say how far they are) a little after PROGRESS_SECONDS: the sweep's
    look at PROGRESS_SECONDS finds nothing, and must look again soon, not PROGRESS_SECONDS later."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from scaling_lib import runner

    clock = [0.0]
    interval = runner.PROGRESS_SECONDS
    checkpoint_at, done_at = interval + 20, 4 * interval
    cfgs = configs("ladder", "smoke", Store(tmp_path))[:2]
    futures = []

    class Pending:  # runs that land at done_at, by the fake clock
        def submit(self, cfg, store, stop_at):
            futures.append((Future(), cfg))
            return futures[-1][0]

        def shutdown(self):
            pass

    def wait(pending, timeout, return_when):
        clock[0] += timeout
        if clock[0] >= done_at:
            for fut, cfg in futures:
                if not fut.done():
                    fut.set_result(runner.RunResult(cfg.key, cfg.sweep, cfg.name, "stored", path="there"))
        done = {f for f in pending if f.done()}
        return done, pending - done

    monkeypatch.setattr(runner, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(runner, "wait", wait)
    monkeypatch.setattr(runner, "progress_line", lambda cfgs, since=None, owner=None: "ladder/x 50%" if clock[0] >= checkpoint_at else "")
    lines = []
    results = runner.run_all(cfgs, Store(tmp_path), Pending(), report=lambda line: lines.append((clock[0], line)))
    assert [r.status for r in results] == ["stored", "stored"]
    at = [t for t, line in lines if line.startswith("[sweep] under way")]
    assert checkpoint_at <= at[0] <= checkpoint_at + runner.PROGRESS_RETRY_SECONDS + 1  # not at 2 x interval
    assert len(at) == 3 and all(b - a >= interval for a, b in zip(at, at[1:]))  # then once an interval


def test_finished_or_why_says_why_a_chapter_has_nothing_to_show(tmp_path, monkeypatch):
    from scaling_lib import sweep as sweep_mod
    from scaling_lib.plans import MissingRule

    def waits(*a, **k):
        raise MissingRule("no rule filed")

    monkeypatch.setattr(sweep_mod, "load_sweep", waits)
    recs, missing, why = sweep_mod.finished_or_why("batch", "book")
    assert recs == [] and "waits for the fitted learning-rate rule" in why
    monkeypatch.setattr(sweep_mod, "load_sweep", lambda *a, **k: ([{"status": "diverged"}, {"status": "ok"}], ["c"]))
    recs, missing, why = sweep_mod.finished_or_why("batch", "book")
    assert recs == [{"status": "ok"}] and missing == ["c"] and why == ""
    monkeypatch.setattr(sweep_mod, "load_sweep", lambda *a, **k: ([], ["c", "d"]))
    assert "2 planned" in sweep_mod.finished_or_why("batch", "book")[2]


def test_the_finished_statuses_are_written_once():
    """`store.FINISHED` is the one copy (`sweep` re-exports it for the chapters): no module or chapter spells the
    statuses out again."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spelled = re.compile(r"""\(\s*["']ok["']\s*,\s*["']early_stopped["']""")
    files = [*(root / "scaling_lib").glob("*.py"), *(root / "notebooks").glob("*.md")]
    assert len(files) > 20
    copies = [f.relative_to(root).as_posix() for f in files if spelled.search(f.read_text())]
    assert copies == ["scaling_lib/store.py"]


def test_the_inline_executor_trains_off_the_callers_thread_one_run_after_another(tmp_path, monkeypatch):
    import threading

    from scaling_lib import runner

    started, release, order = threading.Event(), threading.Event(), []

    def fake_run_one(cfg, store, threads=None, stop_at=None):
        order.append(cfg.key)
        started.set()
        release.wait(10)
        return runner.RunResult(cfg.key, cfg.sweep, cfg.name, "stored", path="there")

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    store = Store(tmp_path)
    cfgs = configs("ladder", "smoke", store)[:2]
    ex = runner.InlineExecutor(1)
    futures = [ex.submit(c, store, None) for c in cfgs]
    assert started.wait(10) and not futures[0].done()  # the caller is free to report while the run trains
    assert order == [cfgs[0].key]  # the second waits for the first
    release.set()
    assert [f.result(10).key for f in futures] == [c.key for c in cfgs] == order
    ex.shutdown()
