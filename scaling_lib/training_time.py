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
from .batch import bcrit_of_loss, steps_to_reach
from .store import curves_table, runs_table


def ladder_curves(records: Iterable[dict]) -> pd.DataFrame:
    """The learning curves of a ladder's best run at each size (seed 0, the lowest final loss over
    its rates), from the end of the warmup on: the curves §5.2 converts to the critical batch."""
    records = list(records)
    t = runs_table(records)
    if t.empty:
        return curves_table([])
    picks = set(t[t["seed"] == 0].sort_values("final_val_loss").groupby("N").head(1)["key"])
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
    c["S_min"] = c["step"] / (1.0 + c["B_crit"] / c["B"])
    c["C_min"] = c["C"] / (1.0 + c["B"] / c["B_crit"])
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
                             S_min=S / (1.0 + float(bcrit_of_loss(L, B_star, alpha_B)) / B)))
    return pd.DataFrame(rows, columns=["key", "N", "target", "S", "S_min"])
