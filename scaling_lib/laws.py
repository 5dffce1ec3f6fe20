"""The papers' published constants, and the reductions of run tables that the chapters share.

Numerics over tables of runs only (numpy, pandas): no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

# Kaplan et al. 2020, Tables 2-6 and §1.2 (WebText2, BPE 50257, n_ctx 1024); C in PF-days.
KAPLAN = {
    "L(N)": dict(alpha_N=0.076, N_c=8.8e13),
    "L(D)": dict(alpha_D=0.095, D_c=5.4e13),
    "L(C)": dict(alpha_C=0.057, C_c=1.6e7),
    "L(C_min)": dict(alpha_C=0.050, C_c=3.1e8),
    "L(N,D)": dict(alpha_N=0.076, alpha_D=0.103, N_c=6.4e13, D_c=1.8e13),
    "L(N,S)": dict(alpha_N=0.077, alpha_S=0.76, N_c=6.5e13, S_c=2.1e3),
    "B_crit(L)": dict(alpha_B=0.21, B_star=2.1e8),  # Eq. 1.4 / 5.3, B* in tokens
}
# How a growing budget splits (Kaplan et al. 2020, Table 6 / Fig. 3): N ∝ C^0.73, B ∝ C^0.24, S_min ∝ C^0.03.
KAPLAN_SPLIT = dict(N=0.73, B=0.24, S=0.03)
# Hoffmann et al. 2022 (Approach 3) and Besiroglu et al. 2024 (the replication).
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BESIROGLU = dict(E=1.82, A=482.0, B=2085.4, alpha=0.348, beta=0.366)
# N_opt ∝ C^a: Kaplan et al. 2020, Eq. 6.1 (Table 6); Hoffmann et al. 2022, Table 2, by approach (1: the
# training-curve envelope, 2: IsoFLOP profiles, 3: the parametric fit); Besiroglu et al. 2024's refit of 3.
ALLOCATION_A = {"kaplan": 0.73, 1: 0.50, 2: 0.49, 3: 0.46, "besiroglu": 0.513}
FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6 N D (Kaplan et al. 2020, §2.1; Hoffmann et al. 2022, §3)


class Law(Protocol):
    """What the planner needs of a law: its loss, its optimum under a FLOP budget, its fitted range."""

    name: str
    C_range: tuple[float, float]  # FLOPs
    range_source: str
    N_counts: str  # which parameters N counts

    def loss(self, N, D) -> np.ndarray: ...

    def optimum(self, C: float) -> dict[str, float]: ...


def lr_rule_kaplan(N: float) -> float:
    """Kaplan et al. 2020, Eq. D.1: LR(N) = 0.003239 - 0.0001395 ln N."""
    return 0.003239 - 0.0001395 * math.log(N)


def best_per_group(df: pd.DataFrame, by: str | list[str], loss: str = "final_val_loss") -> pd.DataFrame:
    """The row with the lowest loss in each group (e.g. the best learning rate of each size)."""
    ok = df[np.isfinite(df[loss])]
    return ok.loc[ok.groupby(by)[loss].idxmin()].reset_index(drop=True)


def fixed_budgets(t: pd.DataFrame, min_sizes: int = 6) -> list[int]:
    """The budgets at which to read L(N) off a ladder's (size, budget) table.

    The longest budget that every size reached; then, if longer, the longest that at least
    `min_sizes` sizes reached (enough to fit on all but two and predict those).
    """
    common = t.groupby("N")["tokens"].max().min()
    sizes = t.groupby("tokens")["N"].nunique()
    enough = sizes.index[sizes >= min_sizes]
    return [int(common)] + ([int(enough.max())] if len(enough) and enough.max() > common else [])


def parabola_minimum(x: np.ndarray, y: np.ndarray) -> float:
    """Where a parabola through the lowest point and its two neighbours has its minimum (x on a log scale).

    Used for the best learning rate between grid points; at a grid edge it returns the edge.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        return float(x[i])
    lx = np.log(x[i - 1 : i + 2])
    a, b, _ = np.polyfit(lx, y[i - 1 : i + 2], 2)
    if a <= 0:
        return float(x[i])
    return float(np.exp(np.clip(-b / (2 * a), lx[0], lx[-1])))


def lr_penalty(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """How much higher (relatively) the loss is at rate `at` than at the best rate.

    Both are read off the parabola (in log rate) through the lowest grid point and its two
    neighbours; NaN where that parabola is not a minimum or `at` lies outside those three rates.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1 or not x[i - 1] <= at <= x[i + 1]:
        return float("nan")
    poly = np.polyfit(np.log(x[i - 1 : i + 2]), y[i - 1 : i + 2], 2)
    if poly[0] <= 0:
        return float("nan")
    best = np.polyval(poly, -poly[1] / (2 * poly[0]))
    return float(np.polyval(poly, np.log(at)) / best - 1)


def envelope(curves: pd.DataFrame, x: str = "C", y: str = "val_loss", n_bins: int = 40) -> pd.DataFrame:
    """The lower envelope of many learning curves: the best loss any run reached by each x (Kaplan Fig. 2)."""
    c = curves[(curves[x] > 0) & np.isfinite(curves[y])]
    edges = np.logspace(np.log10(c[x].min()), np.log10(c[x].max()), n_bins + 1)
    # 10**log10(C) is not C: the last edge came out at 75492640161791.9 for a largest C of
    # 75492640161792.0, and the run that holds the top of the envelope fell outside every bin.
    edges[0], edges[-1] = c[x].min(), c[x].max()
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        upto = c[c[x] <= hi]
        if upto.empty:
            continue
        best = upto.loc[upto[y].idxmin()]
        rows.append({x: hi, y: best[y], "N": best["N"], "key": best["key"]})
    env = pd.DataFrame(rows).drop_duplicates(subset=[y], keep="first")
    return env.reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class EnvelopeFit:
    """L(C) fitted to a lower envelope: the envelope, the part fitted, the fit and its block length."""

    envelope: pd.DataFrame
    fitted: pd.DataFrame
    fit: Any  # fit.FitResult
    block: int  # points in a bootstrap block: the mean stretch that one run holds, at least n^(1/3)
    stretches: int  # runs' stretches in the fitted part (consecutive points held by one run)

    def __iter__(self):  # env, env_fit, res = envelope_fit(...)
        return iter((self.envelope, self.fitted, self.fit))


def envelope_fit(curves: pd.DataFrame, x: str = "C", *, bootstrap: int = 0, seed: int = 0,
                 y: str = "val_loss", min_stretches: int = 3) -> EnvelopeFit:
    """A power law L(x) fitted to the lower envelope of learning curves (Kaplan et al. 2020, Fig. 1 left).

    The start of training is skipped, where the smallest model holds the envelope only because every
    run is at its first steps. Neighbouring envelope points come from the same run and are not
    independent: the interval is a moving-block bootstrap whose block is the mean stretch that one run
    holds, and at least n^(1/3) points; there is none (bootstrap 0) when the fitted part has fewer
    than `min_stretches` such stretches.
    """
    from . import fit

    env = envelope(curves[curves["step"] > 0] if "step" in curves else curves, x=x, y=y)
    start = env.index[env["N"] != env["N"].iloc[0]]
    fitted = env.loc[start[0]:] if len(start) and len(env) - start[0] >= 4 else env
    runs = (fitted["key"] != fitted["key"].shift()).cumsum()
    lengths = runs.value_counts()
    # at least the mean stretch that one run holds, and at least n^(1/3) (Hall, Horowitz & Jing 1995)
    block = int(max(math.ceil(lengths.mean()), math.ceil(len(fitted) ** (1 / 3))))
    enough = len(lengths) >= min_stretches and len(fitted) >= 2 * block
    res = fit.fit("power", fitted[x], fitted[y], bootstrap=bootstrap if enough else 0, seed=seed,
                  block=block if enough and bootstrap else None)
    return EnvelopeFit(env, fitted, res, block, len(lengths))


def pf_days(C: np.ndarray | float) -> np.ndarray | float:
    """FLOPs to PF-days, the unit of Kaplan's compute constants."""
    return np.asarray(C) / 8.64e19


def loglog_interp(x, xs, ys) -> np.ndarray:
    """ys at x, interpolated linearly in log-log between the two nearest of xs (no fit); NaN outside xs.

    How a family's loss is read at another family's sizes (the transformer at each LSTM's N).
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    order = np.argsort(xs)
    return np.exp(np.interp(np.log(np.asarray(x, float)), np.log(xs[order]), np.log(ys[order]),
                            left=np.nan, right=np.nan))


def gap_at_equal(a: pd.DataFrame, b: pd.DataFrame, on: str, loss: str = "final_val_loss") -> np.ndarray:
    """a's loss over b's, minus one, with b's loss read at each of a's values of `on` (`loglog_interp`
    between b's two nearest rows; NaN outside b's range): the LSTM against the transformer at equal N, at
    equal compute per token (`on="flops_per_token"`) or at equal total parameters (`on="N_total"`)."""
    if len(b) < 2:
        return np.full(len(a), np.nan)
    return a[loss].to_numpy(float) / loglog_interp(a[on], b[on], b[loss]) - 1


def nearest_rates(a: pd.DataFrame, b: pd.DataFrame, loss: str = "final_val_loss") -> pd.Series | None:
    """Of the sizes N that two runs tables both hold (one row a size), the one where their peak rates `lr` lie
    nearest in log: N, lr_a, lr_b, loss_a, loss_b and `gap` (loss_b / loss_a − 1). Where two sets of runs
    differ in their rate and in more (warmup, evaluation, seeds), the gap at nearly one rate measures the
    rest. None where they share no size."""
    both = a[["N", "lr", loss]].merge(b[["N", "lr", loss]], on="N", suffixes=("_a", "_b"))
    if both.empty:
        return None
    row = both.iloc[int(np.argmin(np.abs(np.log(both["lr_b"] / both["lr_a"]))))]
    return pd.Series(dict(N=int(row["N"]), lr_a=float(row["lr_a"]), lr_b=float(row["lr_b"]), loss_a=float(row[f"{loss}_a"]),
                          loss_b=float(row[f"{loss}_b"]), gap=float(row[f"{loss}_b"] / row[f"{loss}_a"] - 1)))


def degenerate_position_fits(by_size: pd.DataFrame, *, c_min: float = 0.05) -> pd.Series:
    """Which fits of `fit_loss_by_position` (rows with its a and c) are degenerate: the offset a at its bound of
    0, or c below `c_min`. Then L(T) is close to linear in log T, a, b and c trade off, and c is not comparable
    with other sizes'."""
    return (by_size["a"] <= 1e-6) | (by_size["c"] < c_min)


def fit_loss_by_position(T, loss, *, T_min: int = 1, bootstrap: int = 0, seed: int = 0, groups=None):
    """L(T) = a + b T^(-c), the loss at context position T (Kaplan et al. 2020, App. D.5, Fig. 20 left).

    The `power-offset` form of `fit.fit` (E = a, A = b, alpha = c), fitted in log L, on the
    positions from `T_min` on (the first token is predicted from its own embedding alone, a
    unigram, and may sit off the law). The bootstrap resamples positions, or whole `groups` (the
    runs, where several runs' positions are fitted together). Returns the fit's FitResult.
    """
    from . import fit  # scipy, for this fit only

    T, loss = np.asarray(T, float), np.asarray(loss, float)
    keep = T >= T_min
    if groups is not None:
        groups = np.asarray(groups)[keep]
    return fit.fit("power-offset", T[keep], loss[keep], bootstrap=bootstrap, seed=seed, groups=groups)
