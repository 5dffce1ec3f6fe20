"""Running configs into the store: one run, or many through an executor.

The runner knows nothing of which runs a chapter needs (that is `plans`) nor of how a record is
laid out (that is `store` and `train`). It trains what the store lacks and reports each run as a
`RunResult`: trained, already stored, held by another process (locked), stopped at the deadline,
or failed. An executor runs the work: `LocalExecutor`, a pool of processes on this machine,
`InlineExecutor`, this very process (what a notebook uses), or `cluster.SubmititExecutor`, one Slurm
job a run. A run that crashes leaves a failed record in the store (`Store.save_failure`), which the
next try replaces. On SIGTERM (`preempt`) the runs under way checkpoint and stop, and nothing new starts.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from . import preempt
from .config import RunConfig
from .data import being_trained, progress_path, read_progress
from .store import Store

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 300.0  # how often a sweep logs how far its runs under way are
PROGRESS_RETRY_SECONDS = 10.0  # how soon it looks again when none of them has checkpointed yet
STATUSES = ("trained", "stored", "locked", "stopped", "failed")


@dataclass(frozen=True)
class RunResult:
    """What became of one config: `status` is one of STATUSES; `run_status` is the record's own
    (ok, diverged, early_stopped) when there is a record. A stopped run has `checkpointed` when a
    checkpoint of it is on disk to resume from; one stopped before it began may have none
    (`stopped_result`)."""

    key: str
    sweep: str
    name: str
    status: str
    path: str | None = None
    run_status: str | None = None
    val_loss: float | None = None
    seconds: float = 0.0
    error: str | None = None
    checkpointed: bool = False

    @property
    def ok(self) -> bool:
        """The record is in the store (trained now or before)."""
        return self.status in ("trained", "stored")

    def line(self) -> str:
        where = f"{self.sweep}/{self.name}"
        if self.status == "trained":
            return f"{where} {self.run_status} val {self.val_loss:.4f} in {self.seconds:.0f}s -> {self.path}"
        if self.status == "stored":
            return f"{where} already stored -> {self.path}"
        if self.status == "locked":
            return f"{where} skipped: another process is training it"
        if self.status == "stopped":
            then = "it resumes from its checkpoint next time" if self.checkpointed else "it runs next time"
            return f"{where} stopped ({self.error or 'at the deadline'}): {then}"
        return f"{where} FAILED: {self.error}"


def stopped_result(cfg: RunConfig, error: str | None = None) -> RunResult:
    """A run stopped by the sweep rather than by its own checkpoint (it had not begun when the deadline
    or a stop came): "locked" if another process is training it now (the checkpoint on disk is that
    process's), else checkpointed if a checkpoint of it is on disk (from an earlier try; its progress
    file, `data.read_progress`), else it has none and starts afresh next time."""
    if being_trained(cfg.key):
        return RunResult(cfg.key, cfg.sweep, cfg.name, "locked")
    return RunResult(cfg.key, cfg.sweep, cfg.name, "stopped", error=error,
                     checkpointed=read_progress(cfg.key) is not None)


def run_one(cfg: RunConfig, store: Store, *, threads: int | None = None, stop_at: float | None = None,
            progress: bool = False) -> RunResult:
    """Train one config into the store unless it is there; never raises for a failed run (it files
    a failed record instead, which the next successful try replaces)."""
    found = store.find(cfg)
    if found is not None:
        return RunResult(cfg.key, cfg.sweep, cfg.name, "stored", path=str(found))
    if preempt.requested():  # asked to stop before this run began: it has not started
        return stopped_result(cfg, "asked to stop before it began")
    import torch

    from .train import AlreadyStored, RunLocked, RunStopped, train

    if threads:
        torch.set_num_threads(threads)
    t = time.time()
    try:
        rec = train(cfg, progress=progress, stop_at=stop_at, store=store)
        path = rec["path"]
    except AlreadyStored as e:  # filed by another process in the meantime
        return RunResult(cfg.key, cfg.sweep, cfg.name, "stored", path=str(e.path))
    except RunLocked:
        return RunResult(cfg.key, cfg.sweep, cfg.name, "locked", seconds=time.time() - t)
    except RunStopped as e:
        return RunResult(cfg.key, cfg.sweep, cfg.name, "stopped", seconds=time.time() - t, checkpointed=True,
                         error=None if stop_at and not preempt.requested() else str(e).split(": it resumes")[0])
    except Exception as e:  # a failed run is reported and filed, and the sweep goes on
        tb = traceback.format_exc()
        log.error("%s/%s failed:\n%s", cfg.sweep, cfg.name, tb)
        return _failed(cfg, store, f"{type(e).__name__}: {e}", tb, seconds=time.time() - t)
    return RunResult(cfg.key, cfg.sweep, cfg.name, "trained", path=str(path), run_status=rec["status"],
                     val_loss=rec["final"].get("val_loss", math.nan), seconds=time.time() - t)


def _failed(cfg: RunConfig, store: Store, error: str, detail: str = "", seconds: float = 0.0) -> RunResult:
    """A failed RunResult, its failure filed in the store (where a retry's record replaces it)."""
    try:
        where = str(store.save_failure(cfg, error, detail))
    except OSError as e:  # the store itself is unwritable: say so, and go on
        log.error("could not file the failure of %s/%s: %s", cfg.sweep, cfg.name, e)
        where = None
    return RunResult(cfg.key, cfg.sweep, cfg.name, "failed", path=where, seconds=seconds, error=error)


def get_or_train(cfg: RunConfig, store: Store | None = None, *, train_missing: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    """The stored record of a config; trained and stored first if missing and allowed."""
    store = store or Store()
    rec = store.load(cfg)
    if rec is not None:
        return rec
    if not train_missing:
        raise LookupError(f"run {cfg.name} ({cfg.key}) is not in {store.root}/{cfg.sweep} and training is off "
                          "(profile 'book'): run its sweep first, or use a profile that trains")
    result = run_one(cfg, store, progress=progress)
    if not result.ok:
        raise RuntimeError(result.line())
    return store.load(cfg)


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------
class Executor(Protocol):
    """Runs configs into a store, each to a RunResult; `stop_at` is when runs under way checkpoint and stop."""

    def submit(self, cfg: RunConfig, store: Store, stop_at: float | None) -> Future: ...

    def shutdown(self) -> None: ...


class InlineExecutor:
    """Each run in this process, one after the other in the order submitted, on one background thread,
    so that the caller can report progress while a run trains (a SIGTERM still reaches the run: the
    main thread's handler notes it, and the training loop reads it)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.local = True  # its runs train in this process: `progress_line` tells them by its pid
        self.description = f"this process x {threads or 'all'} thread(s)"
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="scaling_lib-run")

    def _run(self, cfg: RunConfig, store: Store, stop_at: float | None) -> RunResult:
        if stop_at is not None and time.time() > stop_at:
            return stopped_result(cfg)
        return run_one(cfg, store, threads=self.threads, stop_at=stop_at)

    def submit(self, cfg: RunConfig, store: Store, stop_at: float | None) -> Future:
        return self._thread.submit(self._run, cfg, store, stop_at)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


def _run_in_worker(cfg_dict: dict, root: str, threads: int, stop_at: float | None,
                   stop_file: str | None = None) -> RunResult:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    preempt.install()  # a SIGTERM before training begins stops the run, not the worker
    cfg = RunConfig.from_dict(cfg_dict)
    if stop_at is not None and time.time() > stop_at:
        return stopped_result(cfg)
    if stop_file is not None and os.path.exists(stop_file):  # the pool was stopped before this run reached a worker
        return stopped_result(cfg, "asked to stop before it began")
    return run_one(cfg, Store(root), threads=threads, stop_at=stop_at)


class LocalExecutor:
    """A pool of `workers` processes on this machine, `threads` torch threads each, taking the runs in turn.

    `runs_per_worker` 1 (the default) starts a fresh process for every run; K > 1 lets a worker
    train K runs one after the other before it is replaced, and 0 keeps each worker for the whole
    sweep: what a GPU wants for small, launch-bound models, where a fresh process (imports, a CUDA
    context) costs seconds a run and many processes sharing the device slow each other (`gpuplan`).
    """

    def __init__(self, workers: int = 2, threads: int = 1, runs_per_worker: int = 1):
        if workers < 1 or threads < 1 or runs_per_worker < 0:
            raise ValueError(f"workers and threads must be at least 1 and runs_per_worker at least 0 "
                             f"(0: no limit), not {workers}, {threads}, {runs_per_worker}")
        self.threads = threads
        self.local = True  # its runs train in children of this process: `progress_line` tells them by its pid
        each = {1: "a fresh process a run", 0: "each for the whole sweep"}.get(runs_per_worker,
                                                                             f"{runs_per_worker} runs each")
        self.description = f"{workers} worker(s) x {threads} thread(s), {each}"
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        max_tasks_per_child=runs_per_worker or None)
        # Told to every run: once it exists, a run that reaches a worker does not start. The pool hands
        # a few runs to its call queue ahead of time, where cancel() cannot reach them, and replaces a
        # stopped worker with a fresh one, which knows nothing of the SIGTERM its predecessor had.
        self._stop_file = Path(tempfile.mkdtemp(prefix="scaling_lib-pool-")) / "stop"

    def submit(self, cfg: RunConfig, store: Store, stop_at: float | None) -> Future:
        return self.pool.submit(_run_in_worker, cfg.to_dict(), str(store.root), self.threads, stop_at,
                                str(self._stop_file))

    def drain(self) -> None:
        """No run starts any more; the runs under way go on."""
        self._stop_file.touch()

    def stop(self) -> None:
        """Pass a preemption on: no run starts any more, and SIGTERM to every worker (each checkpoints
        its run and returns)."""
        self.drain()
        for p in list(getattr(self.pool, "_processes", {}).values()):  # the pool has no public list
            if p.is_alive():
                p.terminate()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._stop_file.parent, ignore_errors=True)


def run_all(cfgs: Iterable[RunConfig], store: Store, executor: Executor, *, stop_at: float | None = None,
            report: Callable[[str], None] = print) -> list[RunResult]:
    """Run every config through the executor; report each result as it lands, and every
    PROGRESS_SECONDS how far the runs under way are (from their checkpoints: while none has one,
    every PROGRESS_RETRY_SECONDS until one has). Runs past `stop_at` checkpoint and stop. Asked to drain
    (`preempt.draining`), it starts nothing more and waits for the runs under way."""
    cfgs = list(cfgs)
    results: list[RunResult] = []
    futures = {executor.submit(c, store, stop_at): c for c in cfgs}
    pending = set(futures)
    with preempt.handling():  # on the main thread: a SIGTERM is noted, and the runs read it
        try:
            _collect(futures, pending, results, store, executor, report, time.time(), len(cfgs))
        except KeyboardInterrupt:  # Ctrl-C: the run under way checkpoints after its step, nothing more starts
            preempt.request(signal.SIGINT)
            _cancel_not_begun(pending)
            if hasattr(executor, "stop"):
                executor.stop()
            raise
    return results


def _cancel_not_begun(pending: set[Future]) -> set[Future]:
    """Cancel the runs not begun and take them out of `pending`: returned to be reported now, as an executor
    need not ever mark a cancelled future done."""
    gone = {fut for fut in pending if fut.cancel()}
    pending -= gone
    return gone


def _collect(futures: dict[Future, RunConfig], pending: set[Future], results: list[RunResult], store: Store,
             executor: Executor, report: Callable[[str], None], started: float, total: int) -> None:
    """`run_all`'s loop: each result as it lands, the progress of the runs under way, and a stop or drain
    request passed on. `pending` is emptied as the futures finish, so a caller that stops it knows what is left."""
    last_report = started
    interval = PROGRESS_SECONDS
    stopping = draining = False
    while pending:
        done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
        pending -= done
        if preempt.draining() and not (draining or stopping):  # SIGUSR1: start nothing more, let what runs finish
            draining = True
            report("[sweep] asked to drain: the runs under way finish, nothing more starts")
            done |= _cancel_not_begun(pending)  # a pool's queue holds a few that cancel() cannot reach:
            if hasattr(executor, "drain"):
                executor.drain()  # they do not start either
        if preempt.requested() and not stopping:  # SIGTERM: start nothing more, stop what runs
            stopping = True
            report("[sweep] asked to stop: the runs under way checkpoint and stop")
            done |= _cancel_not_begun(pending)
            if hasattr(executor, "stop"):
                executor.stop()
        for fut in done:
            cfg = futures[fut]
            try:
                res = fut.result()
            except CancelledError:
                res = stopped_result(cfg, "asked to stop before it began")
            except Exception as e:  # the worker itself died (killed, out of memory)
                res = _failed(cfg, store, f"{type(e).__name__}: {e}", traceback.format_exc())
            results.append(res)
            report(f"[{len(results)}/{total}] {res.line()}")
        if pending and time.time() - last_report > interval:
            last_report = time.time()
            under_way = progress_line([futures[f] for f in pending], since=started,
                                      owner=os.getpid() if getattr(executor, "local", False) else None)
            # the runs checkpoint every train.CHECKPOINT_SECONDS from their start, so the first look
            # finds nothing to say: look again soon, not a whole interval later
            interval = PROGRESS_SECONDS if under_way else PROGRESS_RETRY_SECONDS
            if under_way:
                report(f"[sweep] under way: {under_way}")


def progress_line(cfgs: list[RunConfig], since: float | None = None, owner: int | None = None) -> str:
    """'name 42% (val 4.123, 12 min)' for each of these runs that has checkpointed, '' if none has.

    With `since` (a time.time()), a run whose last checkpoint is older is not under way: it waits
    in the queue to resume (an earlier sweep stopped it), and is counted, not listed. With `owner` (a
    process id), a run whose checkpoint another process wrote, neither `owner` nor a child of it, is
    left out: a second sweep is training it, and this one will skip it.
    """
    parts, waiting = [], 0
    for c in cfgs:
        p = read_progress(c.key)
        if not (p and p.get("steps")):
            continue
        if since is not None and progress_path(c.key).stat().st_mtime < since:
            waiting += 1
            continue
        if owner is not None and "pids" in p and owner not in p["pids"]:
            continue
        val = f"val {p['val_loss']:.3f}, " if p.get("val_loss") is not None else ""
        parts.append(f"{c.sweep}/{c.name} {p['step'] / p['steps']:.0%} ({val}{p['wall_s'] / 60:.0f} min)")
    if waiting:
        parts.append(f"{waiting} queued to resume from a checkpoint")
    return "; ".join(parts)


def machine_workers(threads: int = 1) -> int:
    """The local pool's default size: as many workers as this machine has cores for."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))
