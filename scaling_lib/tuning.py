"""The best learning rate of every (size, budget) of a tuned grid, and the rule LR*(N, D) fitted to them.

A tuned grid (the `tune` sweep) trains each size at several peak rates in x2 steps, every run to the
longest budget with cooldown branches at every doubling, so each (N, D) has its own best rate. Two
readings of that best, kept apart because they are different claims:

- the grid's best run: a loss that was measured;
- the minimum of the parabola in log rate through the best run and its two neighbours: a rate
  between grid points, and a loss that no run measured (an interpolation).

The rule LR*(N, D) = A N^a D^b is fitted (least squares in log space) to the parabola minima of the
(N, D) whose best run lies strictly inside the grid; an edge best says only that the optimum lies
beyond the grid, so it is left out and counted. Numerics over run tables only: no torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import laws
from .fit import interval_text

# Where the fitted rule is filed, under a store's root (runs/rules/, which the store skips): the
# sweeps planned after the tuned ladder read their rates from it (plans.rule_lr).
RULE_FILE = "rules/lr.json"

COLUMNS = ["N", "tokens", "rates", "inside", "lr_grid", "loss_grid", "lr_star", "loss_star", "seeds"]


def best_rates(t: pd.DataFrame, loss: str = "final_val_loss") -> pd.DataFrame:
    """One row per (N, tokens) of a `runs_table(..., budgets=True)` of a tuned grid.

    `lr_grid`, `loss_grid`: the grid's best run (seed losses averaged at each rate); `inside`: it is
    not at either end of the grid; `lr_star`, `loss_star`: the parabola's minimum in log rate through
    it and its neighbours (the grid's best again where it is at an edge or the parabola opens down).
    A diverged run counts as the worst loss at its rate.
    """
    if t.empty:
        return pd.DataFrame(columns=COLUMNS)
    t = t.assign(**{loss: t[loss].where(np.isfinite(t[loss]), np.inf)})
    rows = []
    for (N, tokens), g in t.groupby(["N", "tokens"]):
        by_lr = g.groupby("lr").agg(loss=(loss, "mean"), seeds=("seed", "nunique")).sort_index()
        lrs, ls = by_lr.index.to_numpy(float), by_lr["loss"].to_numpy(float)
        i = int(np.argmin(ls))
        inside = 0 < i < len(lrs) - 1 and bool(np.isfinite(ls[i - 1 : i + 2]).all())
        lr_star, loss_star = float(lrs[i]), float(ls[i])
        if inside:
            poly = np.polyfit(np.log(lrs[i - 1 : i + 2]), ls[i - 1 : i + 2], 2)
            lr_star = laws.parabola_minimum(lrs[i - 1 : i + 2], ls[i - 1 : i + 2])
            loss_star = float(np.polyval(poly, math.log(lr_star)))
        rows.append(dict(N=int(N), tokens=int(tokens), rates=len(lrs), inside=inside, lr_grid=float(lrs[i]),
                         loss_grid=float(ls[i]), lr_star=lr_star, loss_star=loss_star,
                         seeds=int(by_lr["seeds"].iloc[i])))
    return pd.DataFrame(rows, columns=COLUMNS)


MARGIN_COLUMNS = ["N", "tokens", "lr_best", "margin", "spread", "seeds", "under", "lr_mean", "lr_next",
                  "paired_seeds", "paired", "paired_wins"]


def rate_margins(t: pd.DataFrame, loss: str = "final_val_loss") -> pd.DataFrame:
    """How firmly a tuned grid names its best rate, at each (N, tokens) whose best rate has more than one seed.

    On the grid's seed (the lowest: every rate has its run), `lr_best` and `margin`, the next rate's loss over
    the best's, minus one: how far the best leads on one initialisation and data order. `spread`: at `lr_best`,
    the highest seed's loss over the lowest's, minus one, over its `seeds`. `under`: the margin is below the
    spread, so another seed could reorder the rates (the other rates have one seed each, so the paired
    difference itself is not measured). `lr_mean`: the best rate when each rate's seeds are averaged, as
    `best_rates` reads it; it differs from `lr_best` where the extra seeds of one rate move it past another.
    `lr_next`: the next rate on the grid's seed. Where it has seeds too (`plans` seeds the runner-up where the
    best's seeds lift its mean above it), the paired comparison over the `paired_seeds` the two share: `paired`,
    the next rate's mean over the best's, minus one (NaN under two shared seeds), and `paired_wins`, on how many
    of those seeds the best rate is the lower. Diverged runs (infinite losses) lose."""
    if t.empty:
        return pd.DataFrame(columns=MARGIN_COLUMNS)
    t = t.assign(**{loss: t[loss].where(np.isfinite(t[loss]), np.inf)})
    grid_seed = t["seed"].min()
    means = best_rates(t, loss).set_index(["N", "tokens"])["lr_grid"]
    rows = []
    for (N, tokens), g in t.groupby(["N", "tokens"]):
        one = g[g["seed"] == grid_seed].groupby("lr")[loss].mean().sort_values()
        if len(one) < 2:
            continue
        best = one.index[0]
        by_seed = g[np.isclose(g["lr"], best)].groupby("seed")[loss].mean()
        if len(by_seed) < 2:
            continue
        margin, spread = one.iloc[1] / one.iloc[0] - 1, by_seed.max() / by_seed.min() - 1
        nxt = g[np.isclose(g["lr"], one.index[1])].groupby("seed")[loss].mean()
        shared = by_seed.index.intersection(nxt.index)
        paired = (nxt[shared].mean() / by_seed[shared].mean() - 1) if len(shared) > 1 else np.nan
        rows.append(dict(N=int(N), tokens=int(tokens), lr_best=float(best), margin=float(margin),
                         spread=float(spread), seeds=len(by_seed), under=bool(margin < spread),
                         lr_mean=float(means.loc[(N, tokens)]), lr_next=float(one.index[1]),
                         paired_seeds=len(shared), paired=float(paired),
                         paired_wins=int((by_seed[shared] < nxt[shared]).sum())))
    return pd.DataFrame(rows, columns=MARGIN_COLUMNS)


def rule_penalty(t: pd.DataFrame, rule, *, snap=None, loss: str = "final_val_loss") -> pd.DataFrame:
    """What a rule's rate costs at each (N, tokens) of a tuned grid whose best rate is inside it: the loss at the
    rule's rate over the loss at the best rate, minus one, both read off the parabola in log rate through the
    best run and its neighbours (`laws.lr_penalty`, on each rate's mean over its seeds); NaN where the rule's rate
    falls outside those three rates. `rule(N, D)` gives the rate; `snap` (e.g. `plans.lattice_rate`) rounds it as
    the sweeps do. Columns: N, tokens, lr_rule, penalty."""
    best = best_rates(t, loss)
    rows = []
    for r in best[best["inside"]].itertuples():
        g = t[(t["N"] == r.N) & (t["tokens"] == r.tokens)].groupby("lr")[loss].mean()
        lr = float(rule(r.N, r.tokens))
        lr = float(snap(lr)) if snap else lr
        rows.append(dict(N=int(r.N), tokens=int(r.tokens), lr_rule=lr,
                         penalty=laws.lr_penalty(g.index.to_numpy(float), g.to_numpy(float), lr)))
    return pd.DataFrame(rows, columns=["N", "tokens", "lr_rule", "penalty"])


def optimum(g: pd.DataFrame, loss: str = "final_val_loss") -> pd.Series:
    """The best rate of one size of a single-budget sweep: `lr_best`, the parabola's minimum in log
    rate (`laws.parabola_minimum`); `lr_grid_best` and `loss_at_best`, the grid's best run; `at_edge`,
    whether that run is the lowest or highest rate; `n_lr`, the rates tried."""
    g = g.sort_values("lr")
    ls = g[loss].to_numpy(float)
    i = int(np.argmin(ls))
    return pd.Series(dict(lr_best=laws.parabola_minimum(g["lr"], g[loss]), lr_grid_best=g["lr"].iloc[i],
                          loss_at_best=ls[i], at_edge=i in (0, len(g) - 1), n_lr=len(g)))


NAMED_ON = ("mean", "grid seed")


def at_best_rate(t: pd.DataFrame, loss: str = "final_val_loss", *, named_on: str = "mean") -> pd.DataFrame:
    """The rows of a tuned grid's `runs_table(..., budgets=True)` at their (N, tokens)'s best rate
    (`best_rates`' `lr_grid`), every seed: the measured L(N, D) points the chapters fit.

    `named_on`: how the best rate is named. "mean" (the book's): on each rate's loss averaged over its seeds,
    so the extra seeds of one rate can move it past another's single run (`rate_margins`). "grid seed": on the
    grid's seed alone (the lowest, which every rate has), one initialisation and data order for all rates; the
    rows kept are still every seed at the rate so named."""
    if named_on not in NAMED_ON:
        raise ValueError(f"named_on must be one of {NAMED_ON}, not {named_on!r}")
    if t.empty:
        return t
    naming = t if named_on == "mean" else t[t["seed"] == t["seed"].min()]
    best = best_rates(naming, loss)[["N", "tokens", "lr_grid"]]
    out = t.merge(best, on=["N", "tokens"])
    return out[np.isclose(out["lr"], out["lr_grid"])].drop(columns="lr_grid").reset_index(drop=True)


def mean_at_best_rate(t: pd.DataFrame, loss: str = "final_val_loss", *, carry: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (N, tokens) of a tuned grid's runs table: the mean loss over the seeds at the grid's best
    rate there (`at_best_rate`, a measured loss), with `seeds`, the rate `lr`, and the columns `carry` (one
    value per size, e.g. N_total) as they are."""
    best = at_best_rate(t, loss)
    return (best.groupby(["N", "tokens"], as_index=False)
            .agg(**{loss: (loss, "mean")}, seeds=("seed", "nunique"), lr=("lr", "first"),
                 **{c: (c, "first") for c in carry}))


def best_at_budget(t: pd.DataFrame, tokens: float, *, rel: float = 0.01, loss: str = "final_val_loss") -> pd.DataFrame:
    """One row per size of a tuned grid's `runs_table(..., budgets=True)` at the budget within `rel` of
    `tokens` (a budget trains whole steps): `mean_at_best_rate` there, with whether the rate lies `inside`
    the grid, and the size's N_total and forward FLOPs per token. Empty where no budget is that close."""
    cols = ["N", "tokens", loss, "seeds", "lr", "inside", "N_total", "flops_per_token"]
    near = t[(t["tokens"] - tokens).abs() <= rel * tokens] if len(t) else t
    if near.empty:
        return pd.DataFrame(columns=cols)
    out = mean_at_best_rate(near, loss, carry=("N_total", "flops_per_token"))
    inside = best_rates(near, loss).set_index("N")["inside"]
    return out.assign(inside=out["N"].map(inside).astype(bool))[cols].sort_values("N").reset_index(drop=True)


@dataclass(frozen=True)
class LRRule:
    """LR*(N, D) = A * N**a * D**b, with 95% bootstrap intervals (resampling sizes)."""

    A: float
    a: float
    b: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    points: int = 0          # (N, D) used: best strictly inside the grid
    sizes: int = 0
    left_out: int = 0        # (N, D) whose best was at a grid edge
    rmse_log: float = math.nan
    n_boot: int = 0
    n_boot_ok: int = 0
    sources: tuple[str, ...] = ()  # config keys of the runs the rule was fitted to
    sizes_used: tuple[int, ...] = ()  # the sizes N it was fitted on (where known)
    note: str = ""  # how it was chosen: which sizes were left out, and why

    def __call__(self, N, D):
        return self.A * np.asarray(N, float) ** self.a * np.asarray(D, float) ** self.b

    def ci_text(self, name: str, fmt: str = ".3f") -> str:
        if name not in self.ci:
            why = "no bootstrap" if self.n_boot == 0 else f"only {self.n_boot_ok} of {self.n_boot} resamples fitted"
            return f"n/a ({why})"
        lo, hi = self.ci[name]
        return interval_text(lo, hi, fmt)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        d["sources"] = list(self.sources)
        d["sizes_used"] = list(self.sizes_used)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LRRule":
        d = dict(d)
        d["ci"] = {k: tuple(v) for k, v in d.get("ci", {}).items()}
        d["sources"] = tuple(d.get("sources", ()))
        d["sizes_used"] = tuple(int(n) for n in d.get("sizes_used", ()))
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write the rule as JSON (atomically: a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LRRule":
        return cls.from_dict(json.loads(Path(path).read_text()))


class RuleError(ValueError):
    """Too few (N, D) with their best rate inside the grid to fit a rule."""


def _solve(lN, lD, ly, with_D: bool) -> np.ndarray:
    X = np.column_stack([np.ones_like(lN), lN] + ([lD] if with_D else []))
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    return coef if with_D else np.append(coef, 0.0)


def fit_rule(best: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0, sources=()) -> LRRule:
    """Fit LR* = A N^a D^b to `best_rates` rows whose best is inside the grid.

    With a single budget (or a single size) the D (or N) exponent is not identified and is fixed
    at 0. The bootstrap resamples sizes (all budgets of a size together).
    """
    ok = best[best["inside"]]
    sizes, budgets = ok["N"].nunique(), ok["tokens"].nunique()
    if len(ok) < 3 or sizes < 2:
        raise RuleError(f"{len(ok)} (N, D) point(s) over {sizes} size(s) have their best rate inside the grid; "
                        "a rule needs at least 3 points over 2 sizes")
    with_D = budgets >= 2
    lN, lD, ly = (np.log(ok[c].to_numpy(float)) for c in ("N", "tokens", "lr_star"))
    coef = _solve(lN, lD, ly, with_D)
    resid = ly - (coef[0] + coef[1] * lN + coef[2] * lD)
    rng = np.random.default_rng(seed)
    labels = ok["N"].to_numpy()
    uniq = np.unique(labels)
    draws = []
    for _ in range(bootstrap):
        pick = rng.choice(uniq, len(uniq))
        idx = np.concatenate([np.flatnonzero(labels == n) for n in pick])
        if len(np.unique(labels[idx])) < 2:
            continue  # one size: the N exponent is not identified in this resample
        draws.append(_solve(lN[idx], lD[idx], ly[idx], with_D))
    ci = {}
    if len(draws) >= 2:
        d = np.array(draws)
        d[:, 0] = np.exp(d[:, 0])
        for j, name in enumerate(("A", "a", "b")):
            if name == "b" and not with_D:
                continue
            ci[name] = (float(np.percentile(d[:, j], 2.5)), float(np.percentile(d[:, j], 97.5)))
    return LRRule(A=float(np.exp(coef[0])), a=float(coef[1]), b=float(coef[2]), ci=ci, points=len(ok),
                  sizes=int(sizes), left_out=int((~best["inside"]).sum()),
                  rmse_log=float(np.sqrt(np.mean(resid**2))), n_boot=bootstrap, n_boot_ok=len(draws),
                  sources=tuple(sorted(sources)))


def complete_sizes(best: pd.DataFrame, grid_missing=()) -> tuple[list[int], dict[int, str]]:
    """The sizes whose grid is finished: every budget's best rate lies inside the grid, and no grid run of
    that size is still planned (`grid_missing`: the N of the planned grid runs not yet stored). Returns
    them, and for every other size why it is not."""
    waiting = {int(n) for n in grid_missing}
    done, why = [], {}
    for N, g in best.groupby("N"):
        N = int(N)
        edges = int((~g["inside"]).sum())
        if N in waiting:
            why[N] = "grid runs still planned"
        elif edges:
            why[N] = f"{edges} of {len(g)} budgets have their best rate at an edge of the grid"
        else:
            done.append(N)
    for N in sorted(waiting - set(best["N"].astype(int))):
        why[N] = "no grid run stored"
    return done, dict(sorted(why.items()))


def fit_rule_on_complete(table: pd.DataFrame, grid_missing=(), *, max_n: float | None = None,
                         bootstrap: int = 500, seed: int = 0) -> LRRule:
    """The rule fitted to the finished grids only (`complete_sizes`), up to `max_n` parameters; the rule
    says which sizes it used and why each other was left out. A grid still growing would move its
    size's best rate, so it waits; a rule fitted before every size is finished is a choice, and `note`
    says so."""
    best = best_rates(table)
    done, why = complete_sizes(best, grid_missing)
    if max_n is not None:
        why.update({N: f"above --max-n {max_n:g}" for N in done if N > max_n})
        done = [N for N in done if N <= max_n]
    if len(done) < 2:
        raise RuleError(f"{len(done)} size(s) have a finished grid ({', '.join(map(str, done)) or 'none'}); a rule "
                        "needs 2: " + "; ".join(f"N = {N:,}: {w}" for N, w in why.items()))
    keys = set(table.loc[table["N"].isin(done), "key"]) if "key" in table.columns else set()
    rule = fit_rule(best[best["N"].isin(done)], bootstrap=bootstrap, seed=seed, sources=tuple(keys))
    note = ("fitted on every size of the grid" if not why else
            "fitted on the finished grids; left out: " + "; ".join(f"N = {N:,} ({w})" for N, w in why.items()))
    return replace(rule, sizes_used=tuple(sorted(done)), note=note)

