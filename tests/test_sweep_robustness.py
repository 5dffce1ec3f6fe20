"""What users of `python -m scaling_lib sweep` rely on, tried through the command line: a sweep
killed with SIGKILL resumes and loses nothing; two sweeps on one store and one empty cache; a pool
of two workers; a deadline that falls while runs are under way.

Each sweep is the smoke profile's `shape` sweep cut to two tiny shapes (--set). What a smoke run
spends most of its time on is its final evaluation (the whole validation and test splits and 262k
tokens of Brown); these tests are about the runner, not the evaluation, so their processes (the
sweep and its spawned workers alike) cut `train.FINAL_EVAL_TOKENS` to 8k tokens through a
`sitecustomize` of their own, and a run takes a few seconds. The assertions are on the store (every
record complete, none lost, none half-written) and on exit codes, not on the wording of the log.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling_lib.config import RunConfig
from scaling_lib.store import Store, load_record
from scaling_lib.sweep import configs
from train_patch import REPO, child_env

pytestmark = pytest.mark.slow

SHAPES = ({"n_layer": 1, "d_model": 8}, {"n_layer": 1, "d_model": 12})
OVERRIDES = dict(shapes=SHAPES, shape_tokens=4096)


# Run on scaling_lib.train in every process of these tests (tests/train_patch.py, which also gives
# the runs a smaller final evaluation).
PATCH = """
import functools, os, time
from pathlib import Path


def _barrier(train, folder, parties, timeout=90):
    # TEST_TRAIN_BARRIER=folder:parties: a process entering train() waits until `parties` processes
    # have entered it, and writes down whether they all did (met) or it gave up (timeout)
    folder, parties = Path(folder), int(parties)

    @functools.wraps(train)
    def wrapped(*args, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}.in").touch()
        t = time.monotonic()
        while len(list(folder.glob("*.in"))) < parties and time.monotonic() - t < timeout:
            time.sleep(0.05)
        met = len(list(folder.glob("*.in"))) >= parties
        (folder / f"{os.getpid()}.{'met' if met else 'timeout'}").touch()
        return train(*args, **kwargs)

    return wrapped


def patch(module):
    if os.environ.get("TEST_TRAIN_BARRIER"):
        module.train = _barrier(module.train, *os.environ["TEST_TRAIN_BARRIER"].split(":"))
"""


def expected(root: Path, overrides: dict = OVERRIDES) -> list[RunConfig]:
    """The configs of the cut sweep (what the store must end up holding)."""
    return configs("shape", "smoke", Store(root), overrides)


def env_for(cache: Path, runs: Path) -> dict[str, str]:
    return child_env(runs.parent / "site", cache, runs, patch=PATCH, RAYON_NUM_THREADS="1")


def start_sweep(env: dict[str, str], *extra: str, log: Path, overrides: dict = OVERRIDES) -> subprocess.Popen:
    """`python -m scaling_lib sweep shape --profile smoke` (cut), in its own process group, logging to a file."""
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v!r}")]
    f = open(log, "a")
    try:
        return subprocess.Popen([sys.executable, "-m", "scaling_lib", "sweep", "shape", "--profile", "smoke", *sets,
                                 *extra], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        f.close()


def finish(p: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f"the sweep did not finish in {timeout:.0f}s:\n{log.read_text()[-3000:]}")
    assert rc == 0, f"the sweep exited with {rc}:\n{log.read_text()[-3000:]}"


def check_store(root: Path) -> dict[str, dict]:
    """Every JSON file under the store parses; the records (not the .tmp- leftovers of a killed
    save) are complete and each matches its config. Returns them by key."""
    for p in root.rglob("*.json"):
        if p.name.startswith("."):
            continue  # a temporary file of an interrupted save: never a record
        json.loads(p.read_text())  # raises if half-written
    records = {}
    for p in Store(root).paths():
        rec = load_record(p)
        assert rec["key"] == RunConfig.from_dict(rec["config"]).key, p
        assert rec["status"] == "ok" and rec["final"]["val_loss"] > 0 and rec["curve"], p
        assert p.name == f"{rec['name']}-{rec['key']}.json", p
        records[rec["key"]] = rec
    return records


def wait_for(cond, timeout: float, what: str, p: subprocess.Popen, log: Path) -> None:
    t = time.monotonic()
    while not cond():
        if p.poll() is not None:
            pytest.fail(f"the sweep exited ({p.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - t > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"waited {timeout:.0f}s for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def env(tmp_path, tiny_corpus, linked_cache):
    """A private store, and a private cache whose corpora are the real ones (the tiny corpus built)."""
    return env_for(linked_cache, tmp_path / "runs")


def test_a_sweep_killed_mid_run_resumes_and_loses_nothing(tmp_path, env):
    runs = Path(env["SCALING_LIB_RUNS"])
    cfgs = expected(runs)
    assert len(cfgs) == 2
    first, second = cfgs
    lock = Path(env["SCALING_LIB_CACHE"]) / "checkpoints" / f"{second.key}.lock"
    log = tmp_path / "sweep.log"
    p = start_sweep(env, "--workers", "1", log=log)
    # the first run stored, the second under way (it holds its checkpoint lock): then SIGKILL
    wait_for(lambda: Store(runs).has(first) and lock.exists(), 180, "the second run to start", p, log)
    os.killpg(p.pid, signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL
    stored = check_store(runs)
    assert set(stored) == {first.key}, "a run killed mid-way left a record, or the finished one was lost"
    first_bytes = Store(runs).path(first).read_bytes()

    finish(start_sweep(env, "--workers", "1", log=log), log)
    stored = check_store(runs)
    assert set(stored) == {c.key for c in cfgs}
    assert Store(runs).path(first).read_bytes() == first_bytes, "the resumed sweep retrained a stored run"
    assert [p.name for p in runs.rglob(".tmp-*")] == []


def test_two_sweeps_at_once_on_one_store_and_one_empty_cache(tmp_path):
    cache, runs = tmp_path / "empty-cache", tmp_path / "runs"
    cache.mkdir()
    env = env_for(cache, runs)
    logs = [tmp_path / "sweep-a.log", tmp_path / "sweep-b.log"]
    procs = [start_sweep(env, "--workers", "1", log=log) for log in logs]
    for p, log in zip(procs, logs):
        finish(p, log, timeout=420)
    # every run was trained by one of them (a run the other held, it skipped or reported failed)
    stored = check_store(runs)
    assert set(stored) == {c.key for c in expected(runs)}, (logs[0].read_text()[-2000:], logs[1].read_text()[-2000:])
    # the corpus was built once, completely, by one of them
    corpus = cache / "corpora" / "tiny" / "bpe4096"
    manifest = json.loads((corpus / "manifest.json").read_text())
    for split, meta in manifest["files"].items():
        assert (corpus / f"{split}.bin").stat().st_size == 2 * meta["tokens"]
    assert [p.name for p in corpus.parent.iterdir() if p.name not in ("bpe4096", "text")] == []


def test_two_workers_train_in_parallel(tmp_path, env):
    # each worker, on entering train(), waits (90 s at most) until two processes have entered it: with
    # two workers they meet at once; run one after the other, the first gives up and says so
    runs = Path(env["SCALING_LIB_RUNS"])
    barrier = tmp_path / "barrier"
    log = tmp_path / "sweep.log"
    finish(start_sweep(dict(env, TEST_TRAIN_BARRIER=f"{barrier}:2"), "--workers", "2", log=log), log)
    stored = check_store(runs)
    assert set(stored) == {c.key for c in expected(runs)}
    entered = sorted(p.suffix for p in barrier.iterdir())
    assert entered == [".in", ".in", ".met", ".met"], f"the two runs were not under way at once: {entered}"


def test_a_deadline_during_runs_stops_the_sweep_and_the_next_call_completes(tmp_path, env):
    # runs of 40 steps: on any machine, a spawned worker is still on its run 2 s after the sweep started
    longer = dict(OVERRIDES, shape_tokens=20_480)
    runs = Path(env["SCALING_LIB_RUNS"])
    cfgs = expected(runs, longer)
    log = tmp_path / "sweep.log"
    t = time.monotonic()
    finish(start_sweep(env, "--workers", "2", "--deadline", "2", log=log, overrides=longer), log, timeout=120)
    first_call = time.monotonic() - t
    stored = check_store(runs)
    assert len(stored) < len(cfgs), f"every run finished before a 2 s deadline: {log.read_text()[-2000:]}"
    assert first_call < 60, f"the sweep took {first_call:.0f}s to stop at a 2 s deadline"
    finish(start_sweep(env, "--workers", "2", log=log, overrides=longer), log)
    stored = check_store(runs)
    assert set(stored) == {c.key for c in cfgs}
