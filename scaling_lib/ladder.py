"""The ladder's laws in N: L(N) at a fixed budget with its extrapolation check, the joint laws
L(N, D), the exponent against the budget, the seed spread, and the table of the analyst's choices.

Every function takes a `runs_table(..., budgets=True)` (one row per run and budget; for a tuned grid,
`tuning.at_best_rate` of it) and resamples hierarchically: model sizes, then seeds within a size
(`fit.fit(groups=N, within=seed)`), so that a size with three seeds is not three independent points.
Numerics over run tables only: no torch. One helper works on the records themselves:
`runs_at_shared_budget` picks one run per size at the longest budget every size was trained to, for
what exists only at a run's final evaluation (the loss by position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from . import fit
from .pages import budget_name
from .fit import FitResult

JOINT_FORMS = ("kaplan-nd", "chinchilla")


def _fit(form: str, t: pd.DataFrame, x: str, bootstrap: int, seed: int) -> FitResult:
    x2 = t["tokens"] if form in fit.TWO_VARIABLE else None
    return fit.fit(form, t[x], t["final_val_loss"], x2=x2, bootstrap=bootstrap, seed=seed,
                   groups=t["N"], within=t["seed"])


def reach(t: pd.DataFrame) -> str:
    """'N = 768 to 786,432 to 16M tokens (1.8 epochs)' for each longest budget of a ladder (each size's longest:
    a rate added to a tuned grid past an edge may stop short of it, `plans._growth_run`)."""
    longest = t[t["is_longest"]]
    longest = longest[longest["tokens"] == longest.groupby("N")["tokens"].transform("max")]
    top = longest.groupby("tokens").agg(lo=("N", "min"), hi=("N", "max"), epochs=("epochs", "max"))
    return "; ".join(f"N = {int(r.lo):,}" + (f" to {int(r.hi):,}" if r.hi > r.lo else "")
                     + f" to {budget_name(b)} tokens ({r.epochs:.2g} epochs)"
                     for b, r in top.sort_index(ascending=False).iterrows())


def last_doubling(t: pd.DataFrame) -> str:
    """What the largest size's last doubling of tokens still took off its loss (the seeds' mean at each budget):
    'N = 1,536,000 still lost 2.9% of its loss from 8M to 16M tokens'; 'n/a' where its two longest budgets are
    not a doubling apart."""
    big = t[t["N"] == t["N"].max()]
    mean = big.groupby("tokens")["final_val_loss"].mean().sort_index()
    if len(mean) < 2 or abs(mean.index[-1] / mean.index[-2] - 2) > 0.05:  # budgets are whole steps: about 2
        return "n/a (the largest size has no doubling of tokens)"
    drop = 1 - mean.iloc[-1] / mean.iloc[-2]
    return (f"N = {int(big['N'].iloc[0]):,} still lost {drop:.1%} of its loss from {budget_name(mean.index[-2])} "
            f"to {budget_name(mean.index[-1])} tokens")


@dataclass(frozen=True, eq=False)
class FixedBudget:
    """L(N) at one budget, and the fit on all but the two largest sizes predicting those."""

    budget: int
    points: pd.DataFrame
    fit: FitResult
    extrapolation: dict[str, Any] | None  # fit.extrapolation_check's result; None below 5 sizes

    def __iter__(self):  # budget, points, fit, extrapolation = fixed_budget(...)
        return iter((self.budget, self.points, self.fit, self.extrapolation))

    def held_out_errors(self) -> str:
        return held_out_errors(self.extrapolation)


def held_out_errors(ext: dict[str, Any] | None) -> str:
    """The extrapolation error of each held-out size, averaged over its seeds ('n/a' without a check)."""
    if ext is None:
        return "n/a"
    err = pd.DataFrame(dict(N=ext["x"], e=ext["rel_error"])).groupby("N")["e"].agg(["mean", "size"])
    return ", ".join(f"{r['mean']:+.2%}" + (f" ({r['size']:.0f} seeds)" if r["size"] > 1 else "")
                     for _, r in err.iterrows())


def fixed_budget(t: pd.DataFrame, budget: int, *, bootstrap: int, seed: int = 0, x: str = "N") -> FixedBudget:
    """Fit L(N) = (N_c/N)^alpha_N at one budget (Kaplan et al. 2020, Eq. 1.1) and check it by extrapolation."""
    at = t[t["tokens"] == budget].sort_values("N")
    res = _fit("power", at, x, bootstrap, seed)
    ext = None
    if at["N"].nunique() >= 5:
        ext = fit.extrapolation_check("power", at[x].to_numpy(), at["final_val_loss"].to_numpy(), holdout=2,
                                      by=at["N"].to_numpy())
    return FixedBudget(int(budget), at, res, ext)


def joint(t: pd.DataFrame, *, bootstrap: int, seed: int = 0, x: str = "N",
          forms: tuple[str, ...] = JOINT_FORMS) -> dict[str, FitResult]:
    """The joint laws on every finite (size, budget) point: Kaplan's L(N, D) (Eq. 1.5) and Chinchilla's
    E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Eq. 2), by form."""
    ok = finite(t)
    return {form: _fit(form, ok, x, bootstrap, seed) for form in forms}


def finite(t: pd.DataFrame) -> pd.DataFrame:
    """The points with a finite loss (a diverged budget is left out of a fit)."""
    return t[np.isfinite(t["final_val_loss"])]


def alpha_by_budget(t: pd.DataFrame, *, bootstrap: int, seed: int = 0) -> pd.DataFrame:
    """alpha_N fitted at every budget on the same sizes: those that reached the longest budget held
    by 3 or more sizes. Columns: budget, sizes, alpha_N, lo, hi, ci."""
    sizes = t.groupby("tokens")["N"].nunique()
    top = sizes[sizes >= 3].index.max()
    same = t[t["N"].isin(t.loc[t["tokens"] == top, "N"])]
    rows = []
    for budget, g in same.groupby("tokens"):
        if g["N"].nunique() < sizes[top]:
            continue  # a budget that only some of these sizes went on to
        res = _fit("power", g, "N", bootstrap, seed)
        lo, hi = res.interval("alpha")  # NaN where the bootstrap gave no interval
        rows.append(dict(budget=int(budget), sizes=g["N"].nunique(), alpha_N=res.params["alpha"], lo=lo, hi=hi,
                         ci=res.ci_text("alpha")))
    return pd.DataFrame(rows, columns=["budget", "sizes", "alpha_N", "lo", "hi", "ci"])


def budget_trend(by_budget: pd.DataFrame, last: int = 2) -> dict[str, Any]:
    """How the fixed-budget exponent moves as the budget doubles (`alpha_by_budget`'s rows): `moves`, 'rises'
    or 'falls' from the first budget to the last; `steps`, how many doublings moved it that way, of
    `doublings`; and `levelled`, False while each of the `last` doublings still raises it (then the budgets
    do not identify the limit it tends to; one early fall inside the noise does not make it level)."""
    a = by_budget.sort_values("budget")["alpha_N"].to_numpy(float)
    if len(a) < 2:
        raise ValueError(f"a trend needs at least 2 budgets, not {len(a)}")
    d = np.diff(a)
    rises = bool(a[-1] > a[0])
    return dict(moves="rises" if rises else "falls", steps=int((d > 0).sum() if rises else (d < 0).sum()),
                doublings=len(d), levelled=not bool((d[-last:] > 0).all()))


def chinchilla_local_alpha(res: FitResult, N) -> np.ndarray:
    """The local slope -d log L / d log N of Chinchilla's infinite-data L(N) = E + A/N^alpha at N: the
    quantity Kaplan's alpha_N measures (a slope of L itself). alpha alone is the slope of L - E, so the two
    fits' exponents compare only through this."""
    p = res.params
    reducible = p["A"] * np.asarray(N, float) ** -p["alpha"]
    return p["alpha"] * reducible / (p["E"] + reducible)


def seed_spread(t: pd.DataFrame) -> pd.DataFrame:
    """The seed-to-seed spread of each size with several seeds, at the longest budget all its seeds
    reached: columns N, seeds, budget, mean_loss, rel_std (sample standard deviation over the mean)."""
    rows = []
    for N, g in t.groupby("N"):
        seeds = g["seed"].nunique()
        if seeds < 2:
            continue
        shared = g.groupby("tokens")["seed"].nunique()
        budget = shared[shared == seeds].index.max()
        at = g.loc[g["tokens"] == budget, "final_val_loss"]
        rows.append(dict(N=int(N), seeds=seeds, budget=int(budget), mean_loss=at.mean(),
                         rel_std=at.std(ddof=1) / at.mean()))
    return pd.DataFrame(rows, columns=["N", "seeds", "budget", "mean_loss", "rel_std"])


def nearest_seed_spread(spread: pd.DataFrame, N: float) -> dict[str, Any] | None:
    """The row of a `seed_spread` table (as a dict) whose size is nearest N in log N, the first of two as near
    (the smaller, in its order): the seed-to-seed spread a single run of N can borrow. None without a row."""
    if not len(spread):
        return None
    return spread.to_dict("records")[int(np.argmin(np.abs(np.log(spread["N"].to_numpy(float) / N))))]


# ---------------------------------------------------------------------------------------------
# The analyst's choices
# ---------------------------------------------------------------------------------------------
def _drop_one_layer(t):
    return t[t["n_layer"] > 1], "N"


def _drop_shortest(t):
    return t[t["tokens"] > t["tokens"].min()], "N"


def _from_4m(t):
    # a choice made after the warmup run at 786k: below 4M tokens, the capped warmup of the tuned ladder's sizes
    # above 25k costs them more than 1% of the loss there (the model-size chapter)
    return t[t["tokens"] >= 0.99 * 4_000_000], "N"


def _one_per_width(t):
    # N counts depth and width alike; at a width the ladder holds at several depths, only the shallowest stays
    shallowest = t.groupby("d_model")["n_layer"].transform("min")
    return t[t["n_layer"] == shallowest], "N"


def _total(t):
    return t, "N_total"


def _exact(t):
    # the parameters that Kaplan's 6ND would need to give the exact count (embeddings, attention, output)
    return t.assign(N_exact=t["C_exact"] / (6 * t["tokens"])), "N_exact"


BOOK_CHOICE = "as fitted in the book"
CHOICES: dict[str, Callable[[pd.DataFrame], tuple[pd.DataFrame, str]]] = {
    BOOK_CHOICE: lambda t: (t, "N"),
    "1-layer sizes left out (as Kaplan et al. do)": _drop_one_layer,
    "shortest budget left out": _drop_shortest,
    "budgets below 4M left out (chosen after the warmup run)": _from_4m,
    "all parameters N_total in place of N": _total,
    "N from the exact compute, C_exact / 6D": _exact,
    "one size per width (a deeper size of a width left out)": _one_per_width,
}
CHOICE_COLUMNS = ["choice", "sizes", "points", "fixed_budget", "fixed_alpha_N", "fixed_alpha_N_ci", "nd_alpha_N", "nd_alpha_N_ci",
                  "nd_alpha_D", "nd_alpha_D_ci", "ch_alpha", "ch_alpha_ci", "ch_beta", "ch_beta_ci"]
# (column, form, parameter): the exponents the table reports
EXPONENTS = (("fixed_alpha_N", "power", "alpha"), ("nd_alpha_N", "kaplan-nd", "alpha_N"),
             ("nd_alpha_D", "kaplan-nd", "alpha_D"), ("ch_alpha", "chinchilla", "alpha"),
             ("ch_beta", "chinchilla", "beta"))


def choices(t: pd.DataFrame, *, bootstrap: int, seed: int = 0,
            book: Mapping[str, FitResult] | None = None,
            readings: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The exponents under each choice an analyst makes (one change at a time from the book's fit):
    L(N) at the longest budget every size reached, Kaplan's L(N, D) and Chinchilla's form, each
    with its hierarchical bootstrap interval. A choice that leaves under 3 sizes gives NaN.

    `book`: fits of the book's own choice (BOOK_CHOICE) that the caller already holds, by form ("power" for L(N)
    at that budget, as `fixed_budget` fits it; the `joint` forms), used as they are in place of fitting them
    again; a fit whose point count is not the choice's raises ValueError. `readings`: other tables of the same
    runs, read another way (e.g. each best rate named on the grid's seed alone: `tuning.at_best_rate`), by the
    choice's name; each is fitted as the book's choice is, one more row after the others."""
    chosen = [(name, choose, t) for name, choose in CHOICES.items()]
    chosen += [(name, CHOICES[BOOK_CHOICE], other) for name, other in (readings or {}).items()]
    rows = []
    for name, choose, table in chosen:
        sub, x = choose(finite(table))
        row: dict[str, Any] = dict(choice=name, sizes=sub["N"].nunique(), points=len(sub), fixed_budget=np.nan)
        fits: dict[str, FitResult | str] = dict.fromkeys(("power", *JOINT_FORMS), "n/a (fewer than 3 sizes)")
        if row["sizes"] >= 3:
            longest = row["fixed_budget"] = int(sub.groupby("N")["tokens"].max().min())
            for form in fits:
                pts = sub[sub["tokens"] == longest] if form == "power" else sub
                held = (book or {}).get(form) if name == BOOK_CHOICE else None
                if held is not None:
                    if held.n_points != len(pts):
                        raise ValueError(f"the {form} fit given for {name!r} has {held.n_points} points; the "
                                         f"choice has {len(pts)}")
                    fits[form] = held
                    continue
                try:
                    fits[form] = _fit(form, pts, x, bootstrap, seed)
                except fit.FitError as e:  # reported in the table, not raised: the other choices still show
                    fits[form] = f"n/a (the fit failed: {e})"
        for col, form, param in EXPONENTS:
            res = fits[form]
            ok = isinstance(res, FitResult)
            row[col] = res.params[param] if ok else np.nan
            row[f"{col}_ci"] = res.ci_text(param, ".3f") if ok else res
        rows.append(row)
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS)


def choice_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Each exponent's value as fitted in the book, its bootstrap interval, and its range over the
    choices: the uncertainty the bootstrap does not see. Columns: exponent, book, ci, lo, hi, spread."""
    base = table.set_index("choice").loc[BOOK_CHOICE]
    rows = []
    for col, _, _ in EXPONENTS:
        v = table[col].dropna()
        rows.append(dict(exponent=col, book=base[col], ci=base[f"{col}_ci"], lo=v.min(), hi=v.max(),
                         spread=v.max() - v.min()))
    return pd.DataFrame(rows)


def same_rate_gaps(fixed: pd.DataFrame, grid: pd.DataFrame, *, within: float = 1.1,
                   loss: str = "final_val_loss") -> pd.DataFrame:
    """Two ladders that differ in how their rate was set may differ in more (the warmup, the evaluation): at
    the sizes where the tuned grid holds nearly the fixed-rule ladder's rate (within a factor `within`, the
    grid's rate nearest in log), the two runs of nearly one rate, budget by budget, show what the rest does.
    The grid's runs are those of the seeds the fixed ladder holds at that size (the same initialisation and
    data order), where it has any; else all of its seeds. One row per shared (N, tokens): lr_fixed, lr_grid,
    loss_fixed and loss_grid (each averaged over those seeds and repeated runs), seeds (how many the grid's
    side averages), gap = loss_grid / loss_fixed − 1, and spread: the grid's loss over all its seeds at that
    rate, highest over lowest, minus one (0 with one seed), the noise a gap is read against. Budgets as runs
    store them (whole steps)."""
    cols = ["N", "tokens", "lr_fixed", "lr_grid", "loss_fixed", "loss_grid", "seeds", "gap", "spread"]
    rows = []
    for N, g in grid.groupby("N"):
        mine = fixed[fixed["N"] == N]
        if mine.empty:
            continue
        lr_fixed, rates = mine["lr"].iloc[0], np.unique(g["lr"].to_numpy(float))
        lr_grid = rates[np.argmin(np.abs(np.log(rates / lr_fixed)))]
        if abs(math.log(lr_grid / lr_fixed)) > math.log(within):
            continue
        at = g[np.isclose(g["lr"], lr_grid)]
        spread = at.groupby(["tokens", "seed"])[loss].mean().groupby("tokens").agg(lambda x: x.max() / x.min() - 1)
        shared = at[at["seed"].isin(mine["seed"])]
        at, f = (shared, mine[mine["seed"].isin(shared["seed"])]) if len(shared) else (at, mine)
        f = f.groupby("tokens", as_index=False).agg(loss_fixed=(loss, "mean"))
        a = at.groupby("tokens", as_index=False).agg(loss_grid=(loss, "mean"), seeds=("seed", "nunique"))
        rows.append(f.merge(a, on="tokens").assign(N=N, lr_fixed=lr_fixed, lr_grid=lr_grid,
                                                   spread=lambda d: d["tokens"].map(spread)))
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.concat(rows, ignore_index=True)
    return out.assign(gap=out["loss_grid"] / out["loss_fixed"] - 1)[cols]


def runs_at_shared_budget(records: Iterable[dict[str, Any]]) -> tuple[int | None, list[dict[str, Any]]]:
    """One run per size, all trained to one token budget: the longest planned budget (`config.tokens`)
    that every size has a run of its own to. What only a run's final evaluation records (the loss by
    position, not kept at the cooldown branches) then compares sizes at equal training, not each
    size's longest run. Of several runs of a size at that budget, the lowest seed's (a record given
    twice, by key, counts once). Returns (that budget, the runs by N); (None, []) where the sizes
    share no budget or there are no records."""
    by_size: dict[int, dict[int, dict[str, Any]]] = {}
    for r in {r["key"]: r for r in records}.values():
        budget, seed = int(r["config"]["tokens"]), int(r["config"].get("seed", 0))
        kept = by_size.setdefault(int(r["N"]), {}).get(budget)
        if kept is None or seed < int(kept["config"].get("seed", 0)):
            by_size[int(r["N"])][budget] = r
    shared = set.intersection(*(set(b) for b in by_size.values())) if by_size else set()
    if not shared:
        return None, []
    budget = max(shared)
    return budget, [by_size[N][budget] for N in sorted(by_size)]
