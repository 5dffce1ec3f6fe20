"""Overfitting (Kaplan et al. 2020, §4): the loss of N parameters trained on D tokens of data.

The `overfit` sweep trains several sizes on nested subsets of the training split (D is the size of
the subset, not the tokens processed), with 10% dropout, stopped early on the validation loss; the
test loss at the early-stopping step is the measurement (`table`). From it:

- `fit_nd` fits Eq. 1.5, L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D (Table 2), with a bootstrap
  that resamples model sizes;
- `delta_L` is the overfitting of Eq. 4.2, δL = L(N, D)/L(N, ∞) − 1, against the variable that
  collapses it in Fig. 9 (right), N^(α_N/α_D)/D (`collapse_x`); `delta_L_law` is Eq. 4.3's curve;
- `data_needed` inverts it (Eq. 4.4): the data that keeps δL below a tolerance, D ≥ k N^(α_N/α_D),
  which Kaplan et al. state as D ≳ 5×10³ N^0.74 for δL < 2%, the seed-to-seed spread of their runs;
- `early_stopping` sets each early-stopped run's step beside the lower bound of Eq. 5.7 (§5.3,
  Fig. 16 left), S_stop ≳ S_c / [L(N, D) − L(N, ∞)]^(1/α_S) (`stop_bound`);
- `curve_size`, `size_curves` and `departures` follow one size's runs along training (Fig. 16 right):
  where each run's validation loss leaves the whole-split run's, and the gap between its training and
  validation loss at the early-stopping point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import fit as fitting
from .batch import bcrit_of_loss, min_steps
from .store import curves_table, runs_table

DELTA = 0.02  # Kaplan et al.'s tolerance for overfitting: about the seed-to-seed spread of their losses (§4.2)
FOLLOW = 0.01  # the relative gap to the whole-split run's validation loss at which a run is said to leave it


def table(records: Iterable[dict[str, Any]], *, loss: str = "test_loss") -> pd.DataFrame:
    """One row per run: N, D (the tokens of data it could see: the subset's size, or the whole split),
    whether it saw the whole split, the measured loss (`loss`: the test loss at the early-stopping
    step by default, or 'early_stopped_loss', the lowest validation loss), where it stopped (tokens,
    steps and epochs of data), B (tokens a step), and whether early stopping ended it
    (`stopped_early`; otherwise it ran out its token budget)."""
    records = list(records)
    t = runs_table(records)
    cols = ["N", "D", "whole_split", "L", "val_at_stop", "stop_tokens", "stop_steps", "stop_epochs", "B",
            "stopped_early", "tokens", "seed", "lr", "dropout", "key"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    if loss not in t.columns:
        raise KeyError(f"no column {loss!r} in the runs table")
    out = pd.DataFrame({
        "N": t["N"], "D": t["data_tokens"].astype(float), "whole_split": [r["config"]["data_tokens"] == 0 for r in records],
        "L": t[loss].astype(float), "val_at_stop": t["early_stopped_loss"], "stop_tokens": t["early_stopped_tokens"],
        "B": (t["batch_size"] * t["n_ctx"]).astype(float), "stopped_early": t["status"] == "early_stopped",
        "tokens": t["tokens"], "seed": t["seed"], "lr": t["lr"], "dropout": t["dropout"], "key": t["key"]})
    out["stop_epochs"] = out["stop_tokens"] / out["D"]
    out["stop_steps"] = out["stop_tokens"] / out["B"]
    return out[cols].sort_values(["N", "D"]).reset_index(drop=True)


@dataclass(frozen=True)
class NDFit:
    """Eq. 1.5 fitted, with the quantities §4 derives from it."""

    result: fitting.FitResult

    @property
    def params(self) -> dict[str, float]:
        return self.result.params

    @property
    def ratio(self) -> float:
        """α_N/α_D: the power of N in the data needed (Kaplan et al.: 0.74)."""
        return self.params["alpha_N"] / self.params["alpha_D"]

    def ratio_ci(self) -> tuple[float, float]:
        """The 95% interval of α_N/α_D over the fit's bootstrap resamples (NaN without a bootstrap)."""
        return _boot_interval(self.result, lambda boot: boot["alpha_N"] / boot["alpha_D"])

    def capped(self) -> list[str]:
        """The exponents whose interval reaches the fitter's cap (`fit.EXPONENT_CAP`): their upper end is the
        optimiser's, so anything derived from them has the corresponding end unidentified."""
        return [k for k in ("alpha_N", "alpha_D") if self.result.reaches_cap(k)]

    def ratio_ci_text(self, fmt: str = ".3f") -> str:
        """The interval of α_N/α_D as text. Where α_D's interval reaches the fitter's cap (`fit.EXPONENT_CAP`),
        the resamples at the cap make the ratio's lower end the optimiser's: only the upper end is given; where
        α_N's does, only the lower; where both do, none."""
        lo, hi = self.ratio_ci()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"n/a ({self.result.ci_missing or 'not finite in some resamples'})"
        capped = self.capped()
        if len(capped) == 2:
            return f"n/a (α_N's and α_D's {fitting.CAP_REACHED})"
        if capped == ["alpha_D"]:
            return f"≤ {hi:{fmt}} (lower end not identified: α_D's {fitting.CAP_REACHED})"
        if capped == ["alpha_N"]:
            return f"≥ {lo:{fmt}} (upper end not identified: α_N's {fitting.CAP_REACHED})"
        return fitting.interval_text(lo, hi, fmt)

    def loss(self, N, D) -> np.ndarray:
        p = self.params
        return fitting.kaplan_nd(N, D, p["alpha_N"], p["alpha_D"], p["N_c"], p["D_c"])

    def loss_infinite_data(self, N) -> np.ndarray:
        """L(N, ∞) = (N_c/N)^α_N: the D → ∞ limit of Eq. 1.5."""
        p = self.params
        return (p["N_c"] / np.asarray(N, float)) ** p["alpha_N"]


def _boot_interval(result: fitting.FitResult, stat) -> tuple[float, float]:
    """The 2.5% and 97.5% quantiles of `stat(boot_params)` over a fit's bootstrap resamples; NaN
    without at least 2 of them."""
    boot = result.boot_params
    if boot is None or len(boot) < 2:
        return (math.nan, math.nan)
    values = np.asarray(stat(boot), float)
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def fit_nd(t: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0) -> NDFit:
    """Eq. 1.5 to the table's (N, D, L); the bootstrap resamples model sizes (a size's runs share
    its shape and rate, so they are not independent)."""
    if t["N"].nunique() < 2 or t["D"].nunique() < 2:
        raise fitting.FitError(f"L(N, D) needs at least 2 sizes and 2 data sizes, not {t['N'].nunique()} and "
                               f"{t['D'].nunique()}")
    return NDFit(fitting.fit("kaplan-nd", t["N"], t["L"], t["D"], bootstrap=bootstrap, seed=seed, groups=t["N"]))


def collapse_x(N, D, ratio: float) -> np.ndarray:
    """N^(α_N/α_D)/D, the variable on which Eq. 4.3 makes δL of every size fall on one curve (Fig. 9, right)."""
    return np.asarray(N, float) ** ratio / np.asarray(D, float)


def delta_L(t: pd.DataFrame, nd: NDFit) -> np.ndarray:
    """Measured overfitting, δL = L(N, D)/L(N, ∞) − 1 (Eq. 4.2), with L(N, ∞) from the fit."""
    return t["L"].to_numpy(float) / nd.loss_infinite_data(t["N"]) - 1.0


def delta_L_law(x, nd: NDFit) -> np.ndarray:
    """Eq. 4.3 as a function of x = N^(α_N/α_D)/D: (1 + x D_c/N_c^(α_N/α_D))^α_D − 1."""
    p = nd.params
    return (1.0 + np.asarray(x, float) * p["D_c"] / p["N_c"] ** nd.ratio) ** p["alpha_D"] - 1.0


def data_needed(N, nd: NDFit, delta: float = DELTA) -> np.ndarray:
    """The fewest tokens of data that keep δL at or below `delta` (Eq. 4.4): D = k N^(α_N/α_D) with
    k = D_c / (N_c^(α_N/α_D) ((1 + δ)^(1/α_D) − 1))."""
    if not 0 < delta:
        raise ValueError(f"the tolerance δL must be positive, not {delta}")
    return data_needed_coefficient(nd, delta) * np.asarray(N, float) ** nd.ratio


def _coefficient(p, delta: float) -> float:
    ratio = p["alpha_N"] / p["alpha_D"]
    return float(p["D_c"] / (p["N_c"] ** ratio * ((1.0 + delta) ** (1.0 / p["alpha_D"]) - 1.0)))


def data_needed_coefficient(nd: NDFit, delta: float = DELTA) -> float:
    """k of `data_needed`'s D = k N^(α_N/α_D) (Kaplan et al.: about 5×10³ with N^0.74)."""
    return _coefficient(nd.params, delta)


def data_needed_coefficient_ci(nd: NDFit, delta: float = DELTA) -> tuple[float, float]:
    """The 95% interval of k over the fit's bootstrap resamples (NaN without a bootstrap)."""
    return _boot_interval(nd.result, lambda boot: [_coefficient(row, delta) for _, row in boot.iterrows()])


def data_needed_coefficient_text(nd: NDFit, delta: float = DELTA, fmt: str = ".3g") -> str:
    """k as text with its 95% interval: "k (95% interval lo–hi)"; k alone without a bootstrap; and no
    interval where α_N's or α_D's reaches the fitter's cap (`fit.EXPONENT_CAP`), since k depends on both
    and those resamples' k is then the optimiser's."""
    k = f"{data_needed_coefficient(nd, delta):{fmt}}"
    capped = nd.capped()
    if capped:
        return f"{k} (no interval: {' and '.join(capped)} {fitting.CAP_REACHED})"
    lo, hi = data_needed_coefficient_ci(nd, delta)
    return f"{k} (95% interval {fitting.interval_text(lo, hi, fmt)})" if math.isfinite(lo) else k


def stop_bound(excess, S_c: float, alpha_S: float) -> np.ndarray:
    """The lower bound on the early-stopping step, S_c / [L(N, D) − L(N, ∞)]^(1/α_S), at an excess
    loss L(N, D) − L(N, ∞); NaN where the excess is not positive. Kaplan et al. 2020, Eq. 5.7."""
    if not (S_c > 0 and alpha_S > 0):
        raise ValueError(f"S_c and α_S must be positive, not {S_c} and {alpha_S}")
    excess = np.asarray(excess, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(excess > 0, S_c / excess ** (1.0 / alpha_S), np.nan)


def early_stopping(t: pd.DataFrame, nd: NDFit, S_c: float, alpha_S: float,
                   bcrit: tuple[float, float] | None = None) -> pd.DataFrame:
    """The runs of `table` that early stopping ended, each beside Eq. 5.7's bound (Kaplan et al. 2020,
    §5.3, Fig. 16 left).

    Columns: N, D, L (the measured loss), L_inf = L(N, ∞) from `nd`, excess = L − L_inf, S_stop (the
    step of the kept model), S_min = S_stop/(1 + B_crit(L)/B) (Eq. 5.4, with B_crit(L) = B*/L^(1/α_B)
    at the validation loss of that step, `bcrit` = (B*, α_B) in tokens; NaN without it), S (the step
    compared: S_min where known, else S_stop), bound (`stop_bound`; NaN where excess ≤ 0) and above
    (S ≥ bound; False where there is no bound). S_c and α_S are those of Eq. 1.6, L(N, S_min).
    """
    es = t[t["stopped_early"]]
    out = pd.DataFrame({"N": es["N"], "D": es["D"], "L": es["L"], "L_inf": nd.loss_infinite_data(es["N"]),
                        "S_stop": es["stop_steps"].astype(float)})
    out["excess"] = out["L"] - out["L_inf"]
    if bcrit is None:
        out["S_min"] = math.nan
        out["S"] = out["S_stop"]
    else:
        B_crit = bcrit_of_loss(es["val_at_stop"].to_numpy(float), *bcrit)
        out["S_min"] = min_steps(out["S_stop"].to_numpy(float), es["B"].to_numpy(float), B_crit)
        out["S"] = out["S_min"]
    out["bound"] = stop_bound(out["excess"], S_c, alpha_S)
    out["above"] = out["S"] >= out["bound"]  # NaN compares False
    cols = ["N", "D", "L", "L_inf", "excess", "S_stop", "S_min", "S", "bound", "above"]
    return out[cols].reset_index(drop=True)


def stop_summary(es: pd.DataFrame) -> dict[str, Any]:
    """How the runs of `early_stopping` sit against Eq. 5.7's bound: `bounded` (the runs that have a
    bound, their loss above L(N, ∞)), `above` (of those, how many stopped at or after it), `share`
    (above/bounded) and `median_ratio` (the median of step/bound); NaN shares and ratios without a
    bounded run."""
    bounded = es[es["bound"].notna()]
    n = len(bounded)
    return {"bounded": n, "above": int(bounded["above"].sum()),
            "share": float(bounded["above"].mean()) if n else math.nan,
            "median_ratio": float(np.median(bounded["S"] / bounded["bound"])) if n else math.nan}


def curve_size(t: pd.DataFrame) -> int:
    """The size N of `table` with the most dataset sizes (whole split included), the largest N among
    ties: the size whose curves Fig. 16 (right) draws."""
    if t.empty:
        raise ValueError("no runs to choose a size from")
    counts = t.groupby("N")["D"].nunique()
    return int(counts[counts == counts.max()].index.max())


def size_curves(records: Iterable[dict[str, Any]], N: int) -> pd.DataFrame:
    """The learning curves (`store.curves_table`) of the runs of size N, each point with its run's D,
    whole_split and stop_tokens (the tokens of its lowest validation loss) from `table`, sorted by run
    and tokens."""
    records = [r for r in records if r["N"] == N]
    if not records:
        raise ValueError(f"no run of size N = {N}")
    t = table(records)[["key", "D", "whole_split", "stop_tokens"]]
    c = curves_table(records).merge(t, on="key", validate="many_to_one")
    for col in ("val_loss", "train_loss"):
        c[col] = pd.to_numeric(c[col], errors="coerce")  # None (no training step yet) becomes NaN
    return c.sort_values(["D", "key", "tokens"]).reset_index(drop=True)


def departures(curves: pd.DataFrame, tol: float = FOLLOW) -> pd.DataFrame:
    """For each run of one size's `size_curves`: where its validation loss leaves the whole-split run's,
    and its gap between validation and training loss at the early-stopping point (Kaplan et al. Fig. 16 right).

    The reference is the size's one whole-split run, its validation loss interpolated linearly in
    log(tokens) at the run's evaluations that lie within its own (tokens > 0). Columns: N, D,
    whole_split, stop_tokens; depart_tokens, the first of those evaluations at which
    |L_val/L_ref − 1| > `tol` (NaN if none does, and for the reference itself); depart_rel, that
    L_val/L_ref − 1; depart_share = depart_tokens/stop_tokens; compared_to, the last tokens compared
    (NaN without a reference); val_at_stop and train_at_stop, the validation and training loss at the
    evaluation of stop_tokens; gap = val_at_stop − train_at_stop (NaN where no training loss was recorded).
    """
    if not tol > 0:
        raise ValueError(f"the tolerance must be positive, not {tol}")
    if curves["N"].nunique() != 1:
        raise ValueError(f"the curves of one size, not {curves['N'].nunique()}")
    refs = curves.loc[curves["whole_split"], "key"].unique()
    if len(refs) > 1:
        raise ValueError(f"{len(refs)} whole-split runs of this size: which one is the reference is ambiguous")
    ref = None
    if len(refs):
        r = curves[(curves["key"] == refs[0]) & (curves["tokens"] > 0) & curves["val_loss"].notna()].sort_values("tokens")
        ref = (np.log(r["tokens"].to_numpy(float)), r["val_loss"].to_numpy(float)) if len(r) else None
    rows = []
    for key, c in curves.groupby("key", sort=False):
        first = c.iloc[0]
        at_stop = c[c["tokens"] == first["stop_tokens"]]
        row = dict(N=int(first["N"]), D=float(first["D"]), whole_split=bool(first["whole_split"]),
                   stop_tokens=float(first["stop_tokens"]), depart_tokens=math.nan, depart_rel=math.nan,
                   compared_to=math.nan,
                   val_at_stop=float(at_stop["val_loss"].iloc[0]) if len(at_stop) else math.nan,
                   train_at_stop=float(at_stop["train_loss"].iloc[0]) if len(at_stop) else math.nan)
        if ref is not None and not row["whole_split"]:
            pts = c[(c["tokens"] > 0) & c["val_loss"].notna()].sort_values("tokens")
            x = np.log(pts["tokens"].to_numpy(float))
            inside = (x >= ref[0][0]) & (x <= ref[0][-1])
            tokens, val = pts["tokens"].to_numpy(float)[inside], pts["val_loss"].to_numpy(float)[inside]
            rel = val / np.interp(x[inside], *ref) - 1.0
            if len(tokens):
                row["compared_to"] = tokens[-1]
            out = np.flatnonzero(np.abs(rel) > tol)
            if len(out):
                row["depart_tokens"], row["depart_rel"] = tokens[out[0]], rel[out[0]]
        rows.append(row)
    out = pd.DataFrame(rows)
    out["depart_share"] = out["depart_tokens"] / out["stop_tokens"]
    out["gap"] = out["val_at_stop"] - out["train_at_stop"]
    cols = ["N", "D", "whole_split", "stop_tokens", "depart_tokens", "depart_rel", "depart_share", "compared_to",
            "val_at_stop", "train_at_stop", "gap"]
    return out[cols].sort_values("D").reset_index(drop=True)
