"""Packing runs into a few long-lived processes (`sweep --runs-per-worker`): the local pool's workers
take the runs in turn, a fresh process a run by default, or each worker for the whole sweep.

The sweep test runs the smoke `shape` sweep cut to three tiny shapes through two workers that are
never replaced; a `sitecustomize` (tests/train_patch.py) cuts the final
evaluation and, with TEST_TRAIN_PIDS=folder, notes in the folder which process entered train() for
which run.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scaling_lib.runner import LocalExecutor
from scaling_lib.sweep import make_executor
from scaling_lib.store import Store
from scaling_lib.sweep import configs
from train_patch import REPO, child_env
OVERRIDES = dict(shapes=tuple({"n_layer": 1, "d_model": d} for d in (8, 12, 16)), shape_tokens=4096,
                 shape_lr_tuned=())

# each run notes the process that trains it (TEST_TRAIN_PIDS/<pid>-<key>)
PATCH = """
import functools, os
from pathlib import Path


def patch(module):
    folder, train = os.environ.get("TEST_TRAIN_PIDS"), module.train

    @functools.wraps(train)
    def noted(cfg, *args, **kwargs):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"{os.getpid()}-{cfg.key}").touch()
        return train(cfg, *args, **kwargs)

    module.train = noted
"""


@pytest.mark.parametrize("runs_per_worker, processes", [(1, 4), (2, 2), (0, 2)])
def test_the_pool_replaces_a_worker_after_runs_per_worker_runs(runs_per_worker, processes):
    ex = LocalExecutor(2, 1, runs_per_worker)
    try:
        pids = {f.result(timeout=120) for f in [ex.pool.submit(os.getpid) for _ in range(4)]}
    finally:
        ex.shutdown()
    # with two workers, replaced after every run: four processes; after two runs or never: at most two
    if runs_per_worker == 1:
        assert len(pids) == processes, pids
    else:
        assert 1 <= len(pids) <= processes, pids
    assert os.getpid() not in pids


def test_bad_pool_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="runs_per_worker at least 0"):
        make_executor("local", workers=2, runs_per_worker=-1)
    with pytest.raises(ValueError, match="workers and threads must be at least 1"):
        LocalExecutor(0)


@pytest.mark.slow
def test_a_sweep_packed_into_two_long_lived_workers_trains_every_run_in_them(tmp_path, tiny_corpus, linked_cache):
    runs, pids = tmp_path / "runs", tmp_path / "pids"
    env = child_env(tmp_path / "site", linked_cache, runs, patch=PATCH, TEST_TRAIN_PIDS=str(pids))
    sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v!r}")]
    cmd = [sys.executable, "-m", "scaling_lib", "sweep", "shape", "--profile", "smoke", *sets, "--workers", "2",
           "--runs-per-worker", "0"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "2 worker(s) x 1 thread(s), each for the whole sweep" in r.stdout, r.stdout[-2000:]
    cfgs = configs("shape", "smoke", Store(runs), OVERRIDES)
    assert len(cfgs) == 3
    assert {rec["key"] for rec in Store(runs).records()} == {c.key for c in cfgs}
    entered = [p.name.split("-") for p in pids.iterdir()]
    assert sorted(key for _, key in entered) == sorted(c.key for c in cfgs)  # each run entered once
    by_pid = {pid for pid, _ in entered}
    assert len(by_pid) <= 2 < len(entered), f"three runs, not packed into two processes: {entered}"

    # --runs-per-worker is the local pool's: a clear error with another executor
    r = subprocess.run([*cmd, "--executor", "inline"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--runs-per-worker is the local pool's" in r.stderr, r.stderr[-2000:]


def test_a_run_that_reaches_a_fresh_worker_after_stop_does_not_start(tmp_path):
    # the pool replaces a stopped worker and hands it what was queued: the stop must reach it too
    from scaling_lib.config import RunConfig

    ex = LocalExecutor(1, 1, 1)
    try:
        ex.stop()
        cfg = RunConfig(sweep="shape", n_layer=1, d_model=8, tokens=4096, corpus="tiny")
        res = ex.submit(cfg, Store(tmp_path), None).result(timeout=120)
    finally:
        ex.shutdown()
    assert res.status == "stopped" and res.error == "asked to stop before it began"
    assert Store(tmp_path).paths() == [] and not ex._stop_file.parent.exists()
