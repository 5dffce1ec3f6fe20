"""Training time (Kaplan et al. 2020, §5.2): steps and compute at the critical batch, and L(N, S_min).

A run trained at a fixed batch B took S steps and C FLOPs to reach a loss L. Had it trained at the
critical batch of that loss, it would have needed (Eqs. 5.4, 5.5)

    S_min = S / (1 + B_crit(L)/B),   C_min = C / (1 + B/B_crit(L)),

the fewest steps and the least compute that loss allows. `adjusted` applies both to learning
curves with a fitted B_crit(L) (`batch.fit_bcrit_loss`); `fit_ns` fits Eq. 1.6,
L(N, S_min) = (N_c/N)^α_N + (S_c/S_min)^α_S, to the adjusted curves (Table 3, Fig. 4 right); and
`steps_to_loss` reads the minimum steps each size needs to reach a loss (Fig. 19).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from . import fit as fitting
from .batch import bcrit_of_loss, min_compute, min_steps, steps_to_reach
from .store import curves_table, runs_table


def ladder_curves(records: Iterable[dict], tokens: float | None = None) -> pd.DataFrame:
    """The learning curves of a ladder's best run at each size (seed 0, the lowest final loss over
    its rates, among the size's runs to its grid's budget), from the end of the warmup on: the curves
    §5.2 converts to the critical batch.

    The grid's budget is `tokens` (the profile's `tune_tokens`; a run's count, whole steps, within 1% of
    it), so that neither a long run, which goes on past it at one rate, nor a rate added past an edge for
    the shorter budgets alone, which stops short of it (`plans._growth_run`), is taken for the best rate;
    without `tokens`, each size's shortest seed-0 runs (a ladder with no such shorter runs)."""
    records = list(records)
    t = runs_table(records)
    if t.empty:
        return curves_table([])
    t = t[t["seed"] == 0]
    if tokens is None:
        t = t[t["tokens"] == t.groupby("N")["tokens"].transform("min")]
    else:
        t = t[(t["tokens"] - tokens).abs() <= 0.01 * tokens]
    picks = set(t.sort_values("final_val_loss").groupby("N").head(1)["key"])
    curves = curves_table([r for r in records if r["key"] in picks])
    return curves[curves["tokens"] > curves["warmup_tokens"]].reset_index(drop=True)


def adjusted(curves: pd.DataFrame, B_star: float, alpha_B: float) -> pd.DataFrame:
    """`curves` (columns N, step, tokens, C, val_loss; one run a `key`) with B (tokens a step),
    B_crit(L) in tokens at each point's loss, S_min and C_min added (Kaplan Eqs. 5.4 and 5.5)."""
    need = {"key", "N", "step", "tokens", "C", "val_loss"}
    if not need <= set(curves.columns):
        raise KeyError(f"curves lack {', '.join(sorted(need - set(curves.columns)))}")
    if not (B_star > 0 and alpha_B > 0):
        raise ValueError(f"B* and α_B must be positive, not {B_star} and {alpha_B}")
    c = curves[(curves["step"] > 0) & np.isfinite(curves["val_loss"])].copy()
    c["B"] = c["tokens"] / c["step"]
    c["B_crit"] = bcrit_of_loss(c["val_loss"], B_star, alpha_B)
    c["S_min"] = min_steps(c["step"], c["B"], c["B_crit"])
    c["C_min"] = min_compute(c["C"], c["B"], c["B_crit"])
    return c.reset_index(drop=True)


def fit_ns(adj: pd.DataFrame, *, min_S: float = 0.0, bootstrap: int = 0, seed: int = 0) -> fitting.FitResult:
    """Eq. 1.6 to the adjusted curves' (N, S_min, loss), points with S_min above `min_S` only (the
    warmup and the first drop follow the schedule more than the law); the bootstrap resamples runs,
    whose points along one curve are not independent."""
    pts = adj[adj["S_min"] > min_S]
    if pts["N"].nunique() < 2:
        raise fitting.FitError(f"L(N, S) needs at least 2 sizes, not {pts['N'].nunique()}")
    return fitting.fit("kaplan-ns", pts["N"], pts["val_loss"], pts["S_min"], bootstrap=bootstrap, seed=seed,
                       groups=pts["key"])


def steps_to_loss(adj: pd.DataFrame, targets: Iterable[float], B_star: float, alpha_B: float) -> pd.DataFrame:
    """At each run and loss target, the steps S at which the curve first reaches the target
    (interpolated in log step; NaN where it never does) and the minimum steps at that loss,
    S_min = S/(1 + B_crit(target)/B) with B_crit(L) = B*/L^(1/α_B). Kaplan et al. Fig. 19."""
    rows = []
    for (key, N), g in adj.groupby(["key", "N"]):
        g = g.sort_values("step")
        B = float(g["B"].median())
        for L in targets:
            S = steps_to_reach(g["step"], g["val_loss"], float(L))
            rows.append(dict(key=key, N=N, target=float(L), S=S,
                             S_min=float(min_steps(S, B, bcrit_of_loss(L, B_star, alpha_B)))))
    return pd.DataFrame(rows, columns=["key", "N", "target", "S", "S_min"])


def loss_at(adj: pd.DataFrame, column: str, levels: Iterable[float]) -> pd.DataFrame:
    """At each run and level of `column` (S_min or C_min), the loss where the run's curve passes that
    level, interpolated in log `column`; NaN where the curve does not span the level. How Kaplan et
    al.'s Fig. 11 reads L at fixed steps and at fixed compute off the learning curves."""
    if column not in adj.columns:
        raise KeyError(f"the curves have no column {column!r}")
    rows = []
    for (key, N), g in adj.groupby(["key", "N"]):
        g = g.sort_values("step")
        x = np.log(np.maximum.accumulate(g[column].to_numpy(float)))  # S_min, C_min grow along a run
        for level in levels:
            lx = np.log(float(level))
            inside = x[0] <= lx <= x[-1]
            rows.append(dict(key=key, N=N, level=float(level),
                             val_loss=float(np.interp(lx, x, g["val_loss"])) if inside else np.nan))
    return pd.DataFrame(rows, columns=["key", "N", "level", "val_loss"])


def loss_at_compute(ns: dict, N, C_min: float, B_star: float, alpha_B: float, flops_per_token: float = 6.0):
    """Eq. 1.6's loss at size N after compute C_min at the critical batch (Kaplan et al. Fig. 11, left):
    the L that solves L = L(N, S_min) with S_min = C_min / (flops_per_token N B_crit(L)), since C_min =
    6 N E_min and E_min = B_crit S_min (Eqs. 5.4, 5.5). The right side falls as L grows (a higher loss
    has a smaller critical batch, so more steps), so the root is unique. `ns` holds Eq. 1.6's
    parameters; N may be an array."""
    from scipy.optimize import brentq

    from .fit import kaplan_ns

    def one(n: float) -> float:
        floor = float(kaplan_ns(n, np.inf, **ns))  # L(N): the loss with unlimited steps

        def gap(L):
            S_min = C_min / (flops_per_token * n * float(bcrit_of_loss(L, B_star, alpha_B)))
            return L - float(kaplan_ns(n, S_min, **ns))

        hi = floor * 2
        while gap(hi) < 0:
            hi *= 2
        return brentq(gap, floor * (1 + 1e-12), hi, xtol=1e-10)

    return np.vectorize(one, otypes=[float])(np.asarray(N, dtype=float))


def spanning_levels(adj: pd.DataFrame, column: str, n: int = 4, *, min_runs: int = 3) -> np.ndarray:
    """`n` levels of `column`, evenly spaced in log, from the lowest to the highest value at least
    `min_runs` runs' curves pass through: the fixed steps or computes of Fig. 11. Empty when fewer
    than `min_runs` runs exist."""
    span = adj.groupby("key")[column].agg(["min", "max"])
    if len(span) < min_runs:
        return np.array([])
    lo = np.sort(span["min"].to_numpy())[min_runs - 1]  # min_runs curves start at or below it
    hi = np.sort(span["max"].to_numpy())[-min_runs]  # min_runs curves reach it
    return np.geomspace(lo, hi, n) if hi > lo else np.array([])


def reach_targets(adj: pd.DataFrame, n: int = 4, *, min_runs: int = 3, margin: float = 0.01) -> np.ndarray:
    """`n` loss targets for Fig. 19 (the losses whose steps to reach them are read), evenly spaced from a
    loss every run's curve reaches (the highest of the runs' lowest losses, raised by the fraction
    `margin`) down to the lowest that `min_runs` runs reach (the `min_runs`-th lowest of the runs' lowest
    losses); empty with fewer than `min_runs` runs."""
    best = np.sort(adj.groupby("key")["val_loss"].min().to_numpy())
    if len(best) < min_runs:
        return np.array([])
    hi, lo = best[-1] * (1 + margin), best[min_runs - 1]
    return np.linspace(hi, lo, n) if hi > lo else np.array([])


def fixed_compute_and_steps(adj: pd.DataFrame, ns: dict, B_star: float, alpha_B: float, *, n_levels: int = 4,
                            grid: int = 60) -> dict[str, pd.DataFrame]:
    """Kaplan et al. Fig. 11 from the adjusted curves: the loss at `n_levels` fixed computes C_min and
    fixed steps S_min (`spanning_levels`), read off each run ("at_C", "at_S": key, N, level, val_loss,
    and Eq. 1.6's `predicted` loss there), and Eq. 1.6's prediction on a grid of N ("pred_C",
    "pred_S": N, level, val_loss). The FLOPs a parameter and token are the curves' own (C/(N tokens))."""
    from .fit import kaplan_ns

    k = float((adj["C"] / (adj["N"] * adj["tokens"])).median())
    Ns = np.geomspace(adj["N"].min(), adj["N"].max(), grid)

    def at_compute(N, level):
        return loss_at_compute(ns, N, level, B_star, alpha_B, k)

    def at_steps(N, level):
        return kaplan_ns(np.asarray(N, float), level, **ns)

    out = {}
    for name, column, law in (("C", "C_min", at_compute), ("S", "S_min", at_steps)):
        levels = spanning_levels(adj, column, n_levels)
        pts = loss_at(adj, column, levels).dropna(subset=["val_loss"])
        pts["predicted"] = [float(law(n, lv)) for n, lv in zip(pts["N"], pts["level"])]
        out[f"at_{name}"] = pts.reset_index(drop=True)
        out[f"pred_{name}"] = pd.DataFrame([dict(N=n, level=lv, val_loss=float(v))
                                            for lv in levels for n, v in zip(Ns, law(Ns, lv))],
                                           columns=["N", "level", "val_loss"])
    return out


def best_size_at_compute(at_C: pd.DataFrame, pred_C: pd.DataFrame) -> pd.DataFrame:
    """At each fixed compute of Fig. 11, the sizes whose curves pass it, the one among them with the
    lowest loss (N_best), and the size Eq. 1.6 puts lowest on its grid (N_eq16, at an end of the grid
    when the optimum lies outside the sizes trained); `inside` says whether N_eq16 lies strictly inside
    the grid (the sizes trained), `within_2x` whether N_best and N_eq16 differ by at most a factor of 2."""
    rows = []
    for level, g in at_C.groupby("level"):
        line = pred_C[np.isclose(pred_C["level"], level)]
        N_eq16 = line.loc[line["val_loss"].idxmin(), "N"] if len(line) else np.nan
        N_best = g.loc[g["val_loss"].idxmin(), "N"]
        rows.append(dict(C_min=level, sizes=len(g), N_best=N_best, N_eq16=N_eq16,
                         inside=bool(len(line)) and line["N"].min() < N_eq16 < line["N"].max(),
                         within_2x=bool(abs(np.log2(N_eq16 / N_best)) <= 1)))
    return pd.DataFrame(rows, columns=["C_min", "sizes", "N_best", "N_eq16", "inside", "within_2x"])
