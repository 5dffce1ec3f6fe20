"""From the `batch` sweep's learning curves to the critical batch at a ladder of loss targets.

Kaplan et al. (2020, §5.1, App. D.3, Figs. 10 and 18) read, for each model size and loss target,
the steps S that each batch size B needs to reach the target, fit S = S_min (1 + B_crit/B)
(`batch.fit_critical_batch`), and fit B_crit against the loss (`batch.fit_bcrit_loss`). This module
does the reading on the stored runs:

- `steps_table`: the steps and examples (E = B S) each run needs to reach each target, with the
  rate re-tuned per batch size (McCandlish et al. 2018): at each (N, B, target) the rate of the
  sweep's grid that gets there in the fewest steps (`best_rate_steps`);
- `loss_targets`: a size's targets, from the loss that the batch sizes' early curves have left
  behind down to the loss that every batch size reaches (a choice, shown as one in the chapter);
- `critical_by_target`: the critical-batch fit at each (N, target), B_crit in tokens;
- `analyse`: all of the above and B_crit(L), as the chapters use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .batch import MIN_BATCH_SIZES, fit_bcrit_loss, fit_critical_batch, steps_to_reach
from .fit import FitError
from .store import curves_table

N_TARGETS = 6
EARLY = 0.1  # the share of the token budget after which the highest target must still lie ahead of every run
MIN_SIZES_CI = 3  # B_crit(L)'s interval resamples model sizes: fewer than this, no interval
MARGIN = 0.01  # nats: the lowest target lies this far above the third-best batch size's best loss


def _curves(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """`store.curves_table`'s points with a finite validation loss, after step 0."""
    c = curves_table(records)
    return c[(c["step"] > 0) & np.isfinite(c["val_loss"].astype(float))].reset_index(drop=True)


def loss_targets(records: Iterable[dict[str, Any]], n: int = N_TARGETS, *, early: float = EARLY,
                 margin: float = MARGIN) -> dict[int, np.ndarray]:
    """At each size, `n` loss targets evenly spaced from the highest to the lowest:

    - the lowest is `margin` above the best loss of the third-best batch size, so that at least three
      batch sizes (the fewest the critical-batch fit takes) reach every target; the largest batches,
      which at a fixed token budget take few steps, may reach only the higher targets;
    - the highest is the lowest loss any batch size had reached by `early` of the token budget, so
      that every run still has it ahead after its first steps (the warmup and the initial drop,
      where the steps count the schedule more than the batch)."""
    if n < 2:
        raise ValueError(f"at least two targets, not {n}")
    curves = _curves(records)
    out = {}
    for N, g in curves.groupby("N"):
        best_by_batch = np.sort(g.groupby("batch_size")["val_loss"].min().to_numpy())
        low = float(best_by_batch[min(MIN_BATCH_SIZES, len(best_by_batch)) - 1]) + margin
        early_pts = g[g["tokens"] <= early * g["budget"]]
        high = float(early_pts["val_loss"].min()) if len(early_pts) else float(g["val_loss"].max())
        if not high > low:
            continue
        out[int(N)] = np.linspace(high, low, n)
    return out


def steps_table(records: Iterable[dict[str, Any]], targets: dict[int, Iterable[float]]) -> pd.DataFrame:
    """One row per (run, target): the steps S to reach the target (NaN if it never does), the
    examples E = B S in sequences, and the tokens B S n_ctx."""
    curves = _curves(records)
    rows = []
    for (key, N), g in curves.groupby(["key", "N"]):
        g = g.sort_values("step")
        for L in targets.get(int(N), ()):
            S = steps_to_reach(g["step"], g["val_loss"], float(L))
            B = int(g["batch_size"].iloc[0])
            rows.append(dict(key=key, N=int(N), batch_size=B, n_ctx=int(g["n_ctx"].iloc[0]), lr=g["peak_lr"].iloc[0],
                             target=float(L), S=S, E=B * S, tokens=B * S * g["n_ctx"].iloc[0]))
    return pd.DataFrame(rows, columns=["key", "N", "batch_size", "n_ctx", "lr", "target", "S", "E", "tokens"])


def best_rate_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """At each (N, batch size, target), the rate of the grid that reaches the target in the fewest
    steps (the rate re-tuned per batch size), with whether that rate is at an edge of the grid
    (a better rate may lie outside it). Targets no rate reaches are left out."""
    rows = []
    for (N, B, L), g in steps.groupby(["N", "batch_size", "target"]):
        reached = g.dropna(subset=["S"])
        if reached.empty:
            continue
        best = reached.loc[reached["S"].idxmin()]
        rates = sorted(g["lr"].unique())
        rows.append(dict(N=N, batch_size=B, target=L, n_ctx=best["n_ctx"], lr=best["lr"], S=best["S"], E=best["E"],
                         rates=len(rates), lr_at_edge=len(rates) > 1 and best["lr"] in (rates[0], rates[-1])))
    return pd.DataFrame(rows, columns=["N", "batch_size", "target", "n_ctx", "lr", "S", "E", "rates", "lr_at_edge"])


def critical_by_target(best: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """The fit S = S_min (1 + B_crit/B) at each (N, target) that at least 3 batch sizes reach:
    S_min (steps), E_min (sequences) and B_crit (tokens: sequences times n_ctx), with 95% intervals
    from a bootstrap over batch sizes; where the steps do not bend within the batch sizes, why."""
    rows = []
    for (N, L), g in best.groupby(["N", "target"]):
        n_ctx = int(g["n_ctx"].iloc[0])
        row = dict(N=N, target=L, batch_sizes=g["batch_size"].nunique(), S_min=np.nan, E_min=np.nan, B_crit=np.nan,
                   B_crit_lo=np.nan, B_crit_hi=np.nan, rmse_log=np.nan, why="")
        try:
            f = fit_critical_batch(g["batch_size"], g["S"], bootstrap=bootstrap, seed=seed)
        except FitError as e:
            row["why"] = str(e)
            rows.append(row)
            continue
        lo, hi = f.ci.get("B_crit", (np.nan, np.nan))
        row.update(S_min=f.params["S_min"], E_min=f.params["E_min"], B_crit=f.params["B_crit"] * n_ctx,
                   B_crit_lo=lo * n_ctx, B_crit_hi=hi * n_ctx, rmse_log=f.rmse_log)
        rows.append(row)
    cols = ["N", "target", "batch_sizes", "S_min", "E_min", "B_crit", "B_crit_lo", "B_crit_hi", "rmse_log", "why"]
    return pd.DataFrame(rows, columns=cols)


def pooled_noise_scale(noise: pd.DataFrame, targets: dict[int, Iterable[float]]) -> pd.DataFrame:
    """The gradient noise scale B_simple at each size and loss target, pooled over the runs and the
    points whose validation loss lies nearest that target (within half the spacing of the targets):
    the mean of tr Σ over the mean of |G|² (a ratio of means, far less biased by noisy single
    measurements than a mean of ratios; McCandlish et al. 2018, App. A). `noise` is
    `batch.noise_scale_curve`'s table, B_simple in tokens."""
    rows = []
    for N, g in noise.dropna(subset=["G2", "trace_sigma", "val_loss"]).groupby("N"):
        t = np.sort(np.asarray(list(targets.get(int(N), ())), float))
        if len(t) < 2:
            continue
        half = np.diff(t).min() / 2
        for L in t:
            near = g[(g["val_loss"] - L).abs() <= half]
            G2, tr = near["G2"].mean(), near["trace_sigma"].mean()
            rows.append(dict(N=int(N), val_loss=float(L), points=len(near),
                             B_simple=float(tr / G2) if len(near) and G2 > 0 and tr >= 0 else np.nan))
    return pd.DataFrame(rows, columns=["N", "val_loss", "points", "B_simple"])


@dataclass(frozen=True, eq=False)
class Scan:
    """The batch sweep read as the chapters read it: the targets, the steps of every run, the best
    rate's steps, the critical batch at each (size, target), and B_crit(L) fitted to them (None,
    with `why`, where it cannot be)."""

    targets: dict[int, np.ndarray]
    steps: pd.DataFrame
    best: pd.DataFrame
    crit: pd.DataFrame
    law: Any = None  # batch.CriticalBatchLossFit
    why: str = ""

    @property
    def fitted(self) -> pd.DataFrame:
        """The (size, target) pairs where the critical-batch form fitted."""
        return self.crit.dropna(subset=["B_crit"]) if len(self.crit) else self.crit


def analyse(records: Iterable[dict[str, Any]], *, bootstrap: int = 200, seed: int = 0) -> Scan:
    """`loss_targets`, `steps_table`, `best_rate_steps`, `critical_by_target`, then B_crit(L) over every
    fitted (size, target), its bootstrap resampling model sizes (a size's targets share its runs; with
    fewer than MIN_SIZES_CI sizes it has no interval)."""
    records = list(records)
    targets = loss_targets(records) if records else {}
    steps = steps_table(records, targets)
    best = best_rate_steps(steps)
    crit = critical_by_target(best, bootstrap=bootstrap, seed=seed)
    ok = crit.dropna(subset=["B_crit"])
    if ok["target"].nunique() < 3:
        return Scan(targets, steps, best, crit, None, f"{ok['target'].nunique()} loss target(s) with a fitted B_crit; "
                                                      "B_crit(L) needs at least 3")
    # the bootstrap resamples sizes: with fewer than MIN_SIZES_CI there is nothing to resample honestly
    boot = bootstrap if ok["N"].nunique() >= MIN_SIZES_CI else 0
    try:
        law = fit_bcrit_loss(ok["target"], ok["B_crit"], bootstrap=boot, seed=seed, groups=ok["N"])
    except FitError as e:
        return Scan(targets, steps, best, crit, None, str(e))
    return Scan(targets, steps, best, crit, law)


def offset_by_size(crit: pd.DataFrame, law) -> pd.Series:
    """How far each size's critical batches sit from one B_crit(L) law fitted to every size: the median over
    a size's targets of measured B_crit over the law's at that loss, by N. A loss-only law puts every size
    near 1; sizes far apart at the same loss say that the loss alone does not fix the critical batch."""
    ok = crit.dropna(subset=["B_crit"])
    ratio = ok["B_crit"].to_numpy(float) / law.predict(ok["target"].to_numpy(float))
    return pd.Series(ratio, index=ok["N"].to_numpy()).groupby(level=0).median().rename_axis("N")
