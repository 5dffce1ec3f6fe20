"""How far each sweep has come: the runs stored, the runs still planned, and what the rest may cost.

The book's status is counted from the store, never typed: `sweep_progress` compares each sweep's
planned grid (`plans.configs`) with the records under `runs/`, and sizes what is left from the
sweep's own stored runs that trained their whole budget (their wall time per unit of `plans.cost`),
so the next session can be planned from the same table that the results page and
`python -m scaling_lib progress` print.
"""
from __future__ import annotations

import math
from statistics import median

import pandas as pd

from .pages import on_gpu, run_hours, worker_seconds
from .plans import MissingRule, configs, cost, foreseen
from .store import FINISHED, Store

# a sweep whose runs repeat another's recipe (the warmup sweep: the tuned grid's best runs, another warmup) is sized
# by that sweep's stored runs until it has finished runs of its own
SIZED_BY = {"warmup": "tune"}

COLUMNS = ["sweep", "chapters", "stored", "not_finished", "planned_left", "foreseen", "gpu_stored", "cpu_hours",
           "hours_left", "note"]


def sweeps_of(chapter_sweeps: dict[str, tuple]) -> dict[str, list[str]]:
    """Each sweep named in `pages.CHAPTER_SWEEPS`, with the chapters that read it, in book order."""
    out: dict[str, list[str]] = {}
    for stem, pairs in chapter_sweeps.items():
        for name, _ in pairs:
            out.setdefault(name, [])
            if stem not in out[name]:
                out[name].append(stem)
    return out


def _cpu_rates(pairs) -> list[tuple[int, float]]:
    """(N, worker-seconds per unit of `plans.cost`) of each (config, record) pair that trained its whole
    planned budget (status 'ok') on a CPU. A diverged or early-stopped run trained fewer tokens than its
    planned cost counts, so it would read as cheap; a GPU's run would make the CPU's sizing look cheap."""
    out = []
    for cfg, rec in pairs:
        seconds, c = worker_seconds(rec), cost([cfg])
        if rec["status"] == "ok" and seconds and c > 0 and not on_gpu(rec):
            out.append((cfg.N, seconds / c))
    return out


def hours_left(pairs, missing) -> float:
    """The worker-hours the `missing` configs should take: each at the median rate (worker-seconds per
    unit of `plans.cost`) of the stored CPU runs that finished their budget, of the size nearest its own
    (in log N), since a small model runs many times slower per unit than a large one; 0 without any
    `missing`, NaN without any such stored run."""
    rates = _cpu_rates(pairs)
    if not missing:
        return 0.0
    if not rates:
        return math.nan
    by_size: dict[int, list[float]] = {}
    for n, r in rates:
        by_size.setdefault(n, []).append(r)
    sizes = sorted(by_size)
    total = 0.0
    for cfg in missing:
        near = min(sizes, key=lambda n: abs(math.log(n / cfg.N)))
        total += median(by_size[near]) * cost([cfg])
    return total / 3600


def sweep_progress(chapter_sweeps: dict[str, tuple], profile: str = "book", store: Store | None = None,
                   checkpoints: bool = False) -> pd.DataFrame:
    """One row per sweep, with
    - the chapters that read it;
    - the finished runs stored, and the stored runs that did not finish (diverged, failed);
    - the planned runs not stored yet;
    - the runs the sweep will plan once those land, where that can be foreseen (`plans.foreseen`: the tuned
      ladder's seeds and long runs at a size whose grid is unfinished);
    - the finished runs a lent GPU stored under the 'gpu' profile (outside 'smoke'; the chapters read
      them beside the CPU's);
    - the CPU worker-hours the stored runs took (`pages.run_hours`);
    - the worker-hours left, each planned or foreseen run at the median rate of the sweep's own stored CPU
      runs that finished their budget, of the nearest size (`hours_left`; NaN while none is stored, unless
      `SIZED_BY` names a sweep whose recipe it repeats, whose runs then size it, as `note` says).
    A sweep whose grid grows from its results past what can be foreseen (the learning-rate edges, the batch
    grid) counts only what is planned so far; a sweep that cannot be planned yet says why in `note`. With
    `checkpoints`, a column counts the missing runs that hold a checkpoint on this machine."""
    from .data import read_progress

    store = store or Store()
    rows = []
    for name, chapters in sweeps_of(chapter_sweeps).items():
        row = dict(sweep=name, chapters=", ".join(chapters), stored=0, not_finished=0, planned_left=0, foreseen=0,
                   gpu_stored=0, cpu_hours=0.0, hours_left=math.nan, note="")
        try:
            cfgs = list(dict.fromkeys(configs(name, profile, store)))
        except MissingRule as e:
            row["note"] = f"waits for the fitted learning-rate rule ({e})"
            rows.append(row)
            continue
        pairs = [(c, store.load(c)) for c in cfgs if store.has(c)]
        missing = [c for c in cfgs if not store.has(c)]
        row["stored"] = sum(r["status"] in FINISHED for _, r in pairs)
        row["not_finished"] = len(pairs) - row["stored"]
        row["planned_left"] = len(missing)
        later = [c for c in foreseen(name, profile, store) if not store.has(c)]
        row["foreseen"] = len(later)
        row["cpu_hours"] = run_hours([r for _, r in pairs])["cpu_hours"]
        sized = pairs
        if not _cpu_rates(pairs) and name in SIZED_BY:
            sized = [(c, store.load(c)) for c in configs(SIZED_BY[name], profile, store) if store.has(c)]
            row["note"] = f"sized by the {SIZED_BY[name]} sweep's runs"
        row["hours_left"] = hours_left(sized, missing + later)
        if profile != "smoke":  # a lent GPU's runs, planned under their own profile, join the chapters
            try:
                gpu = [store.load(c) for c in dict.fromkeys(configs(name, "gpu", store)) if store.has(c)]
            except MissingRule:
                gpu = []
            row["gpu_stored"] = sum(r["status"] in FINISHED for r in gpu)
        if checkpoints:
            row["checkpointed"] = sum(read_progress(c.key) is not None for c in missing)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS + (["checkpointed"] if checkpoints else []))
