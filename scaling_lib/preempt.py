"""Preemption: SIGTERM (what Slurm, a spot instance or `kill` sends before it kills) and SIGUSR2
(what submitit asks Slurm to send before a job's time is up) as a request to checkpoint and stop;
SIGUSR1 (`kill -USR1 PID`, by hand) as a request to drain: the runs under way finish, nothing new starts.

A handler only notes the request; the training loop reads it after each step, saves a checkpoint
and stops cleanly (train.RunStopped), so a preempted run loses at most one step. A drain is read by
the sweep alone (`runner.run_all`), never by a run. Either request stays noted for the life of the
process: a sweep that was asked to stop or to drain starts nothing new.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
DRAIN_SIGNAL = signal.SIGUSR1
_requested: int | None = None
_draining = False


def _note(signum: int, frame) -> None:
    global _requested
    if _requested is None:
        log.warning("caught %s: checkpointing and stopping", signal.Signals(signum).name)
    _requested = signum


def _note_drain(signum: int, frame) -> None:
    global _draining
    if not _draining:
        log.warning("caught %s: the runs under way finish, nothing new starts", signal.Signals(signum).name)
    _draining = True


def draining() -> bool:
    """Whether this process was asked to drain (finish what runs, start nothing more)."""
    return _draining


def request_drain() -> None:
    """Note a drain as SIGUSR1 would."""
    _note_drain(DRAIN_SIGNAL, None)


def requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _requested


def request(signum: int = signal.SIGINT) -> None:
    """Note a request to stop as a signal would: for a caller that caught Ctrl-C (KeyboardInterrupt) in the
    main thread while a run trains on another, which reads the request after its step."""
    _note(signum, None)


def clear() -> None:
    """Forget a request to stop or to drain (tests, and a process that goes on after handling one)."""
    global _requested, _draining
    _requested, _draining = None, False


def install() -> dict[int, object]:
    """Note the signals from now on, the drain signal too (main thread only; elsewhere nothing); returns the old
    handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {s: signal.signal(s, _note) for s in SIGNALS}
    old[DRAIN_SIGNAL] = signal.signal(DRAIN_SIGNAL, _note_drain)
    return old


def restore(old: dict[int, object]) -> None:
    for s, h in old.items():
        signal.signal(s, h)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """The signals noted while inside; the handlers before are restored on the way out."""
    old = install()
    try:
        yield
    finally:
        restore(old)
