"""Compute-optimal allocation, N_opt ∝ C^a and D_opt ∝ C^b, by the three approaches of Hoffmann et al. 2022.

- Approach 1 (§3.1, training-curve envelope): along every run's learning curve, the loss reached at
  each compute level of a log grid; at each level the size that reaches the lowest loss is N_opt.
- Approach 2 (§3.2, IsoFLOP profiles): at each budget (rows of one compute value), a parabola of L in
  log N; its vertex is N_opt, and its value there L_opt.
- Approach 3 (§3.3, parametric): L(N, D) = E + A/N^alpha + B/D^beta fitted as `fit.fit("chinchilla")`
  does (Huber on log L, L-BFGS from a grid), then a = beta/(alpha+beta), b = alpha/(alpha+beta).

Approaches 1 and 2 fit log N_opt (and log D_opt) against log C by least squares. Where the tokens D
are not given, D = C / (6 N) (Kaplan et al. 2020, §2.1), and then b = 1 - a exactly.

Intervals are 95% percentile intervals of a seeded bootstrap over the units that are independent:
runs for approaches 1 and 3 (a run is one learning curve in approach 1, one row, or the rows of a
`runs` label, in approach 3), budgets for approach 2 (each resample refits the line through the
resampled budgets' optima).

Warnings (returned, and printed on stderr by the command line):

- edge: an optimum that the sizes do not bracket. Approach 2: the vertex has fewer than
  EDGE_MIN_SIDE distinct sizes of its budget on one side (outside the sizes, or beyond the
  second-smallest or second-largest); its N_opt is an extrapolation, kept in the fit. Approach 1: the
  winning size is the smallest or the largest of the runs that reach that compute level; the true
  optimum may lie beyond, so those levels are left out of the fit.
- identification (approach 3): alpha and beta are not separately identified when any of
  (i) the bootstrap's 95% interval of alpha or beta spans more than a factor IDENT_MAX_CI_RATIO
  (hi/lo > 2, or lo <= 0); (ii) the Gauss-Newton standard error of alpha or beta exceeds
  IDENT_MAX_REL_SE (a quarter) of its value; (iii) the Gauss-Newton matrix J^T J at the optimum
  (J = d log L / d theta, theta = log A, log B, log E, alpha, beta), scaled to a unit diagonal, has a
  condition number above IDENT_MAX_COND (1e8: some combination of the parameters is determined 1e4
  times less precisely than the best one); (iv) alpha or beta is not positive. The standard errors
  use a robust noise scale (1.4826 x the median absolute log residual), so that the few outliers the
  Huber loss discounts do not inflate them. Calibration: well-designed synthetic grids and the
  digitised Chinchilla runs give condition numbers 1e4-5e4, relative errors 1-2% and interval
  ratios 1.1-1.3; two nearby budgets give ratios 2.4-3; a fixed tokens-per-parameter design (D = 20 N)
  leaves the D term ~0 everywhere and its beta a standard error of 1e15 times its value.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import fit as fitting
from .fit import FitError, FitResult

APPROACHES = (1, 2, 3)
DEFAULT_BOOTSTRAP = 100  # resamples: approach 3 refits the law each time (~20 ms a resample)
GRID_LEVELS = 100  # approach 1: compute levels, log-spaced over the data's range of C
MIN_BUDGETS = 3  # approach 2: a line through two optima has no scatter to judge it by
MIN_POINTS_PER_BUDGET = 3  # a parabola has three coefficients
EDGE_MIN_SIDE = 2  # approach 2: distinct sizes needed on each side of the vertex
RUN_SIZE_RTOL = 1e-3  # approach 1: one run's rows may differ in N by this much (digitised data); its median is its size
IDENT_MAX_CI_RATIO = fitting.MAX_CI_RATIO
IDENT_MAX_REL_SE = 0.25
IDENT_MAX_COND = 1e8
LEVEL = 0.95


@dataclass(frozen=True, eq=False)
class Allocation:
    """The exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b) of one approach, with 95% bootstrap intervals."""

    approach: int
    a: float
    b: float
    ci: dict[str, tuple[float, float]]  # a, b, and (approach 3) the law's parameters
    params: dict[str, float]  # approach 3: E, A, B, alpha, beta, G; 1 and 2: the lines' coefficients
    warnings: tuple[str, ...] = ()
    optima: pd.DataFrame | None = field(default=None, repr=False)  # per budget (2) or compute level (1)
    fit: FitResult | None = field(default=None, repr=False)  # approach 3
    identification: dict[str, float] | None = None  # approach 3: the numbers the criterion reads
    n_points: int = 0
    n_units: int = 0  # what the bootstrap resamples: runs (1, 3) or budgets (2)
    unit: str = "run"
    D_source: str = "C/(6N)"
    n_boot: int = 0
    n_boot_ok: int = 0
    boot: pd.DataFrame | None = field(default=None, repr=False)  # a and b of every resample that converged

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; non-finite numbers become None."""
        out: dict[str, Any] = {
            "approach": self.approach,
            "a": _num(self.a),
            "b": _num(self.b),
            "ci": {k: [_num(lo), _num(hi)] for k, (lo, hi) in self.ci.items()},
            "params": {k: _num(v) for k, v in self.params.items()},
            "warnings": list(self.warnings),
            "n_points": self.n_points,
            f"n_{self.unit}s": self.n_units,
            "resampling": f"{self.unit}s",
            "n_boot": self.n_boot,
            "n_boot_ok": self.n_boot_ok,
            "D": self.D_source,
        }
        if self.optima is not None:
            out["optima"] = _records(self.optima if self.approach == 2 else envelope_segments(self.optima))
        if self.fit is not None:
            out["fit"] = {k: v for k, v in self.fit.to_dict().items() if k not in ("params", "ci")}
        if self.identification is not None:
            out["identification"] = {k: _num(v) for k, v in self.identification.items()}
        return out


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for r in df.to_dict("records"):
        rows.append({k: (bool(v) if isinstance(v, (bool, np.bool_)) else int(v) if isinstance(v, (np.integer,))
                         else _num(v) if isinstance(v, (float, np.floating)) else v) for k, v in r.items()})
    return rows


# ---------------------------------------------------------------------------------------------
# Input


def _arrays(C, N, L, D=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    out = {}
    for name, v in (("compute", C), ("N", N), ("loss", L), ("D", D)):
        if v is not None:
            out[name] = fitting.check_positive(name, fitting.numeric_array(name, v), where="row")
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise FitError("arrays of different lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    if not lengths["compute"]:
        raise FitError("no rows")
    return out["compute"], out["N"], out["loss"], out.get("D")


def _line(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of ly against lx by least squares."""
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    q = 100 * (1 - LEVEL) / 2
    return float(np.percentile(values, q)), float(np.percentile(values, 100 - q))


def _lines(optima: pd.DataFrame) -> dict[str, float]:
    """log N_opt and log D_opt against log C: a, b and the coefficients of N_opt = k_N C^a, D_opt = k_D C^b."""
    lC = np.log(optima["C"].to_numpy(float))
    a, ia = _line(lC, np.log(optima["N_opt"].to_numpy(float)))
    b, ib = _line(lC, np.log(optima["D_opt"].to_numpy(float)))
    return {"a": a, "b": b, "k_N": math.exp(ia), "k_D": math.exp(ib)}


def _boot_lines(optima: pd.DataFrame, draws: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for idx in draws:
        sub = optima.iloc[idx]
        if sub["C"].nunique() < 2:  # one budget drawn every time: no line
            continue
        rows.append(_lines(sub))
    return pd.DataFrame(rows, columns=["a", "b", "k_N", "k_D"])


def _ci_of(boot: pd.DataFrame, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    if len(boot) < 2:
        return {}
    return {k: _percentile_ci(boot[k].to_numpy(float)) for k in names}


def _ci_warning(n_boot: int, n_ok: int) -> list[str]:
    if n_boot and n_ok < 2:
        return [f"no interval: only {n_ok} of {n_boot} bootstrap resamples gave a fit"]
    if n_boot and n_ok < 0.9 * n_boot:
        return [f"{n_boot - n_ok} of {n_boot} bootstrap resamples gave no fit and were dropped"]
    return []


# ---------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles


def isoflop_optima(C, N, L, D=None) -> pd.DataFrame:
    """The vertex of a parabola of L in log N at each budget (rows sharing one compute value).

    Hoffmann et al. 2022, §3.2. One row a budget: C, N_opt, D_opt (C/(6 N_opt), or the vertex of a
    parabola in log D where D is given), L_opt, the budget's points and sizes, `convex` (the parabola
    opens upwards; else it has no minimum and N_opt is NaN), and `edge` (see the module's docstring).
    """
    C, N, L, D = _arrays(C, N, L, D)
    rows = []
    for c in np.unique(C):
        m = C == c
        x, y = np.log(N[m]), L[m]
        sizes = np.unique(np.round(x, 4))  # digitised sizes that differ by < 1e-4 are one size
        if m.sum() < MIN_POINTS_PER_BUDGET or len(sizes) < MIN_POINTS_PER_BUDGET:
            raise FitError(f"budget C={c:.4g} has {m.sum()} point(s) at {len(sizes)} size(s); a parabola needs "
                           f"at least {MIN_POINTS_PER_BUDGET} points at {MIN_POINTS_PER_BUDGET} sizes")
        c2, c1, c0 = np.polyfit(x, y, 2)
        convex = c2 > 0
        x_opt = -c1 / (2 * c2) if convex else math.nan
        if convex and D is not None:
            d2, d1, _ = np.polyfit(np.log(D[m]), y, 2)
            lD_opt = -d1 / (2 * d2) if d2 > 0 else math.nan
        else:
            lD_opt = math.log(c / 6) - x_opt
        side = min((sizes < x_opt).sum(), (sizes > x_opt).sum()) if convex else 0
        rows.append(dict(C=float(c), N_opt=math.exp(x_opt), D_opt=math.exp(lD_opt),
                         L_opt=float(np.polyval([c2, c1, c0], x_opt)) if convex else math.nan,
                         n_points=int(m.sum()), n_sizes=len(sizes), N_min=float(N[m].min()),
                         N_max=float(N[m].max()), convex=bool(convex), edge=bool(convex and side < EDGE_MIN_SIDE)))
    return pd.DataFrame(rows)


def isoflop_slices(C, N, L, D=None, *, runs=None, levels=None, per_decade: int = 3,
                   min_sizes: int = MIN_POINTS_PER_BUDGET) -> pd.DataFrame:
    """IsoFLOP profiles cut from runs that were not trained at shared budgets: at each compute level,
    every run's loss there, interpolated linearly in log C between the run's two nearest points.

    A run is the points of one size (or of one `runs` label), e.g. the cooldown branches of a
    warmup-stable-decay run, each an annealed loss at its own budget. A run gives a point at a level
    only where its points bracket it (no extrapolation). `levels` defaults to `per_decade` log-spaced
    compute values over the data's range; a level is kept where at least `min_sizes` distinct sizes
    reach it. Returns rows C (the level), N, D (interpolated in log C likewise; C/(6N) where D is not
    given), L and `run`, ready for `isoflop_optima`/`approach2`.
    """
    C, N, L, D = _arrays(C, N, L, D)
    D = C / (6 * N) if D is None else D
    labels = np.asarray(N if runs is None else runs)
    if len(labels) != len(C):
        raise FitError(f"runs has {len(labels)} labels for {len(C)} rows")
    if levels is None:
        lo, hi = math.log10(C.min()), math.log10(C.max())
        levels = 10 ** (np.arange(math.ceil(lo * per_decade), math.floor(hi * per_decade) + 1) / per_decade)
    levels = np.asarray(levels, float)
    rows = []
    for run in pd.unique(labels):
        m = labels == run
        order = np.argsort(C[m])
        lc, ll, ld = np.log(C[m][order]), np.log(L[m][order]), np.log(D[m][order])
        n = float(np.median(N[m]))
        inside = (np.log(levels) >= lc[0]) & (np.log(levels) <= lc[-1])
        for c in levels[inside]:
            x = math.log(c)
            rows.append(dict(C=float(c), N=n, D=float(np.exp(np.interp(x, lc, ld))),
                             L=float(np.exp(np.interp(x, lc, ll))), run=run))
    out = pd.DataFrame(rows, columns=["C", "N", "D", "L", "run"])
    if out.empty:
        return out
    sizes = out.groupby("C")["N"].nunique()
    return out[out["C"].isin(sizes[sizes >= min_sizes].index)].sort_values(["C", "N"]).reset_index(drop=True)


COVERAGE_COLUMNS = ["C", "n_sizes", "sizes", "N_opt", "L_opt", "below", "above", "edge", "side", "cause",
                    "need_more_tokens", "need_fewer_tokens"]


def slice_coverage(C, N, L, D=None, *, runs=None, levels=None, per_decade: int = 3,
                   min_sizes: int = MIN_POINTS_PER_BUDGET) -> pd.DataFrame:
    """What each IsoFLOP slice of `isoflop_slices` holds, and why its vertex is at an edge where it is.

    The same arguments as `isoflop_slices`, which cuts the slices; then a row per compute level: C;
    the distinct sizes in its slice (`sizes`, ascending); the vertex of its parabola (`N_opt`, `L_opt`;
    NaN without a minimum); `below` and `above`, the slice's sizes on either side of the vertex;
    `edge`, as `isoflop_optima` judges it (fewer than EDGE_MIN_SIDE sizes on a side); `side`, the side
    it is at the edge of ('small N', 'large N', 'both', '' inside, 'no minimum'); and every size of the
    data that is not in the slice, with the tokens D it would need to reach C (C over its runs' compute
    a token, so C/(6N) under C = 6ND): `need_more_tokens`, (N, D) of the sizes whose runs end before C;
    `need_fewer_tokens`, of those whose runs begin after it.

    `cause` reads the edge: 'more tokens at small N' where the sizes below the vertex that stop short
    of C would, with longer runs, give it EDGE_MIN_SIDE sizes on its small side; 'below the smallest
    size' where even they would not (the data hold too few sizes below it); likewise 'shorter budgets at
    large N' and 'above the largest size' on the large side; joined by '; ' where both sides are short.
    """
    cols = COVERAGE_COLUMNS
    sl = isoflop_slices(C, N, L, D, runs=runs, levels=levels, per_decade=per_decade, min_sizes=min_sizes)
    if sl.empty:
        return pd.DataFrame(columns=cols)
    C, N, L, D = _arrays(C, N, L, D)
    D = C / (6 * N) if D is None else D
    labels = np.asarray(N if runs is None else runs)
    spans = []  # each run: its size, its range of C, its compute a token
    for run in pd.unique(labels):
        m = labels == run
        spans.append((run, float(np.median(N[m])), float(C[m].min()), float(C[m].max()),
                      float(np.median(C[m] / D[m]))))
    optima = isoflop_optima(sl["C"], sl["N"], sl["L"]).set_index("C")
    rows = []
    for c, g in sl.groupby("C", sort=True):
        o = optima.loc[c]
        x_opt = math.log(o["N_opt"]) if o["convex"] else math.nan
        sizes = np.unique(np.round(np.log(g["N"].to_numpy(float)), 4))
        below, above = (int((sizes < x_opt).sum()), int((sizes > x_opt).sum())) if o["convex"] else (0, 0)
        inside = set(g["run"])
        more = sorted({(int(round(n)), c / cpt) for run, n, lo, hi, cpt in spans if run not in inside and hi < c})
        fewer = sorted({(int(round(n)), c / cpt) for run, n, lo, hi, cpt in spans if run not in inside and lo > c})
        short_small, short_large = below < EDGE_MIN_SIDE, above < EDGE_MIN_SIDE
        side = ("no minimum" if not o["convex"] else "both" if short_small and short_large
                else "small N" if short_small else "large N" if short_large else "")
        causes = []
        if o["convex"] and short_small:
            gain = below + len({n for n, _ in more if math.log(n) < x_opt})
            causes.append("more tokens at small N" if gain >= EDGE_MIN_SIDE else "below the smallest size")
        if o["convex"] and short_large:
            gain = above + len({n for n, _ in fewer if math.log(n) > x_opt})
            causes.append("shorter budgets at large N" if gain >= EDGE_MIN_SIDE else "above the largest size")
        rows.append(dict(C=float(c), n_sizes=len(sizes), sizes=tuple(int(round(n)) for n in sorted(set(g["N"]))),
                         N_opt=float(o["N_opt"]), L_opt=float(o["L_opt"]), below=below, above=above,
                         edge=bool(o["edge"]), side=side, cause="; ".join(causes), need_more_tokens=tuple(more),
                         need_fewer_tokens=tuple(fewer)))
    return pd.DataFrame(rows, columns=cols)


def approach2(C, N, L, D=None, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              bracketed_only: bool = False) -> Allocation:
    """a and b from the optima of IsoFLOP parabolas; the bootstrap resamples budgets (Hoffmann et al. 2022, §3.2).
    A budget whose optimum sits at the edge of its sizes is kept, with a warning; with `bracketed_only`, a budget
    whose optimum lies outside its sizes altogether (the parabola's vertex extrapolated) is left out, as
    shehper/scaling_laws keep to the compute where the minima are bracketed."""
    C, N, L, D = _arrays(C, N, L, D)
    n_budgets = len(np.unique(C))
    if n_budgets < MIN_BUDGETS:
        raise FitError(f"approach 2 needs at least {MIN_BUDGETS} budgets (distinct compute values), got {n_budgets}")
    optima = isoflop_optima(C, N, L, D)
    warns = []
    flat = optima[~optima["convex"]]
    for c in flat["C"]:
        warns.append(f"budget C={c:.4g}: the parabola opens downwards (no minimum); budget left out")
    for c in optima.loc[optima["convex"] & ~np.isfinite(optima["D_opt"]), "C"]:
        warns.append(f"budget C={c:.4g}: the parabola in log D opens downwards (no minimum); budget left out")
    for r in optima[optima["edge"]].itertuples():
        warns.append(f"budget C={r.C:.4g}: optimum N={r.N_opt:.4g} at the edge of its sizes "
                     f"({r.N_min:.4g} to {r.N_max:.4g}); an extrapolation, kept in the fit")
    keep = optima["convex"] & np.isfinite(optima["D_opt"])
    if bracketed_only:
        outside = keep & ((optima["N_opt"] < optima["N_min"]) | (optima["N_opt"] > optima["N_max"]))
        for r in optima[outside].itertuples():
            warns.append(f"budget C={r.C:.4g}: optimum N={r.N_opt:.4g} outside its sizes ({r.N_min:.4g} to "
                         f"{r.N_max:.4g}); budget left out")
        keep &= ~outside
    good = optima[keep].reset_index(drop=True)
    if len(good) < MIN_BUDGETS:
        raise FitError(f"approach 2 needs at least {MIN_BUDGETS} budgets with a minimum, got {len(good)}")
    line = _lines(good)
    rng = np.random.default_rng(seed)
    boot = _boot_lines(good, [rng.integers(0, len(good), len(good)) for _ in range(bootstrap)])
    warns += _ci_warning(bootstrap, len(boot))
    return Allocation(approach=2, a=line["a"], b=line["b"], ci=_ci_of(boot, ("a", "b")),
                      params={"k_N": line["k_N"], "k_D": line["k_D"]}, warnings=tuple(warns), optima=optima,
                      n_points=len(C), n_units=len(good), unit="budget", D_source="C/(6N)" if D is None else "column",
                      n_boot=bootstrap, n_boot_ok=len(boot), boot=boot)


# ---------------------------------------------------------------------------------------------
# Approach 1: the envelope of the learning curves


def _curves(C, N, L, D, runs) -> tuple[list[Any], np.ndarray, list[tuple[np.ndarray, ...]], list[Any]]:
    """Per run: its size, and its curve as (log C, log L, log D) sorted by C, repeats averaged.

    Also the runs left out because they have a single compute value (nothing to interpolate).
    """
    labels = np.asarray(N if runs is None else runs)
    if len(labels) != len(C):
        raise FitError(f"arrays of different lengths: runs {len(labels)}, compute {len(C)}")
    df = pd.DataFrame({"run": labels, "lC": np.log(C), "lL": np.log(L), "N": N,
                       "lD": np.log(C / (6 * N)) if D is None else np.log(D)})
    names, sizes, curves, single = [], [], [], []
    for run, g in df.groupby("run", sort=True):
        if g["N"].max() > (1 + RUN_SIZE_RTOL) * g["N"].min():
            raise FitError(f"run {run!r} has sizes {g['N'].min():.4g} to {g['N'].max():.4g}; give each run its own "
                           "label (--run)")
        g = g.groupby("lC", as_index=False)[["lL", "lD"]].mean()  # sorted by C
        if len(g) < 2:
            single.append(run)
            continue
        names.append(run)
        sizes.append(float(df.loc[df["run"] == run, "N"].median()))
        curves.append((g["lC"].to_numpy(), g["lL"].to_numpy(), g["lD"].to_numpy()))
    return names, np.array(sizes), curves, single


def _envelope(sizes: np.ndarray, curves, grid: np.ndarray) -> pd.DataFrame:
    lL = np.full((len(curves), len(grid)), np.nan)
    lD = np.full_like(lL, np.nan)
    for i, (lc, ll, ld) in enumerate(curves):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        lL[i, inside] = np.interp(grid[inside], lc, ll)  # log L linear in log C between a curve's points
        lD[i, inside] = np.interp(grid[inside], lc, ld)
    rows = []
    for j, g in enumerate(grid):
        cover = np.flatnonzero(np.isfinite(lL[:, j]))
        if len(np.unique(sizes[cover])) < 2:  # one size reaches this compute: nothing to choose between
            continue
        w = cover[np.argmin(lL[cover, j])]
        edge = sizes[w] in (sizes[cover].min(), sizes[cover].max())
        rows.append(dict(C=float(np.exp(g)), N_opt=float(sizes[w]), D_opt=float(np.exp(lD[w, j])),
                         L_opt=float(np.exp(lL[w, j])), run=int(w), n_runs=len(cover),
                         N_min=float(sizes[cover].min()), N_max=float(sizes[cover].max()), edge=bool(edge)))
    return pd.DataFrame(rows, columns=["C", "N_opt", "D_opt", "L_opt", "run", "n_runs", "N_min", "N_max", "edge"])


def training_curve_envelope(C, N, L, D=None, *, runs=None, levels: int = GRID_LEVELS) -> pd.DataFrame:
    """At each compute level of a log grid, the size whose learning curve reaches the lowest loss there.

    Hoffmann et al. 2022, §3.1. Rows are points (C, N, L) along the runs' curves; `runs` labels the
    runs (default: one run a size). Each curve is interpolated linearly in (log C, log L) between its
    points, never beyond them. One row a level that at least two sizes reach: C, N_opt, D_opt (the
    winning curve's D there; C/(6 N_opt) without D), L_opt, how many runs reach it, and `edge` (the
    winner is the smallest or largest of those).
    """
    C, N, L, D = _arrays(C, N, L, D)
    _, sizes, curves, _ = _curves(C, N, L, D, runs)
    grid = np.linspace(np.log(C.min()), np.log(C.max()), levels)
    return _envelope(sizes, curves, grid)


def envelope_segments(levels: pd.DataFrame) -> pd.DataFrame:
    """The envelope's levels run together where the same run wins: N_opt, the C range, and whether at the edge."""
    if levels.empty:
        return pd.DataFrame(columns=["N_opt", "C_from", "C_to", "n_levels", "edge"])
    key = (levels["run"] != levels["run"].shift()) | (levels["edge"] != levels["edge"].shift())
    seg = key.cumsum()
    return (levels.groupby(seg, sort=True)
            .agg(N_opt=("N_opt", "first"), C_from=("C", "min"), C_to=("C", "max"), L_from=("L_opt", "first"),
                 L_to=("L_opt", "last"), n_levels=("C", "size"), edge=("edge", "first"))
            .reset_index(drop=True))


def _envelope_fit(levels: pd.DataFrame) -> dict[str, float] | None:
    inner = levels[~levels["edge"]]
    if len(inner) < 3 or inner["N_opt"].nunique() < 2:
        return None
    return _lines(inner)


def approach1(C, N, L, D=None, *, runs=None, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              levels: int = GRID_LEVELS) -> Allocation:
    """a and b from the envelope of the learning curves; the bootstrap resamples runs (Hoffmann et al. 2022, §3.1)."""
    C, N, L, D = _arrays(C, N, L, D)
    names, sizes, curves, single = _curves(C, N, L, D, runs)
    if len(np.unique(sizes)) < 2:
        raise FitError(f"approach 1 needs learning curves (runs of 2 or more compute values) of at least 2 sizes, "
                       f"got {len(np.unique(sizes))}" + (f" ({len(single)} run(s) have a single point)" if single else ""))
    grid = np.linspace(np.log(C.min()), np.log(C.max()), levels)
    env = _envelope(sizes, curves, grid)
    line = _envelope_fit(env)
    if line is None:
        raise FitError("approach 1: fewer than 3 compute levels with an optimum inside the sizes that reach them, "
                       "or a single winning size; the curves need sizes on both sides of the optimum")
    warns = [f"{len(single)} run(s) with a single compute value left out (no curve to interpolate)"] if single else []
    n_edge = int(env["edge"].sum())
    if n_edge:
        warns.append(f"{n_edge} of {len(env)} compute levels have their optimum at the edge of the sizes that reach "
                     "them (smallest or largest); left out of the fit")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(bootstrap):
        pick = np.unique(rng.integers(0, len(curves), len(curves)))  # a run drawn twice adds nothing to an envelope
        if len(np.unique(sizes[pick])) < 2:
            continue
        b_env = _envelope(sizes[pick], [curves[i] for i in pick], grid)
        b_line = _envelope_fit(b_env) if not b_env.empty else None
        if b_line is not None:
            rows.append(b_line)
    boot = pd.DataFrame(rows, columns=["a", "b", "k_N", "k_D"])
    warns += _ci_warning(bootstrap, len(boot))
    return Allocation(approach=1, a=line["a"], b=line["b"], ci=_ci_of(boot, ("a", "b")),
                      params={"k_N": line["k_N"], "k_D": line["k_D"]}, warnings=tuple(warns), optima=env,
                      n_points=len(C), n_units=len(curves), unit="run", D_source="C/(6N)" if D is None else "column",
                      n_boot=bootstrap, n_boot_ok=len(boot), boot=boot)


# ---------------------------------------------------------------------------------------------
# Approach 3: the parametric law


def identification(result: FitResult, N, D) -> dict[str, float]:
    """The numbers behind the approach-3 warning that alpha and beta are not separately identified.

    Condition number of the unit-diagonal Gauss-Newton matrix; standard errors of alpha and beta from
    it with a robust noise scale, relative to the estimates; their correlation; and the ratio hi/lo
    of the bootstrap intervals of alpha and beta (inf where lo <= 0, NaN without a bootstrap).
    """
    J = fitting.chinchilla_jacobian(result.params, N, D)
    M = J.T @ J
    s = np.sqrt(np.diag(M))
    sigma = 1.4826 * float(np.median(np.abs(result.residuals)))
    se_a = se_b = cond = math.inf
    corr = math.nan
    if np.all(s > 0):
        # Scaled to a unit diagonal, a parameter that barely moves the fit (a term whose share of the
        # loss is ~0 everywhere) keeps a well-conditioned matrix but gets a huge standard error.
        Ms = M / np.outer(s, s)
        cond = float(np.linalg.cond(Ms))
        try:
            cov = sigma**2 * np.linalg.inv(Ms) / np.outer(s, s)
        except np.linalg.LinAlgError:
            cov = None
        if cov is not None:
            se_a, se_b = math.sqrt(max(cov[3, 3], 0.0)), math.sqrt(max(cov[4, 4], 0.0))
            corr = cov[3, 4] / (se_a * se_b) if se_a > 0 and se_b > 0 else math.nan
    out = dict(cond=cond, sigma_log=sigma, se_alpha=se_a, se_beta=se_b,
               rel_se_alpha=se_a / abs(result.params["alpha"]), rel_se_beta=se_b / abs(result.params["beta"]),
               corr_alpha_beta=float(corr))
    for k in ("alpha", "beta"):
        out[f"ci_ratio_{k}"] = result.interval_ratio(k)
    return out


def _identification_warning(ident: Mapping[str, float], params: Mapping[str, float]) -> str | None:
    why = [f"{k} = {params[k]:.3g} is not positive" for k in ("alpha", "beta") if params[k] <= 0]
    if ident["cond"] > IDENT_MAX_COND:
        why.append(f"the Gauss-Newton matrix is near-singular (condition number {ident['cond']:.2g} > {IDENT_MAX_COND:.0e})")
    for k in ("alpha", "beta"):
        if ident[f"rel_se_{k}"] > IDENT_MAX_REL_SE:
            why.append(f"the standard error of {k} is {ident[f'rel_se_{k}']:.2g} times its value (> {IDENT_MAX_REL_SE:g})")
        r = ident[f"ci_ratio_{k}"]
        if not math.isnan(r) and r > IDENT_MAX_CI_RATIO:
            why.append(f"the 95% interval of {k} spans a factor {r:.3g} (> {IDENT_MAX_CI_RATIO:g})")
    if not why:
        return None
    return "alpha and beta are not separately identified: " + "; ".join(why)


def approach3(C, N, L, D=None, *, runs=None, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              starts: Sequence[Mapping[str, float]] | None = None) -> Allocation:
    """a = beta/(alpha+beta) and b = alpha/(alpha+beta) from L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, §3.3).

    The law is fitted by `fit.fit("chinchilla", ...)`; the bootstrap resamples rows, or whole runs
    where `runs` labels them (several points of one learning curve are not independent).
    """
    C, N, L, D_given = _arrays(C, N, L, D)
    D = C / (6 * N) if D_given is None else D_given
    res = fitting.fit("chinchilla", N, L, D, bootstrap=bootstrap, seed=seed, groups=runs, starts=starts)
    p = res.params
    flat = [f"{k} = {p[k]:.3g}" for k in ("alpha", "A", "beta", "B") if not p[k] > 0]
    if flat:
        raise FitError(f"the parametric fit gives {', '.join(flat)} (not positive): the loss does not fall as a power "
                       "of both N and D over these points, so there is no compute-optimal allocation to read off")
    a, b = p["beta"] / (p["alpha"] + p["beta"]), p["alpha"] / (p["alpha"] + p["beta"])
    log_G = (math.log(p["alpha"] * p["A"]) - math.log(p["beta"] * p["B"])) / (p["alpha"] + p["beta"])
    ci = dict(res.ci)
    boot = pd.DataFrame(columns=["a", "b"])
    if res.boot_params is not None and len(res.boot_params):
        bp = res.boot_params
        boot = pd.DataFrame({"a": bp["beta"] / (bp["alpha"] + bp["beta"]), "b": bp["alpha"] / (bp["alpha"] + bp["beta"])})
        if res.ci:
            ci = {**_ci_of(boot, ("a", "b")), **ci}
    ident = identification(res, N, D)
    warns = _ci_warning(bootstrap, res.n_boot_ok)
    w = _identification_warning(ident, p)
    if w:
        warns.append(w)
    n_units = len(L) if runs is None else len(pd.unique(np.asarray(runs)))
    return Allocation(approach=3, a=a, b=b, ci=ci, params={**p, "G": math.exp(log_G)}, warnings=tuple(warns),
                      fit=res, identification=ident, n_points=len(L), n_units=n_units, unit="run",
                      D_source="C/(6N)" if D_given is None else "column", n_boot=bootstrap,
                      n_boot_ok=res.n_boot_ok, boot=boot)


def allocate(approach: int, C, N, L, D=None, *, runs=None, bootstrap: int = DEFAULT_BOOTSTRAP,
             seed: int = 0, bracketed_only: bool = False) -> Allocation:
    """N_opt ∝ C^a and D_opt ∝ C^b by approach 1, 2 or 3 of Hoffmann et al. 2022 (`bracketed_only`: approach 2's)."""
    if approach == 1:
        return approach1(C, N, L, D, runs=runs, bootstrap=bootstrap, seed=seed)
    if approach == 2:
        return approach2(C, N, L, D, bootstrap=bootstrap, seed=seed, bracketed_only=bracketed_only)
    if approach == 3:
        return approach3(C, N, L, D, runs=runs, bootstrap=bootstrap, seed=seed)
    raise FitError(f"unknown approach {approach!r}; expected 1, 2 or 3")


# How N and C are counted (Porian et al. 2024, §3; Pearce & Song 2024): Kaplan counts the non-embedding
# parameters and C = 6ND; Hoffmann et al. count every parameter, and their FLOPs include the
# (de-)embedding and attention. `counting_variants` names the four combinations.
COUNTINGS = {
    "N without embeddings, C = 6ND (Kaplan)": ("N", "6ND"),
    "N with embeddings, C = 6ND": ("N_total", "6ND"),
    "N without embeddings, C exact": ("N", "C_exact"),
    "N with embeddings, C exact (Chinchilla)": ("N_total", "C_exact"),
}


def counting_variants(t: pd.DataFrame, loss: str = "final_val_loss", run: str = "N") -> dict[str, pd.DataFrame]:
    """The points of a runs table (`runs_table(..., budgets=True)`: N, N_total, tokens, C_exact) as
    `compare` reads them, once for each way of counting N and C in COUNTINGS. C = 6ND uses the N of
    the same row (so with embeddings it is 6 N_total D); the exact count is the run's own (it does not
    depend on how N is counted)."""
    out = {}
    for name, (n_col, c_col) in COUNTINGS.items():
        N = t[n_col].astype(float)
        C = 6 * N * t["tokens"] if c_col == "6ND" else t[c_col].astype(float)
        out[name] = pd.DataFrame({"C": C.to_numpy(), "N": N.to_numpy(), "L": t[loss].to_numpy(float),
                                  "D": t["tokens"].to_numpy(float), "run": t[run].to_numpy()})
    return out


def paired_points(a: pd.DataFrame, b: pd.DataFrame, twins: Mapping[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two arms of one step on the same points: the rows of runs table `b` whose run key has a twin in `a`
    (`twins`: b's key -> a's key), and the twins' rows of `a`, each at the budgets both runs of a pair hold (tokens
    as trained). So a change that moves the exponent is read on the same sizes and budgets, one at a time."""
    a_rows = a[a["key"].isin(set(twins.values()))]
    b_rows = b[b["key"].isin(set(twins))]
    at_a = [(k, round(float(d))) for k, d in zip(a_rows["key"], a_rows["tokens"])]
    at_b = [(twins[k], round(float(d))) for k, d in zip(b_rows["key"], b_rows["tokens"])]
    both = set(at_a) & set(at_b)
    return (a_rows[np.array([p in both for p in at_a], bool)].reset_index(drop=True),
            b_rows[np.array([p in both for p in at_b], bool)].reset_index(drop=True))


def sliced_approach2(points: pd.DataFrame, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, per_decade: int = 3,
                     min_sizes: int = MIN_POINTS_PER_BUDGET, bracketed_only: bool = False) -> Allocation:
    """Approach 2 on a table of points (columns C, N, L, D, run, as `counting_variants` gives) cut into IsoFLOP
    slices (`isoflop_slices`)."""
    sl = isoflop_slices(points["C"], points["N"], points["L"], points["D"], runs=points["run"],
                        per_decade=per_decade, min_sizes=min_sizes)
    if sl.empty:
        raise FitError(f"no compute level is reached by {min_sizes} sizes")
    return approach2(sl["C"], sl["N"], sl["L"], sl["D"], bootstrap=bootstrap, seed=seed,
                     bracketed_only=bracketed_only)


def paired_difference(x: Allocation, y: Allocation, *, bootstrap: int = DEFAULT_BOOTSTRAP,
                      seed: int = 0) -> dict[str, Any]:
    """y's a minus x's, for two arms of approach 2 on the same compute levels (one change between them): each
    arm's line through the vertices of the levels both have a minimum at, and a 95% interval from resampling those
    levels, the same draw in both arms (so what the levels share does not widen the difference). Returns diff,
    lo, hi (NaN without an interval), levels, and a_x, a_y on those levels."""
    def good(res: Allocation) -> pd.DataFrame:
        o = res.optima
        return o[o["convex"] & np.isfinite(o["D_opt"])].set_index("C")

    gx, gy = good(x), good(y)
    common = sorted(set(gx.index) & set(gy.index))
    if len(common) < MIN_BUDGETS:
        raise FitError(f"the two arms share {len(common)} compute levels with a minimum; a difference needs "
                       f"{MIN_BUDGETS}")
    gx, gy = gx.loc[common].reset_index(), gy.loc[common].reset_index()
    a_x, a_y = _lines(gx)["a"], _lines(gy)["a"]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(common), len(common)) for _ in range(bootstrap)]
    diffs = [_lines(gy.iloc[i])["a"] - _lines(gx.iloc[i])["a"] for i in draws if len(np.unique(i)) >= 2]
    lo, hi = _percentile_ci(np.array(diffs)) if len(diffs) >= 2 else (math.nan, math.nan)
    return dict(diff=a_y - a_x, lo=lo, hi=hi, levels=len(common), a_x=a_x, a_y=a_y)


def tells_apart(d: Mapping[str, Any]) -> bool:
    """Whether a `paired_difference` has an interval, and the interval leaves out zero."""
    return bool(np.isfinite(d["lo"]) and np.isfinite(d["hi"]) and (d["lo"] > 0 or d["hi"] < 0))


def difference_text(d: Mapping[str, Any]) -> str:
    """A `paired_difference` in words: the signed difference, its interval, and what was resampled."""
    interval = ("no interval" if not np.isfinite(d["lo"]) else
                f"95% interval {d['lo']:+.3f} to {d['hi']:+.3f}")
    return f"{d['diff']:+.3f} ({interval}, the {d['levels']} levels both arms hold resampled together)"


def compare(variants: Mapping[str, pd.DataFrame], approaches: Sequence[int] = APPROACHES, *,
            bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, per_decade: int = 3,
            min_sizes: int = MIN_POINTS_PER_BUDGET, bracketed_only: bool = False) -> pd.DataFrame:
    """The exponent a (and b) of each approach on each variant of one set of runs, a row each.

    A variant is a table of points with columns C, N, L, D and `run` (one label per learning curve
    or per size): the same runs with N or C counted another way, or another set of runs. Approach 2
    reads the variant's IsoFLOP slices (`isoflop_slices` with `per_decade` and `min_sizes`; `bracketed_only` as
    for `approach2`). The fitted `Allocation` is kept under `fit` (for `compared_difference`). A fit
    that cannot be made gives a row with NaN, no fit, and the reason under `error`, so that one failing
    variant leaves the others' rows.
    """
    rows = []
    for name, df in variants.items():
        for approach in approaches:
            row: dict[str, Any] = dict(variant=name, approach=approach, fit=None)
            try:
                if approach == 2:
                    res = sliced_approach2(df, bootstrap=bootstrap, seed=seed, per_decade=per_decade,
                                           min_sizes=min_sizes, bracketed_only=bracketed_only)
                    row["edges"] = int(res.optima["edge"].sum())
                else:
                    res = allocate(approach, df["C"], df["N"], df["L"], df["D"], runs=df["run"],
                                   bootstrap=bootstrap, seed=seed)
                lo, hi = res.ci.get("a", (math.nan, math.nan))
                row.update(a=res.a, a_lo=lo, a_hi=hi, b=res.b, points=res.n_points, units=res.n_units,
                           warnings=len(res.warnings), error="", fit=res)
            except FitError as e:
                row.update(a=math.nan, a_lo=math.nan, a_hi=math.nan, b=math.nan, error=str(e))
            rows.append(row)
    cols = ["variant", "approach", "a", "a_lo", "a_hi", "b", "points", "units", "edges", "warnings", "error", "fit"]
    return pd.DataFrame(rows).reindex(columns=cols)


def compared_difference(table: pd.DataFrame, x: str, y: str, *, bootstrap: int = DEFAULT_BOOTSTRAP,
                        seed: int = 0) -> dict[str, Any] | None:
    """`paired_difference` of approach 2 between variants `x` and `y` of a `compare` table, from the fits the
    table holds (nothing is refitted); None where either variant is missing or has no fit, or the two share too
    few levels."""
    fits = []
    for name in (x, y):
        row = table[(table["variant"] == name) & (table["approach"] == 2)]
        if row.empty or not isinstance(row.iloc[0]["fit"], Allocation):
            return None
        fits.append(row.iloc[0]["fit"])
    try:
        return paired_difference(*fits, bootstrap=bootstrap, seed=seed)
    except FitError:
        return None


# ---------------------------------------------------------------------------------------------
# Command line


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `allocate` to a parser."""
    parser.add_argument("--csv", required=True, metavar="FILE", help="a CSV file with one row a point")
    # a string, so that an unknown approach gets this module's one-line error, not argparse's usage
    parser.add_argument("--approach", required=True, metavar="{1,2,3}",
                        help="1: learning-curve envelope; 2: IsoFLOP parabolas; 3: parametric L(N, D)")
    parser.add_argument("--compute", required=True, metavar="COL", help="column of the training compute C (FLOPs)")
    parser.add_argument("--n", required=True, metavar="COL", help="column of the model size N")
    parser.add_argument("--loss", required=True, metavar="COL", help="column of the loss L")
    parser.add_argument("--d", metavar="COL", help="column of the tokens D (default C/(6N))")
    parser.add_argument("--run", metavar="COL", help="column labelling the runs (approaches 1 and 3; "
                        "default: approach 1 one run a size, approach 3 one run a row)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="K",
                        help=f"bootstrap resamples (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")
    parser.add_argument("--bracketed-only", action="store_true", help="approach 2: leave out a budget whose optimum "
                        "lies outside its sizes (default: keep it, with a warning)")


def cli(args: argparse.Namespace) -> int:
    """Run `allocate`: JSON on stdout, warnings on stderr; or one `error:` line on stderr and 2."""
    try:
        if str(args.approach).strip() not in ("1", "2", "3"):
            raise FitError(f"unknown approach {args.approach!r}; expected 1, 2 or 3")
        approach = int(args.approach)
        if args.bootstrap < 0:
            raise FitError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        if args.run is not None and approach == 2:
            raise FitError("--run is for approaches 1 and 3; approach 2 groups rows by their compute value")
        if args.bracketed_only and approach != 2:
            raise FitError("--bracketed-only is for approach 2, whose budgets have optima")
        df = fitting.read_csv(args.csv, (args.compute, args.n, args.loss, args.d, args.run))
        cols = {"compute": args.compute, "N": args.n, "loss": args.loss, "D": args.d}
        values = {k: None if c is None else fitting.numeric_column(df, c) for k, c in cols.items()}
        for k, v in values.items():
            if v is None:
                continue
            blank = ~np.isfinite(v)
            if blank.any():
                raise FitError(f"column {cols[k]} ({k}) has {int(blank.sum())} missing or infinite value(s), "
                               f"first at row {int(np.argmax(blank))}")
            if (v <= 0).any():
                i = int(np.argmax(v <= 0))
                raise FitError(f"column {cols[k]} ({k}) must be positive; {int((v <= 0).sum())} value(s) are not, "
                               f"first {float(v[i]):g} at row {i}")
        result = allocate(approach, values["compute"], values["N"], values["loss"], values["D"],
                          runs=None if args.run is None else df[args.run].to_numpy(),
                          bootstrap=args.bootstrap, seed=args.seed, bracketed_only=args.bracketed_only)
    except FitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=1))
    return 0
