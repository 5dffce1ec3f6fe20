"""Sweeps: the plans (`plans`) run by the runner (`runner`), and their records loaded for the chapters.

Running a sweep trains only what the store lacks and files each record as it finishes: a sweep
that is killed resumes where it stopped.
"""
from __future__ import annotations

import time
from typing import Any

from . import preempt
from .config import RunConfig
from .plans import MissingRule, configs, cost, ladder_lr, profile as get_profile  # noqa: F401 (configs, ladder_lr: the chapters')
from .runner import Executor, InlineExecutor, LocalExecutor, RunResult, machine_workers, run_all
from .store import FINISHED, Store  # noqa: F401 (FINISHED: the chapters')

# ---------------------------------------------------------------------------------------------
# Executors: where a sweep's runs train
# ---------------------------------------------------------------------------------------------
EXECUTORS = ("local", "inline", "submitit")


def make_executor(kind: str = "local", *, workers: int = 0, threads: int = 1, runs_per_worker: int = 1,
                  **cluster: Any) -> Executor:
    """An executor by name: 'local' (a process pool, `workers` 0 sizing it to the machine, each
    worker replaced after `runs_per_worker` runs, 0 never; one worker runs inline), 'inline', or
    'submitit' (a Slurm job a run: `cluster.SubmititExecutor`, whose options `cluster` holds:
    partition, time_min, gpus, mem_gb, cpus, folder, cluster)."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    if kind == "submitit":
        from .cluster import SubmititExecutor

        return SubmititExecutor(threads=threads, **cluster)
    if cluster:
        raise ValueError(f"cluster options ({', '.join(sorted(cluster))}) need --executor submitit")
    workers = workers or machine_workers(threads)
    if kind == "inline" or workers <= 1:
        return InlineExecutor(threads)
    return LocalExecutor(workers, threads, runs_per_worker)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def _print_now(*args) -> None:
    """print, flushed: a sweep's log is read while it runs, often from a file (nohup)."""
    print(*args, flush=True)


def in_range(N: float, min_N: float | None = None, max_N: float | None = None) -> bool:
    """Whether a size lies within the bounds a sweep was given (an unset bound admits everything)."""
    return (not min_N or N >= min_N) and (not max_N or N <= max_N)


def run_sweep(name: str, profile_name: str, *, store: Store | None = None, workers: int = 2, threads: int = 1,
              deadline_s: float | None = None, dry_run: bool = False, max_N: float | None = None,
              min_N: float | None = None, overrides: dict | None = None, log=None, executor: Executor | None = None) -> list[RunResult]:
    """Train what the store lacks of a sweep through an executor (a local pool by default); return
    what became of each run.

    Sweeps whose grid depends on earlier results (the learning-rate edges) are re-expanded until
    nothing new appears. With a deadline, runs under way when it passes checkpoint and stop (they
    resume next time). max_N trains only the sizes up to N (what a machine affords); min_N only those from N
    up (a larger size first, when it is the one a result waits on).
    """
    store = store or Store()
    log = log or _print_now
    t0 = time.time()
    stop_at = t0 + deadline_s if deadline_s else None
    results: list[RunResult] = []
    tried: set[str] = set()  # a run that did not land is not tried again in the same call
    own = executor is None
    executor = executor or make_executor(workers=workers, threads=threads)
    try:
        for _ in range(4):
            todo = [c for c in configs(name, profile_name, store, overrides)
                    if not store.has(c) and c.key not in tried and in_range(c.N, min_N, max_N)]
            todo = list(dict.fromkeys(todo))
            if not todo:
                break
            log(f"[sweep {name}/{profile_name}] {len(todo)} run(s) to train through "
                f"{getattr(executor, 'description', type(executor).__name__)}; "
                f"{cost(todo) / 1e6:.0f}M token-equivalents")
            if dry_run:
                for c in todo:
                    log(f"  {c.sweep}/{c.name} ({c.key}) N={c.N}")
                return []
            tried |= {c.key for c in todo}
            results += run_all(todo, store, executor, stop_at=stop_at, report=log)
            if stop_at and time.time() > stop_at:
                log("[sweep] deadline reached: what is unfinished resumes next time")
                break
            if preempt.requested():  # SIGTERM: no next round (the grid's new edges and seeds wait too)
                log("[sweep] stopped: what is unfinished resumes next time")
                break
            if preempt.draining():  # SIGUSR1: the same, once the runs under way have finished
                log("[sweep] drained: the runs under way finished, the rest waits for the next call")
                break
    finally:
        if own:
            executor.shutdown()
    return results


# ---------------------------------------------------------------------------------------------
# Loading for the chapters
# ---------------------------------------------------------------------------------------------
def chapter_store(profile_name: str) -> Store:
    """Where a chapter's runs live: runs/ for the real profiles, a scratch store for 'smoke'."""
    if profile_name == "smoke":
        import os
        import tempfile
        from pathlib import Path

        return Store(os.environ.get("SCALING_LIB_SMOKE_RUNS", Path(tempfile.gettempdir()) / "scaling_lib_smoke_runs"))
    return Store()


def load_sweep(name: str, profile_name: str, store: Store | None = None, *, train: bool | None = None,
               overrides: dict | None = None):
    """The records of a sweep under a profile, training what is missing if the profile allows it.

    Returns (records, missing): the stored records and the configs the store lacks. The 'book'
    profile trains nothing, so a sweep still under way shows up as missing runs, not as an error.
    """
    store = store or chapter_store(profile_name)
    if get_profile(profile_name)["train_missing"] if train is None else train:
        run_sweep(name, profile_name, store=store, workers=1, overrides=overrides, log=lambda *a: None)
    cfgs = configs(name, profile_name, store, overrides)
    return [store.load(c) for c in cfgs if store.has(c)], [c for c in cfgs if not store.has(c)]


def finished_or_why(name: str, profile_name: str, store: Store | None = None, *,
                    overrides: dict | None = None) -> tuple[list[dict], list[RunConfig], str]:
    """A sweep's finished records (`load_sweep`, status ok or early-stopped), the configs it still
    lacks, and, where there is nothing to show, why, in a sentence for a chapter: the sweep waits for
    the fitted learning-rate rule (it cannot be planned yet), or none of its runs is stored."""
    try:
        recs, missing = load_sweep(name, profile_name, store, overrides=overrides)
    except MissingRule as e:
        return [], [], f"the `{name}` sweep waits for the fitted learning-rate rule ({e})"
    recs = [r for r in recs if r["status"] in FINISHED]
    return recs, missing, "" if recs else f"no run of the `{name}` sweep is stored yet ({len(missing)} planned)"


def load_by_machine(name: str, profile_name: str, *, min_sizes: int = 1,
                    status: tuple[str, ...] = FINISHED,
                    overrides: dict | None = None) -> tuple[dict[str, list[dict]], list[RunConfig]]:
    """A sweep's finished runs by the machine that trained them: {"CPU": [...], "GPU": [...]}.

    The CPU runs are the profile's (trained here if the profile allows it); outside 'smoke', the
    runs a lent GPU stored under the 'gpu' profile join them, and are never trained here. Runs
    whose status is not in `status` (a diverged one) are left out, and a machine's runs are kept
    only once they span `min_sizes` model sizes: a sweep still under way is fitted when it can be.
    `overrides` replaces entries of both profiles (see `configs`). Returns the dict (machines with
    nothing to show are absent) and the CPU configs not stored yet.
    """
    records, missing = load_sweep(name, profile_name, overrides=overrides)
    found = {"CPU": records}
    if profile_name != "smoke":
        found["GPU"], _ = load_sweep(name, "gpu", train=False, overrides=overrides)
    out = {}
    for machine, recs in found.items():
        recs = [r for r in recs if r["status"] in status]
        if recs and len({r["N"] for r in recs}) >= min_sizes:
            out[machine] = recs
    return out, missing
