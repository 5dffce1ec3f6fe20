"""Named sweeps: the grids of runs behind each chapter, and a resumable pool that runs them.

A sweep is a function from a profile (and what the store already holds) to a list of RunConfigs.
Running it trains only what the store lacks, in worker processes, and files each record as it
finishes: a sweep that is killed resumes where it stopped.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
import traceback
from typing import Callable

from .config import RunConfig, lr_rule_pilot, profile as get_profile
from .data import read_progress
from .store import Store

SweepFn = Callable[[dict, Store], list[RunConfig]]
SWEEPS: dict[str, SweepFn] = {}


def sweep(fn: SweepFn) -> SweepFn:
    SWEEPS[fn.__name__.removeprefix("sweep_").replace("_", "-")] = fn
    return fn


def _base(p: dict, name: str, **kw) -> RunConfig:
    suffix = "-gpu" if p.get("device") == "cuda" else ""
    return RunConfig(sweep=name + suffix, batch_size=p["batch_size"], n_ctx=p["n_ctx"], eval_tokens=p["eval_tokens"],
                     device=p.get("device", "cpu"), corpus=p.get("corpus", "books"), **kw)


def ladder_lr(N: float) -> float:
    """Peak LR for the ladder: the rule fitted to this machine's pilot LR sweep (training.md)."""
    return round(lr_rule_pilot(N), 5)


def _lr_grid(base: RunConfig, grid, store: Store) -> list[RunConfig]:
    """`base` at each rate of the grid, which grows (x3, at most twice) past an edge that wins.

    Only complete grids are judged: a rate still untrained leaves the grid as it is. A diverged rate
    is a stored result too, the worst one.
    """
    grid = sorted(grid)
    for _ in range(2):
        losses = {}
        for lr in grid:
            rec = store.load(base.replace(lr=lr))
            if rec is not None:
                losses[lr] = rec["final"]["val_loss"] if rec["status"] == "ok" else math.inf
        if len(losses) < len(grid):
            break
        best = min(losses, key=losses.get)
        if best == grid[-1] and grid[-1] * 3 <= 1.0:
            grid.append(round(grid[-1] * 3, 6))
        elif best == grid[0] and grid[0] / 3 >= 1e-5:
            grid.insert(0, round(grid[0] / 3, 8))
        else:
            break
    return [base.replace(lr=lr) for lr in grid]


@sweep
def sweep_lr(p: dict, store: Store) -> list[RunConfig]:
    """Peak learning rate at every ladder size, at a short budget; the grid grows at an edge that wins."""
    cfgs = []
    for n_layer, d_model in p["ladder"]:
        base = _base(p, "lr", n_layer=n_layer, d_model=d_model, tokens=p["lr_tokens"], schedule="cosine")
        cfgs += _lr_grid(base, p["lr_grid"], store)
    return cfgs


@sweep
def sweep_ladder(p: dict, store: Store) -> list[RunConfig]:
    """The model-size ladder, each size at several doubling budgets (wsd cooldowns), extra seeds at some sizes.

    Sizes up to the profile's `long_max_N` train on to `long_tokens`, with `long_budgets` as branches.
    """
    cfgs = []
    for n_layer, d_model in p["ladder"]:
        base = _base(p, "ladder", n_layer=n_layer, d_model=d_model, tokens=p["tokens"], budgets=p["budgets"],
                     schedule="wsd")
        if base.N <= p.get("long_max_N", 0):
            base = base.replace(tokens=p["long_tokens"], budgets=p["long_budgets"])
        seeds = p["seeds"] if (n_layer, d_model) in p["seed_sizes"] else (0,)
        cfgs += [base.replace(lr=ladder_lr(base.N), seed=s) for s in seeds]
    # every size once before the extra seeds, the longest first within each
    return sorted(cfgs, key=lambda c: (c.seed, -_cost([c])))


@sweep
def sweep_data(p: dict, store: Store) -> list[RunConfig]:
    """L(D): one large model on nested subsets of the training split, early-stopped (Kaplan §3.1)."""
    n_layer, d_model = p["data_model"]
    base = _base(p, "data", n_layer=n_layer, d_model=d_model, tokens=p["data_budget"], schedule="cosine",
                 early_stop=True)
    base = base.replace(lr=ladder_lr(base.N))
    # the largest subsets first: they run longest (the smaller ones stop early)
    sizes = sorted(p["data_sizes"], key=lambda d: d or math.inf, reverse=True)
    return [base.replace(data_tokens=d) for d in sizes]


@sweep
def sweep_shape(p: dict, store: Store) -> list[RunConfig]:
    """Shapes at (nearly) fixed N: depth against width, feed-forward ratio, head dimension (Fig. 5)."""
    cfgs = []
    for shape in p["shapes"]:
        base = _base(p, "shape", tokens=p["shape_tokens"], schedule="cosine", **shape)
        cfgs.append(base.replace(lr=ladder_lr(base.N)))
    return cfgs


@sweep
def sweep_lstm(p: dict, store: Store) -> list[RunConfig]:
    """An LSTM ladder (Fig. 7), each size at a small grid of learning rates that grows at a winning edge."""
    cfgs = []
    for n_layer, d_model in p["lstm_ladder"]:
        base = _base(p, "lstm", arch="lstm", n_layer=n_layer, d_model=d_model, tokens=p["lstm_tokens"],
                     schedule="cosine")
        cfgs += _lr_grid(base, p["lstm_lr_grid"], store)
    return sorted(cfgs, key=lambda c: -_cost([c]))  # the longest first: a sweep cut short misses small runs


def configs(name: str, profile_name: str, store: Store | None = None,
            overrides: dict | None = None) -> list[RunConfig]:
    """Every config of a named sweep, of several ('data,lstm') or of 'all', under a profile.

    `overrides` replaces profile entries: {"long_max_N": 0} is the ladder as it stood before its
    smaller sizes went on to 16M tokens (every size at 8M).
    """
    store = store or Store()
    p = get_profile(profile_name, overrides)
    names = list(SWEEPS) if name == "all" else name.split(",")
    for n in names:
        if n not in SWEEPS:
            raise ValueError(f"unknown sweep {n!r}: choose one of {', '.join(SWEEPS)} or 'all'")
    out = []
    for n in names:
        out += SWEEPS[n](p, store)
    return out


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
PROGRESS_SECONDS = 300.0  # how often a sweep logs how far its runs under way are


def _print_now(*args) -> None:
    """print, flushed: a sweep's log is read while it runs, often from a file (nohup)."""
    print(*args, flush=True)


def run_sweep(name: str, profile_name: str, *, store: Store | None = None, workers: int = 2, threads: int = 1,
              deadline_s: float | None = None, dry_run: bool = False, max_N: float | None = None,
              overrides: dict | None = None, log=None) -> list[str]:
    """Train what the store lacks of a sweep, in a pool of worker processes; return the paths written.

    Sweeps whose grid depends on earlier results (the learning-rate edges) are re-expanded until
    nothing new appears. With a deadline, runs under way when it passes are stopped (they resume
    from their checkpoints next time). max_N trains only the sizes up to N (what a machine affords).
    """
    store = store or Store()
    log = log or _print_now
    t0 = time.time()
    written: list[str] = []
    tried: set[str] = set()  # a run that failed is not tried again in the same call
    for _ in range(4):
        todo = [c for c in configs(name, profile_name, store, overrides)
                if not store.has(c) and c.key not in tried and (not max_N or c.N <= max_N)]
        todo = list(dict.fromkeys(todo))
        if not todo:
            break
        log(f"[sweep {name}/{profile_name}] {len(todo)} run(s) to train with {workers} worker(s) "
            f"x {threads} thread(s); {_cost(todo) / 1e6:.0f}M token-equivalents")
        if dry_run:
            for c in todo:
                log(f"  {c.sweep}/{c.name} ({c.key}) N={c.N}")
            return []
        tried |= {c.key for c in todo}
        written += _run_pool(todo, store, workers, threads, deadline_s and t0 + deadline_s, log)
        if deadline_s and time.time() > t0 + deadline_s:
            break
    return written


def _cost(cfgs: list[RunConfig]) -> float:
    """A rough cost: tokens times (N + the output layer), for ordering and for the log line."""
    return sum(c.tokens * (1.2 if c.budgets else 1.0) * (c.N + c.d_model * c.vocab) / 1e5 for c in cfgs)


def _run_pool(todo, store, workers, threads, deadline, log) -> list[str]:
    written = []
    if workers <= 1:
        for i, cfg in enumerate(todo):
            if deadline and time.time() > deadline:
                log("[sweep] deadline reached: stopping before the next run")
                break
            ok, msg = _worker((cfg.to_dict(), str(store.root), threads))
            log(f"[{i + 1}/{len(todo)}] {msg}")
            if ok:
                written.append(msg.split(" -> ")[-1])
        return written
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        pending = {pool.apply_async(_worker, ((c.to_dict(), str(store.root), threads),)): c for c in todo}
        # a deadline cannot unqueue tasks already handed to the pool, so we poll and terminate instead
        done = 0
        last_report = time.time()
        while pending:
            if time.time() - last_report > PROGRESS_SECONDS:
                last_report = time.time()
                under_way = progress_line(list(pending.values()))
                if under_way:
                    log(f"[sweep] under way: {under_way}")
            for res in list(pending):
                if res.ready():
                    pending.pop(res)
                    done += 1
                    ok, msg = res.get()
                    log(f"[{done}/{len(todo)}] {msg}")
                    if ok:
                        written.append(msg.split(" -> ")[-1])
            if deadline and time.time() > deadline:
                log(f"[sweep] deadline reached with {len(pending)} run(s) unfinished: they resume next time")
                pool.terminate()
                break
            time.sleep(0.5)
    return written


def progress_line(cfgs: list[RunConfig]) -> str:
    """'name 42% (val 4.123, 12 min)' for each of these runs that has checkpointed, '' if none has."""
    parts = []
    for c in cfgs:
        p = read_progress(c.key)
        if p and p.get("steps"):
            val = f"val {p['val_loss']:.3f}, " if p.get("val_loss") is not None else ""
            parts.append(f"{c.sweep}/{c.name} {p['step'] / p['steps']:.0%} ({val}{p['wall_s'] / 60:.0f} min)")
    return "; ".join(parts)


def _worker(args) -> tuple[bool, str]:
    cfg_dict, root, threads = args
    import torch

    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(cfg_dict)
    store = Store(root)
    if store.has(cfg):
        return True, f"{cfg.name} already stored -> {store.path(cfg)}"
    t = time.time()
    try:
        from .train import train

        rec = train(cfg, progress=False)
        path = store.save(rec)
    except Exception as e:  # a failed run is reported and the sweep goes on
        traceback.print_exc(file=sys.stderr)
        return False, f"{cfg.sweep}/{cfg.name} FAILED: {type(e).__name__}: {e}"
    loss = rec["final"].get("val_loss", math.nan)
    return True, f"{cfg.sweep}/{cfg.name} {rec['status']} val {loss:.4f} in {time.time() - t:.0f}s -> {path}"



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


def load_by_machine(name: str, profile_name: str, *, min_sizes: int = 1,
                    status: tuple[str, ...] = ("ok", "early_stopped"),
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
