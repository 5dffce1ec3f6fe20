"""A sweep through submitit, tried with submitit's own local executor (`--executor submitit --cluster
local`): each run is one job named by its config's key; the records land in the store; a run that
fails leaves a failed record, and the same command, submitted again, submits only what the store
lacks: the failed run (which then lands), not the stored one.

The sweep is the smoke profile's `shape` sweep cut to two tiny shapes (--set). The processes of
the test (the sweep and every job) import a `sitecustomize` of their own: a smaller final evaluation
(train.FINAL_EVAL_TOKENS, as in test_sweep_robustness.py), and, with TEST_FAIL_ONCE=folder:key, a
train() that raises the first time it is asked for that run (a marker file in the folder remembers,
across processes, that it has failed once); with TEST_HOLD=folder, a train() that waits for a file.
A sweep sent SIGTERM stops waiting for its jobs and exits; the jobs run on and file their records.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling_lib.store import Store
from scaling_lib.sweep import configs
from train_patch import REPO, child_env

pytestmark = pytest.mark.slow

OVERRIDES = dict(shapes=({"n_layer": 1, "d_model": 8}, {"n_layer": 1, "d_model": 12}), shape_tokens=4096,
                 shape_lr_tuned=())

PATCH = """
import functools, os
from pathlib import Path


def _held(train, folder):
    # TEST_HOLD=folder: train() says it has begun (folder/entered-<key>) and waits for folder/release
    import time

    @functools.wraps(train)
    def wrapped(cfg, *args, **kwargs):
        (Path(folder) / f"entered-{cfg.key}").touch()
        t = time.monotonic()
        while not (Path(folder) / "release").exists() and time.monotonic() - t < 120:
            time.sleep(0.05)
        return train(cfg, *args, **kwargs)

    return wrapped


def _fail_once(train, folder, key):
    @functools.wraps(train)
    def wrapped(cfg, *args, **kwargs):
        marker = Path(folder) / f"{cfg.key}.failed-once"
        if cfg.key == key and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            raise RuntimeError(f"injected fault in {cfg.key}: the node lost its disk")
        return train(cfg, *args, **kwargs)

    return wrapped



def patch(module):
    if os.environ.get("TEST_FAIL_ONCE"):
        module.train = _fail_once(module.train, *os.environ["TEST_FAIL_ONCE"].split(":"))
    if os.environ.get("TEST_HOLD"):
        module.train = _held(module.train, os.environ["TEST_HOLD"])
"""


def sweep_cmd(folder: Path, overrides: dict = OVERRIDES) -> list[str]:
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v!r}")]
    return [sys.executable, "-m", "scaling_lib", "sweep", "shape", "--profile", "smoke", *sets,
            "--executor", "submitit", "--cluster", "local", "--cluster-folder", str(folder), "--time", "5"]


def job_result(folder: Path, key: str) -> tuple[str, object]:
    """The job a run was last submitted as (folder/keys/<key>), and what submitit filed as its outcome."""
    job_id = (folder / "keys" / key).read_text().strip()
    with open(folder / job_id / f"{job_id}_0_result.pkl", "rb") as f:
        return job_id, pickle.load(f)


def env_for(tmp_path: Path, cache: Path, runs: Path, **extra: str) -> dict[str, str]:
    return child_env(tmp_path / "site", cache, runs, patch=PATCH, **extra)


def test_a_sweep_of_submitit_jobs_files_records_and_a_resubmission_retries_only_the_failed_run(
        tmp_path, tiny_corpus, linked_cache):
    runs, folder = tmp_path / "runs", tmp_path / "submitit"
    store = Store(runs)
    good, bad = configs("shape", "smoke", store, OVERRIDES)
    env = env_for(tmp_path, linked_cache, runs, TEST_FAIL_ONCE=f"{tmp_path / 'faults'}:{bad.key}")

    first = subprocess.run(sweep_cmd(folder), cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    # one job a run, each named by its run's key: the good one trained and filed, the bad one failed
    good_job, (outcome, res) = job_result(folder, good.key)
    assert outcome == "success" and (res.key, res.status) == (good.key, "trained"), (outcome, res)
    bad_job, (outcome, res) = job_result(folder, bad.key)
    assert outcome == "success" and (res.key, res.status) == (bad.key, "failed") and "injected fault" in res.error
    assert good_job != bad_job
    assert store.has(good) and not store.has(bad)
    assert store.load(good)["status"] == "ok" and store.load(good)["final"]["val_loss"] > 0
    assert [f["key"] for f in store.failures("shape")] == [bad.key]
    assert "1 run(s) failed" in first.stderr, out[-3000:]
    jobs_before = {p.name for p in folder.iterdir() if p.name.isdigit()}
    assert len(jobs_before) == 2, jobs_before
    good_bytes = store.path(good).read_bytes()

    again = subprocess.run(sweep_cmd(folder), cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "1 run(s) to train" in again.stdout, again.stdout[-3000:]
    # only the failed run was submitted again, as a new job, and it landed; the stored one was left alone
    jobs_after = {p.name for p in folder.iterdir() if p.name.isdigit()}
    assert len(jobs_after - jobs_before) == 1, (jobs_before, jobs_after)
    assert job_result(folder, good.key)[0] == good_job
    retry_job, (outcome, res) = job_result(folder, bad.key)
    assert retry_job in jobs_after - jobs_before and outcome == "success" and res.status == "trained", res
    assert store.has(bad) and store.load(bad)["status"] == "ok"
    assert store.failures("shape") == [] and store.path(good).read_bytes() == good_bytes
    assert not list((linked_cache / "checkpoints").glob("*.pt")), "a finished run left its checkpoint"


def test_a_sweep_sent_sigterm_stops_waiting_and_exits_while_its_job_runs_on_and_files_its_record(
        tmp_path, tiny_corpus, linked_cache):
    runs, folder, hold = tmp_path / "runs", tmp_path / "submitit", tmp_path / "hold"
    hold.mkdir()
    one = dict(OVERRIDES, shapes=OVERRIDES["shapes"][:1])
    (cfg,) = configs("shape", "smoke", Store(runs), one)
    env = env_for(tmp_path, linked_cache, runs, TEST_HOLD=str(hold))
    log = tmp_path / "sweep.log"
    with open(log, "w") as f:
        p = subprocess.Popen(sweep_cmd(folder, one), cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        t = time.monotonic()
        while not (hold / f"entered-{cfg.key}").exists():  # the job has begun its run
            assert p.poll() is None and time.monotonic() - t < 120, log.read_text()[-3000:]
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)  # to the sweep alone, as `kill PID` on a login node
        assert p.wait(timeout=60) == 0, log.read_text()[-3000:]
        job_id = (folder / "keys" / cfg.key).read_text().strip()
        assert f"job {job_id} runs on" in log.read_text(), log.read_text()[-3000:]
        assert not Store(runs).has(cfg)
        (hold / "release").touch()  # the job, which outlived the sweep, trains and files its record
        t = time.monotonic()
        while not Store(runs).has(cfg):
            assert time.monotonic() - t < 120, "the job did not file its record after the sweep stopped"
            time.sleep(0.2)
        assert Store(runs).load(cfg)["status"] == "ok"
    finally:
        (hold / "release").touch()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


def test_a_slurm_sweep_where_there_is_no_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    from scaling_lib.sweep import make_executor

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on this PATH
    with pytest.raises(RuntimeError, match="no sbatch on this machine.*--cluster local"):
        make_executor("submitit", cluster="slurm", folder=tmp_path / "submitit")
    with pytest.raises(ValueError, match="cluster must be one of"):
        make_executor("submitit", cluster="lsf", folder=tmp_path / "submitit")
    with pytest.raises(ValueError, match="need --executor submitit"):
        make_executor("local", partition="gpu")
