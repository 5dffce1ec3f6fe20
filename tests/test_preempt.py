"""Preemption and faults: SIGTERM mid-run checkpoints and stops cleanly, and the resumed run has the
uninterrupted curve; a sweep sent SIGTERM stops its workers' runs and exits 0; a run that raises
leaves a failed record, which a retry replaces.

The signal is sent at a given training step (by the process to itself, or, for the sweep, once every
worker has reached that step and waits for it), never after a delay, so the tests are deterministic.
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
import torch

from scaling_lib import preempt
from scaling_lib import train as train_mod
from scaling_lib.runner import InlineExecutor, run_all, run_one
from scaling_lib.store import Store

import train_patch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

REPO = Path(__file__).resolve().parents[1]

# Sends this process SIGTERM as it begins training step K (argv: config JSON, checkpoint folder, K);
# exits 0 if train() stopped cleanly with RunStopped, 3 if the run finished regardless.
SELF_TERM = """
import json, os, signal, sys
from scaling_lib import train as T
from scaling_lib.config import RunConfig
cfg, folder, at = RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], int(sys.argv[3])
real, calls = T._train_step, [0]
def step(*a, **kw):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs now, in the middle of the step
    return real(*a, **kw)
T._train_step = step
try:
    T.train(cfg, progress=False, checkpoint_dir=folder)
except T.RunStopped as e:
    print("STOPPED", e)
    sys.exit(0)
sys.exit(3)
"""


@pytest.fixture(autouse=True)
def no_request():
    preempt.clear()
    yield
    preempt.clear()


def child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, SCALING_LIB_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_sigterm_mid_run_checkpoints_exits_cleanly_and_resumes_to_the_same_curve(tiny_cfg, tmp_path, linked_cache):
    cfg = tiny_cfg(tokens=5_120, schedule="wsd", budgets=(2_560,))  # 40 steps, a branch of 20 from step 16
    reference = train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path / "ref")
    folder = tmp_path / "ckpt"
    # call 25: 16 main steps, 4 of the branch, then main steps 16..19; SIGTERM during the next, which completes
    r = subprocess.run([sys.executable, "-c", SELF_TERM, json.dumps(cfg.to_dict()), str(folder), "25"],
                       cwd=REPO, env=child_env(linked_cache), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "stopped by SIGTERM at step 21 of 40" in r.stdout, r.stdout  # the step under way was finished
    ckpt = torch.load(folder / f"{cfg.key}.pt", weights_only=False)  # not the 5-minute one: written at once
    assert ckpt["state"]["step"] == 21 and [b["tokens"] for b in ckpt["state"]["budgets"]] == [2_560]
    assert not (folder / f"{cfg.key}.lock").exists()

    rec = train_mod.train(cfg, progress=False, checkpoint_dir=folder)
    assert rec["status"] == "ok" and rec["steps"] == cfg.steps
    assert [p["step"] for p in rec["curve"]] == [p["step"] for p in reference["curve"]]
    for key in ("val_loss", "train_loss"):
        assert [p[key] for p in rec["curve"][1:]] == pytest.approx([p[key] for p in reference["curve"][1:]], rel=1e-6)
    assert [b["val_loss"] for b in rec["budgets"]] == pytest.approx([b["val_loss"] for b in reference["budgets"]],
                                                                     rel=1e-6)
    assert not list(folder.iterdir())


def test_a_run_that_raises_leaves_a_failed_record_that_a_retry_replaces(tiny_cfg, tmp_path, linked_cache,
                                                                        monkeypatch):
    cfg, other = tiny_cfg(tokens=1_024), tiny_cfg(tokens=1_024, seed=1)
    store = Store(tmp_path / "runs")
    real = train_mod._train_step

    def crash(*a, **kw):
        raise RuntimeError("injected fault: the node lost its disk")

    monkeypatch.setattr(train_mod, "_train_step", crash)
    res = run_one(cfg, store)
    res2 = run_one(cfg, store)  # tried again, failed again
    assert res.status == res2.status == "failed" and "injected fault" in res.error
    failed = store.failure(cfg)
    assert failed["status"] == "failed" and failed["key"] == cfg.key and failed["attempts"] == 2
    assert "RuntimeError: injected fault" in failed["error"] and "crash" in failed["traceback"]
    assert res.path == str(store.failure_path(cfg))
    assert not store.has(cfg) and store.paths() == [] and store.records() == []  # not a record: it counts as missing
    assert [f["key"] for f in store.failures()] == [cfg.key]

    monkeypatch.setattr(train_mod, "_train_step", real)
    results = run_all([cfg, other], store, InlineExecutor(1), report=lambda *a: None)  # the retry
    assert [r.status for r in results] == ["trained", "trained"]
    assert store.load(cfg)["status"] == "ok" and store.failure(cfg) is None and store.failures() == []
    assert [r.status for r in run_all([cfg], store, InlineExecutor(1), report=lambda *a: None)] == ["stored"]


# The sweep's processes run this (tests/train_patch.py: with a smaller final evaluation): each run, at its
# step TEST_HOLD_STEP, says so in TEST_HOLD_DIR and waits (60 s at most) until its process has been asked to
# stop, or, with TEST_HOLD_UNTIL=release, until the file "release" is there: the test sends its signal once
# every worker is there.
PATCH = """
import os, time
from pathlib import Path


def patch(module):
    real, calls = module._train_step, [0]
    folder, at = Path(os.environ["TEST_HOLD_DIR"]), int(os.environ["TEST_HOLD_STEP"])
    by_file = os.environ.get("TEST_HOLD_UNTIL") == "release"

    def released():
        from scaling_lib import preempt
        return (folder / "release").exists() if by_file else preempt.requested() is not None

    def held(*a, **kw):
        calls[0] += 1
        if calls[0] == at:
            (folder / f"{os.getpid()}.at").touch()
            t = time.monotonic()
            while not released() and time.monotonic() - t < 60:
                time.sleep(0.05)
        return real(*a, **kw)

    module._train_step = held
"""


# four runs for two workers: two train, two wait in the pool's queue (where cancel() cannot reach them, and a
# fresh worker would take them) and must not start once the sweep is asked to stop or to drain
HELD_OVERRIDES = dict(shapes=tuple({"n_layer": 1, "d_model": d} for d in (8, 12, 16, 20)), shape_tokens=8_192,
                      shape_lr_tuned=())


class HeldSweep:
    """`sweep shape --workers 2` on the four runs of HELD_OVERRIDES in a subprocess, its runs held at step 5
    (PATCH; `hold_env` adds to its environment)."""

    def __init__(self, tmp_path: Path, linked_cache: Path, **hold_env: str):
        self.runs, self.hold, self.log = tmp_path / "runs", tmp_path / "hold", tmp_path / "sweep.log"
        self.hold.mkdir()
        self.env = train_patch.child_env(tmp_path / "site", linked_cache, self.runs, patch=PATCH,
                                         TEST_HOLD_DIR=str(self.hold), TEST_HOLD_STEP="5", **hold_env)
        sets = [a for k, v in HELD_OVERRIDES.items() for a in ("--set", f"{k}={v!r}")]
        self.cmd = [sys.executable, "-m", "scaling_lib", "sweep", "shape", "--profile", "smoke", *sets,
                    "--workers", "2"]
        with open(self.log, "w") as f:
            self.p = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def fail(self, what: str) -> None:
        os.killpg(self.p.pid, signal.SIGKILL)
        pytest.fail(f"{what}:\n{self.text()[-3000:]}")

    def until(self, done, what: str, timeout: float = 180) -> None:
        t = time.monotonic()
        while not done():
            if self.p.poll() is not None or time.monotonic() - t > timeout:
                self.fail(what)
            time.sleep(0.1)

    def held(self) -> int:
        return len(list(self.hold.glob("*.at")))

    def wait(self, what: str, timeout: float = 180) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(what)


def test_a_sweep_sent_sigterm_stops_its_workers_runs_and_exits_0_then_resumes(tmp_path, tiny_corpus, linked_cache):
    from scaling_lib.sweep import configs

    sw = HeldSweep(tmp_path, linked_cache)
    sw.until(lambda: sw.held() == 2, "the workers did not both reach step 5")
    sw.p.send_signal(signal.SIGTERM)  # to the sweep alone, as `kill PID` would: it passes it on to its workers
    assert sw.wait("the sweep did not stop on SIGTERM", timeout=120) == 0, sw.text()[-3000:]
    cfgs = configs("shape", "smoke", Store(sw.runs), HELD_OVERRIDES)
    ckpts = Path(linked_cache) / "checkpoints"
    held = [c for c in cfgs if (ckpts / f"{c.key}.pt").exists()]
    assert len(held) == 2, sw.text()[-3000:]
    for c in held:
        assert torch.load(ckpts / f"{c.key}.pt", weights_only=False)["state"]["step"] == 5, c.name
    assert Store(sw.runs).paths() == [] and Store(sw.runs).failures() == []
    text = sw.text()
    assert text.count("stopped (") == 4 and text.count("asked to stop before it began") == 2, text[-3000:]
    assert text.count("run(s) to train") == 1, text[-3000:]  # no second round after the stop

    env = dict(sw.env, TEST_HOLD_STEP="0")  # no hold: the same command finishes both runs from their checkpoints
    r = subprocess.run(sw.cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert {rec["key"] for rec in Store(sw.runs).records()} == {c.key for c in cfgs}
    assert all(rec["status"] == "ok" for rec in Store(sw.runs).records())
    assert not list(ckpts.glob("*.pt"))


def test_a_sweep_sent_sigusr1_lets_its_runs_finish_starts_nothing_more_and_exits_0(tmp_path, tiny_corpus,
                                                                                   linked_cache):
    from scaling_lib.sweep import configs

    sw = HeldSweep(tmp_path, linked_cache, TEST_HOLD_UNTIL="release")
    sw.until(lambda: sw.held() == 2, "the workers did not both reach step 5")
    sw.p.send_signal(signal.SIGUSR1)  # to the sweep alone
    sw.until(lambda: "asked to drain" in sw.text(), "the sweep did not take in the drain")
    (sw.hold / "release").touch()
    assert sw.wait("the sweep did not end after the drain") == 0, sw.text()[-3000:]
    text = sw.text()
    stored = Store(sw.runs).records()
    assert len(stored) == 2 and all(r["status"] == "ok" for r in stored), text[-3000:]  # the two under way finished
    assert sw.held() == 2, text[-3000:]  # and no other run began
    assert text.count("asked to stop before it began") == 2 and "drained" in text, text[-3000:]
    assert text.count("run(s) to train") == 1, text[-3000:]  # no second round after the drain
    assert not list((Path(linked_cache) / "checkpoints").glob("*.pt"))
    assert {r["key"] for r in stored} < {c.key for c in configs("shape", "smoke", Store(sw.runs), HELD_OVERRIDES)}


def test_a_drain_cancels_the_runs_not_begun_and_tells_the_executor(tmp_path):
    """In the loop itself: once the drain is noted, the futures not begun are cancelled, the executor is told
    (it starts nothing that reaches a worker), and the run under way is waited for, not stopped."""
    from concurrent.futures import Future

    from scaling_lib.config import RunConfig
    from scaling_lib.runner import RunResult

    class Held:
        def __init__(self):
            self.futures, self.drained, self.stopped = [], False, False

        def submit(self, cfg, store, stop_at):
            self.futures.append(Future())
            if len(self.futures) == 1:
                self.futures[0].set_running_or_notify_cancel()  # the run under way
            return self.futures[-1]

        def drain(self):
            self.drained = True
            c = cfgs[0]  # the run under way finishes
            self.futures[0].set_result(RunResult(key=c.key, sweep=c.sweep, name=c.name, status="trained",
                                                  run_status="ok", val_loss=4.0))

        def stop(self):
            self.stopped = True

        def shutdown(self):
            pass

    cfgs = [RunConfig(n_layer=1, d_model=8, seed=s) for s in (0, 1, 2)]
    ex = Held()
    preempt.request_drain()
    results = run_all(cfgs, Store(tmp_path), ex, report=lambda m: None)
    assert ex.drained and not ex.stopped and preempt.requested() is None
    assert sorted(r.status for r in results) == ["stopped", "stopped", "trained"]
    assert all(f.cancelled() for f in ex.futures[1:])


def test_ctrl_c_in_a_sweep_notes_a_stop_request_and_stops_the_executor(tmp_path, monkeypatch):
    """A KeyboardInterrupt in the main thread, while the runs train elsewhere (a thread of the inline
    executor, a pool's workers): the request is noted for the runs to read after their step, the runs not
    begun are cancelled, the executor is told to stop, and the interrupt goes on to the caller."""
    from concurrent.futures import Future

    from scaling_lib import runner
    from scaling_lib.config import RunConfig

    class Never:
        def __init__(self):
            self.futures, self.stopped = [], False

        def submit(self, cfg, store, stop_at):
            self.futures.append(Future())
            return self.futures[-1]

        def stop(self):
            self.stopped = True

        def shutdown(self):
            pass

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "wait", interrupt)
    ex = Never()
    cfgs = [RunConfig(n_layer=1, d_model=8, seed=s) for s in (0, 1)]
    with pytest.raises(KeyboardInterrupt):
        run_all(cfgs, Store(tmp_path), ex, report=lambda m: None)
    assert preempt.requested() == signal.SIGINT
    assert ex.stopped and all(f.cancelled() for f in ex.futures)
