"""Transfer to other distributions (Kaplan §3.2.2, Fig. 8): how the loss on text unlike the training
data moves with the training-distribution loss.

Two claims of the paper, each measured here by a statistic with an interval:

- across models, the other-distribution loss is the validation loss plus a roughly constant offset
  (`across_models`: the slope and the offset of the line, with a bootstrap over model sizes);
- along training, it depends on the validation loss only, not on the model or the training phase
  (`along_training`: at equal validation loss, how far apart the runs' other-distribution losses are).

Numerics over run tables only: no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

STATS = ("slope", "intercept", "offset_mean", "offset_small", "offset_large", "corr")


def _line(x: np.ndarray, y: np.ndarray, N: np.ndarray) -> dict[str, float]:
    slope, intercept = np.polyfit(x, y, 1)
    offset = y - x
    small, large = N == N.min(), N == N.max()
    return dict(slope=slope, intercept=intercept, offset_mean=offset.mean(), offset_small=offset[small].mean(),
                offset_large=offset[large].mean(), corr=np.corrcoef(x, y)[0, 1])


def across_models(t: pd.DataFrame, other: str, *, x: str = "final_val_loss", bootstrap: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """The line of `other` against `x` over the runs of `t`, one row per statistic.

    Columns: value, lo, hi (a 95% bootstrap resampling whole model sizes; NaN with fewer than 3
    sizes). `offset_small` / `offset_large` are the mean offsets at the smallest and largest size
    (no interval): a constant offset makes them equal and the slope 1.
    """
    ok = t[np.isfinite(t[x]) & np.isfinite(t[other])]
    xs, ys, Ns = (ok[c].to_numpy(float) for c in (x, other, "N"))
    if len(ok) < 3 or len(np.unique(xs)) < 2:
        raise ValueError(f"{len(ok)} run(s) with both {x} and {other}: a line needs 3 or more")
    point = _line(xs, ys, Ns)
    sizes = np.unique(Ns)
    draws = []
    if len(sizes) >= 3:
        rng = np.random.default_rng(seed)
        members = {n: np.flatnonzero(Ns == n) for n in sizes}
        for _ in range(bootstrap):
            idx = np.concatenate([members[n] for n in rng.choice(sizes, len(sizes))])
            if len(np.unique(xs[idx])) < 2:
                continue
            d = _line(xs[idx], ys[idx], Ns[idx])
            # the offsets at the end sizes are measurements of one size each, not statistics of the
            # sample: a resample of sizes says nothing about them, so they get no interval
            d["offset_small"] = d["offset_large"] = np.nan
            draws.append(d)
    boot = pd.DataFrame(draws, columns=list(STATS))
    rows = []
    for k in STATS:
        v = boot[k].dropna() if len(boot) else pd.Series(dtype=float)
        lo, hi = (np.percentile(v, [2.5, 97.5]) if len(v) >= 2 else (np.nan, np.nan))
        rows.append(dict(statistic=k, value=float(point[k]), lo=float(lo), hi=float(hi)))
    return pd.DataFrame(rows).set_index("statistic")


def along_training(curves: pd.DataFrame, other: str, *, x: str = "val_loss", levels: int = 20) -> pd.DataFrame:
    """At equal validation loss, the spread of the runs' `other` loss along their learning curves.

    Each run's curve (evaluations after step 0) is interpolated at `levels` validation losses spread
    over the range that at least two runs cover. Returns one row per level: the level, the number of
    runs covering it, the spread (max - min of `other` across them, nats) and the mean of `other`.
    If `other` depended on the validation loss alone, the spread would be zero (up to evaluation noise).
    """
    c = curves[(curves["step"] > 0) & np.isfinite(curves[x]) & np.isfinite(curves[other])]
    runs = []
    for _, g in c.groupby("key"):
        g = g.sort_values(x)
        if len(g) >= 2:
            runs.append((g[x].to_numpy(float), g[other].to_numpy(float)))
    if len(runs) < 2:
        return pd.DataFrame(columns=["level", "runs", "spread", "mean"])
    lows = sorted(r[0].min() for r in runs)
    highs = sorted((r[0].max() for r in runs), reverse=True)
    lo, hi = lows[1], highs[1]  # covered by at least two runs
    rows = []
    for level in np.linspace(lo, hi, levels) if hi > lo else []:
        vals = [np.interp(level, rx, ry) for rx, ry in runs if rx.min() <= level <= rx.max()]
        if len(vals) >= 2:
            rows.append(dict(level=float(level), runs=len(vals), spread=float(np.ptp(vals)), mean=float(np.mean(vals))))
    return pd.DataFrame(rows, columns=["level", "runs", "spread", "mean"])
