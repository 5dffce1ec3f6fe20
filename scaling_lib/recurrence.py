"""Recurrent transformers against the plain ones (Kaplan et al. 2020, App. D.2, Fig. 17): the loss gap
at equal parameters and at equal compute, with a bootstrap over sizes.

A recurrent model (`arch = "ut"`, `n_recur` passes through one stack) has the parameters of the plain
model of the same shape and `n_recur` times its compute a token. At equal parameters the two are
compared size by size. At equal compute the plain models' loss is interpolated in log C (linearly
between the two plain sizes that bracket the recurrent run's compute, never beyond them), so only the
recurrent runs whose compute falls inside the plain ladder's range are compared.

The gap is log L_recurrent - log L_plain (a relative difference: -0.01 is 1% better); its mean over the
sizes gets a 95% interval from resampling the sizes. Numerics over run tables only: no torch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["n_recur", "at", "sizes", "mean_gap", "lo", "hi"]


def _interp_plain(plain: pd.DataFrame, C: float) -> float:
    """The plain ladder's loss at compute C, linear in log C and log L between its bracketing sizes (NaN outside)."""
    p = plain.sort_values("C")
    lc, ll = np.log(p["C"].to_numpy(float)), np.log(p["loss"].to_numpy(float))
    x = np.log(C)
    if len(p) < 2 or x < lc[0] or x > lc[-1]:
        return np.nan
    return float(np.exp(np.interp(x, lc, ll)))


def gaps(table: pd.DataFrame, loss: str = "final_val_loss") -> pd.DataFrame:
    """One row per recurrent run: its N, n_recur, C, loss, and its gap to the plain model at equal N
    (`gap_N`, NaN where no plain run of that N is stored) and at equal compute (`gap_C`, NaN outside
    the plain ladder's compute). `table` has columns N, C, n_recur and `loss`; n_recur 1 is the plain model."""
    t = table.rename(columns={loss: "loss"})[["N", "C", "n_recur", "loss"]]
    plain = t[t["n_recur"] == 1].groupby("N", as_index=False).agg(C=("C", "mean"), loss=("loss", "mean"))
    rec = t[t["n_recur"] > 1].copy()
    by_N = dict(zip(plain["N"], plain["loss"]))
    rec["gap_N"] = [np.log(l / by_N[n]) if n in by_N else np.nan for n, l in zip(rec["N"], rec["loss"])]
    rec["gap_C"] = [np.log(l / _interp_plain(plain, c)) for c, l in zip(rec["C"], rec["loss"])]
    return rec.sort_values(["n_recur", "N"]).reset_index(drop=True)


def summary(g: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The mean gap of each n_recur at equal parameters ("N") and at equal compute ("C"), with a 95% interval
    from `bootstrap` resamples of the sizes (none with fewer than 3 sizes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, h in g.groupby("n_recur"):
        for at, col in (("N", "gap_N"), ("C", "gap_C")):
            v = h[col].dropna().to_numpy(float)
            lo = hi = np.nan
            if len(v) >= 3 and bootstrap:
                means = rng.choice(v, size=(bootstrap, len(v))).mean(axis=1)
                lo, hi = (float(q) for q in np.percentile(means, [2.5, 97.5]))
            rows.append(dict(n_recur=int(k), at=at, sizes=len(v), mean_gap=float(v.mean()) if len(v) else np.nan,
                             lo=lo, hi=hi))
    return pd.DataFrame(rows, columns=COLUMNS)
