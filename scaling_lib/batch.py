"""The critical batch size: steps against batch size at a fixed loss, B_crit(L), and the gradient noise scale.

McCandlish et al. (2018) found that the steps S and examples E = B S needed to reach a loss satisfy
(S/S_min - 1)(E/E_min - 1) = 1, that is S = S_min (1 + B_crit/B) with B_crit = E_min/S_min; Kaplan et
al. (2020, §5.1) confirmed it for Transformers and fitted B_crit(L) = B*/L^(1/alpha_B). The fits here
work on log S, like those of `scaling_lib.fit`, and reuse its multistart least squares, its resampler
and its `FitResult`. The gradient noise scale B_simple = tr(Sigma)/|G|^2, which predicts B_crit, is
estimated from gradient norms at two batch sizes (McCandlish et al. 2018, Appendix A).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .fit import (FitError, FitResult, _json_float, _least_squares, _multistart, _one_blas_thread, check_positive,
                  numeric_array, numeric_column, read_csv, resampler)

MIN_BATCH_SIZES = 3  # two parameters: a third batch size is the least that tests the form
DEFAULT_BOOTSTRAP = 1000
# Beyond this factor outside the batch sizes measured, B_crit is not identified: the steps bend by less
# than 1% within the data (S ~ E_min/B above, S ~ S_min below), so any larger (smaller) B_crit fits as well.
IDENTIFIED_FACTOR = 100.0
_LOG_MARGIN = 30.0  # the optimiser's bounds on log B_crit around the data, in e-folds (~1e13)


# ---------------------------------------------------------------------------------------------
# S = S_min (1 + B_crit / B)


def steps_at_batch(B, S_min: float, B_crit: float) -> np.ndarray:
    """Steps to reach a loss at batch size B: S = S_min (1 + B_crit/B).

    Kaplan et al. 2020, Eq. 5.1 and 5.4, after McCandlish et al. 2018.
    """
    return S_min * (1.0 + B_crit / np.asarray(B, dtype=float))


def min_steps(S, B, B_crit) -> np.ndarray:
    """The fewest steps a loss allows, from S steps taken at batch size B: S_min = S/(1 + B_crit/B).

    Kaplan et al. 2020, Eq. 5.4; the inverse of `steps_at_batch`."""
    return np.asarray(S, dtype=float) / (1.0 + np.asarray(B_crit, dtype=float) / np.asarray(B, dtype=float))


def min_compute(C, B, B_crit) -> np.ndarray:
    """The least compute a loss allows, from C spent at batch size B: C_min = C/(1 + B/B_crit).

    Kaplan et al. 2020, Eq. 5.5."""
    return np.asarray(C, dtype=float) / (1.0 + np.asarray(B, dtype=float) / np.asarray(B_crit, dtype=float))


def _log_steps(lB, th):
    # log S = log S_min + log(1 + B_crit/B), with theta = (log S_min, log B_crit)
    return th[0] + np.logaddexp(0.0, th[1] - lB)


class CriticalBatchFit(FitResult):
    """A fit of S = S_min (1 + B_crit/B) to one loss target: S_min, B_crit and E_min = S_min B_crit, with intervals.

    Kaplan et al. 2020, Eq. 5.1-5.2. `predict(B)` gives the steps at batch size B.
    """

    def predict(self, x, x2=None) -> np.ndarray:
        return steps_at_batch(x, self.params["S_min"], self.params["B_crit"])


@dataclass(frozen=True)
class _Bounds:
    lower: list[float]
    upper: list[float]


def _bounds(lB, lS) -> _Bounds:
    lo_B, hi_B = float(lB.min()) - _LOG_MARGIN, float(lB.max()) + _LOG_MARGIN
    # S_min is at most the fewest steps measured (S > S_min at every B) and may fall as far as B_crit rises
    return _Bounds([float(lS.min()) - 2 * _LOG_MARGIN - (hi_B - lo_B), lo_B], [float(lS.max()) + 1.0, hi_B])


def _fit_critical_once(lB, lS, starts=None) -> tuple[dict[str, float], bool]:
    """Least squares on log S from a grid of B_crit over the data (or from `starts`); (params, not identified)."""
    b = _bounds(lB, lS)

    def resid(th):
        return lS - _log_steps(lB, th)

    def jac(th):
        w = 1.0 / (1.0 + np.exp(lB - th[1]))  # d log(1 + B_crit/B) / d log B_crit
        return -np.column_stack([np.ones_like(lB), w])

    if starts is None:
        # for a given B_crit the best log S_min is the mean residual: start there, B_crit across the data
        grid = np.linspace(lB.min() - 3.0, lB.max() + 3.0, 9)
        starts = [np.array([np.mean(lS - np.logaddexp(0.0, g - lB)), g]) for g in grid]
    th = _multistart(_least_squares(resid, jac, b.lower, b.upper), starts)
    margin = math.log(IDENTIFIED_FACTOR)
    at_bound = bool(th[1] < lB.min() - margin or th[1] > lB.max() + margin)
    S_min, B_crit = math.exp(th[0]), math.exp(th[1])
    return {"S_min": S_min, "B_crit": B_crit, "E_min": S_min * B_crit}, at_bound


def _validate_critical(B, S) -> tuple[np.ndarray, np.ndarray]:
    out = [check_positive(name, numeric_array(name, v)) for name, v in (("B", B), ("S", S))]
    if len(out[0]) != len(out[1]):
        raise FitError(f"arrays of different lengths: B {len(out[0])}, S {len(out[1])}")
    sizes = np.unique(out[0])
    if len(sizes) < MIN_BATCH_SIZES:
        raise FitError(f"{len(sizes)} batch size(s) ({', '.join(f'{b:g}' for b in sizes)}); "
                       f"the critical-batch fit needs at least {MIN_BATCH_SIZES}")
    return out[0], out[1]


def fit_critical_batch(B, S, *, bootstrap: int = 0, seed: int = 0, groups=None) -> CriticalBatchFit:
    """Fit S = S_min (1 + B_crit/B) to the steps S needed to reach one loss target at batch sizes B.

    Kaplan et al. 2020, Eq. 5.1-5.2 (McCandlish et al. 2018): E = B S, B_crit = E_min/S_min. Least squares
    on log S; a seeded bootstrap of `bootstrap` resamples (whole `groups` if given, e.g. runs) gives the
    95% intervals of S_min, E_min and B_crit. A fit whose B_crit lies more than IDENTIFIED_FACTOR outside
    the batch sizes is refused (its steps do not bend within them); a resample of that kind keeps
    B_crit = inf (S_min = 0) or B_crit = 0 (E_min = 0), which widens the interval honestly.
    """
    B, S = _validate_critical(B, S)
    if bootstrap < 0:
        raise FitError(f"bootstrap must be >= 0, got {bootstrap}")
    lB, lS = np.log(B), np.log(S)
    with _one_blas_thread():
        params, at_bound = _fit_critical_once(lB, lS)
        if at_bound:
            side = "above the largest" if math.log(params["B_crit"]) > lB.max() else "below the smallest"
            raise FitError(f"the steps do not bend between batch sizes {B.min():g} and {B.max():g}: B_crit lies "
                           f"more than {IDENTIFIED_FACTOR:g}x {side} of them and cannot be estimated from these points")
        residuals = lS - np.log(steps_at_batch(B, params["S_min"], params["B_crit"]))
        boot = _bootstrap_critical(lB, lS, params, bootstrap, seed, resampler(len(lS), groups)) if bootstrap else None
    n_ok = 0 if boot is None else len(boot)
    ci: dict[str, tuple[float, float]] = {}
    if n_ok >= 2:
        with np.errstate(invalid="ignore"):
            ci = {k: (float(np.percentile(boot[k], 2.5)), float(np.percentile(boot[k], 97.5)))
                  for k in ("S_min", "E_min", "B_crit")}
    return CriticalBatchFit(
        form="critical-batch", params=params, ci=ci, residuals=residuals,
        rmse_log=float(np.sqrt(np.mean(residuals**2))), n_points=len(S), n_boot=int(bootstrap), n_boot_ok=n_ok,
        boot_params=boot, resampling="points" if groups is None else "groups",
    )


def _bootstrap_critical(lB, lS, params, K, seed, draw) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = [np.array([math.log(params["S_min"]), math.log(params["B_crit"])])]
    rows = []
    for _ in range(K):
        idx = draw(rng)
        if len(np.unique(lB[idx])) < MIN_BATCH_SIZES:
            continue  # a degenerate resample is dropped, as in fit._bootstrap
        try:
            p, at_bound = _fit_critical_once(lB[idx], lS[idx], start)
        except FitError:
            continue
        if at_bound:
            # B_crit not identified in this resample: past the largest B, S ~ E_min/B (S_min -> 0, B_crit
            # -> inf); below the smallest, S ~ S_min (B_crit, E_min -> 0)
            if math.log(p["B_crit"]) > lB[idx].max():
                p = {"S_min": 0.0, "B_crit": math.inf, "E_min": p["E_min"]}
            else:
                p = {"S_min": p["S_min"], "B_crit": 0.0, "E_min": 0.0}
        rows.append(p)
    return pd.DataFrame(rows, columns=["S_min", "B_crit", "E_min"])


def steps_to_reach(steps, loss, target: float) -> float:
    """The first step at which a learning curve reaches `target`, interpolated linearly in log step; NaN if never.

    How the steps S of Kaplan et al. 2020, Fig. 18 (App. D.3) are read off curves at several batch sizes.
    """
    steps, loss = np.asarray(steps, dtype=float), np.asarray(loss, dtype=float)
    order = np.argsort(steps)
    steps, loss = steps[order], loss[order]
    hit = np.flatnonzero(loss <= target)
    if len(hit) == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    s0, s1, l0, l1 = steps[i - 1], steps[i], loss[i - 1], loss[i]
    if s0 <= 0:
        return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1))
    t = (l0 - target) / (l0 - l1)
    return float(math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0))))


# ---------------------------------------------------------------------------------------------
# B_crit(L) = B* / L^(1/alpha_B)


class CriticalBatchLossFit(FitResult):
    """A fit of B_crit(L) = B*/L^(1/alpha_B): alpha_B and B_star, with intervals. Kaplan et al. 2020, Eq. 5.3."""

    def predict(self, x, x2=None) -> np.ndarray:
        return bcrit_of_loss(x, self.params["B_star"], self.params["alpha_B"])


def bcrit_of_loss(L, B_star: float, alpha_B: float) -> np.ndarray:
    """B_crit(L) = B*/L^(1/alpha_B).

    Kaplan et al. 2020, Eq. 1.4 / 5.3 (B* = 2.1e8 tokens, alpha_B = 0.21 on WebText2).
    """
    return np.exp(math.log(B_star) - np.log(np.asarray(L, dtype=float)) / alpha_B)


def fit_bcrit_loss(L, B_crit, *, bootstrap: int = 0, seed: int = 0, groups=None) -> CriticalBatchLossFit:
    """Fit B_crit(L) = B*/L^(1/alpha_B) across loss targets (linear in log-log), with a seeded bootstrap.

    Kaplan et al. 2020, Eq. 5.3. The targets' B_crit are usually read off the same runs, so they are not
    independent and a bootstrap over targets understates the uncertainty; resample runs upstream for that.
    """
    L, B_crit = (np.asarray(v, dtype=float) for v in (L, B_crit))
    if L.shape != B_crit.shape or L.ndim != 1:
        raise FitError(f"L and B_crit must be one-dimensional and of one length, got {L.shape} and {B_crit.shape}")
    for name, a in (("L", L), ("B_crit", B_crit)):
        if not np.all(np.isfinite(a) & (a > 0)):
            raise FitError(f"{name} must be positive and finite at every target")
    if len(np.unique(L)) < 3:
        raise FitError(f"{len(np.unique(L))} loss target(s); B_crit(L) needs at least 3")
    lL, lB = np.log(L), np.log(B_crit)

    def once(idx):
        slope, intercept = np.polyfit(lL[idx], lB[idx], 1)
        if slope >= 0:
            raise FitError("B_crit does not fall with the loss: no positive alpha_B")
        return {"alpha_B": float(-1.0 / slope), "B_star": float(math.exp(intercept))}

    params = once(np.arange(len(L)))
    residuals = lB - np.log(bcrit_of_loss(L, params["B_star"], params["alpha_B"]))
    rows = []
    if bootstrap > 0:
        rng, draw = np.random.default_rng(seed), resampler(len(L), groups)
        for _ in range(bootstrap):
            idx = draw(rng)
            if len(np.unique(lL[idx])) < 2:
                continue
            try:
                rows.append(once(idx))
            except FitError:
                continue
    boot = pd.DataFrame(rows, columns=["alpha_B", "B_star"]) if bootstrap > 0 else None
    ci = {k: (float(np.percentile(boot[k], 2.5)), float(np.percentile(boot[k], 97.5)))
          for k in ("alpha_B", "B_star")} if boot is not None and len(boot) >= 2 else {}
    return CriticalBatchLossFit(
        form="bcrit-loss", params=params, ci=ci, residuals=residuals, rmse_log=float(np.sqrt(np.mean(residuals**2))),
        n_points=len(L), n_boot=int(bootstrap), n_boot_ok=0 if boot is None else len(boot), boot_params=boot,
        resampling="points" if groups is None else "groups",
    )


# ---------------------------------------------------------------------------------------------
# The gradient noise scale


@dataclass(frozen=True)
class NoiseScale:
    """Unbiased |G|^2 and tr(Sigma), and B_simple = tr(Sigma)/|G|^2, in the unit of the batch sizes given.

    McCandlish et al. 2018, §2.2 and Appendix A.
    """

    G2: float
    trace_sigma: float
    B_simple: float
    B_small: float
    B_big: float
    n: int  # measurements averaged

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_float(getattr(self, k)) if k != "n" else self.n
                for k in ("G2", "trace_sigma", "B_simple", "B_small", "B_big", "n")}


def noise_scale(g2_small, g2_big, B_small: float, B_big: float) -> NoiseScale:
    """B_simple from squared gradient norms |G_B|^2 measured at two batch sizes B_small < B_big.

    McCandlish et al. 2018, Appendix A: since E|G_B|^2 = |G|^2 + tr(Sigma)/B,
    |G|^2 = (B_big |G_big|^2 - B_small |G_small|^2)/(B_big - B_small) and
    tr(Sigma) = (|G_small|^2 - |G_big|^2)/(1/B_small - 1/B_big), each unbiased. Several measurements
    (arrays) are averaged before the ratio is taken, as the paper advises: the ratio of means is far less
    biased than the mean of ratios. B_simple is NaN where the estimate of |G|^2 is not positive or that of
    tr(Sigma) is negative (too few measurements).
    """
    g2_small, g2_big = np.atleast_1d(np.asarray(g2_small, float)), np.atleast_1d(np.asarray(g2_big, float))
    if not (0 < B_small < B_big):
        raise ValueError(f"need 0 < B_small < B_big, got B_small {B_small:g}, B_big {B_big:g}")
    if g2_small.shape != g2_big.shape or g2_small.size == 0:
        raise ValueError(f"g2_small and g2_big must be of one, non-zero length, got {g2_small.size} and {g2_big.size}")
    if not (np.all(np.isfinite(g2_small)) and np.all(np.isfinite(g2_big))):
        raise ValueError("squared gradient norms must be finite")
    s, b = float(g2_small.mean()), float(g2_big.mean())
    G2 = (B_big * b - B_small * s) / (B_big - B_small)
    trace = (s - b) / (1.0 / B_small - 1.0 / B_big)
    return NoiseScale(G2=G2, trace_sigma=trace, B_simple=trace / G2 if G2 > 0 and trace >= 0 else math.nan,
                      B_small=float(B_small), B_big=float(B_big), n=int(g2_small.size))


def measure_noise_scale(model, loss_fn: Callable, batches: Iterable[Sequence], *, chunks: int,
                        examples_per_item: float = 1.0) -> NoiseScale:
    """B_simple of `model` at its current weights, from big batches each split into `chunks` small ones.

    `loss_fn(model, *batch)` returns the mean loss over a batch (a tuple of tensors with the batch along
    dim 0, each big batch's size divisible by `chunks`). Each chunk's gradient gives |G_small|^2 and their
    mean, the big batch's gradient, |G_big|^2 (the data-parallel estimate of McCandlish et al. 2018,
    Appendix A.1). Batch sizes count items (rows) times `examples_per_item` (e.g. the tokens of a sequence,
    for B in tokens). The weights, their .grad and the model's train/eval mode are left as they are.
    """
    import torch

    if chunks < 2:
        raise ValueError(f"chunks must be at least 2 (a small and a big batch), got {chunks}")
    params = [p for p in model.parameters() if p.requires_grad]
    g2_small, g2_big, sizes = [], [], set()
    for batch in batches:
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        n = len(batch[0])
        if n % chunks:
            raise ValueError(f"a batch of {n} items does not split into {chunks} equal chunks")
        sizes.add(n)
        total, norms = None, []
        for part in zip(*(t.chunk(chunks, dim=0) for t in batch)):
            grads = torch.autograd.grad(loss_fn(model, *part), params, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                              for g, p in zip(grads, params)])
            norms.append(float(flat @ flat))
            total = flat if total is None else total + flat
        g2_small.append(float(np.mean(norms)))
        mean = total / chunks
        g2_big.append(float(mean @ mean))
    if not sizes:
        raise ValueError("no batches given")
    if len(sizes) > 1:
        raise ValueError(f"the batches differ in size ({', '.join(map(str, sorted(sizes)))}); give equal batches")
    n = sizes.pop()
    return noise_scale(g2_small, g2_big, n / chunks * examples_per_item, n * examples_per_item)


NOISE_CURVE_COLUMNS = ["key", "N", "n_layer", "d_model", "batch_size", "n_ctx", "lr", "seed", "step", "tokens",
                       "val_loss", "B_simple", "G2", "trace_sigma"]


def noise_scale_curve(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """B_simple along training, read back from run records: one row per curve point where it was measured.

    Runs trained with config `noise_batches` > 0 (train.noise_point) carry B_simple (in tokens), G2 (|G|^2)
    and trace_sigma (tr Sigma) at each curve evaluation; the others are left out. Columns: the run's key,
    N, n_layer, d_model, batch_size (sequences a step), n_ctx, lr, seed; the point's step, tokens and
    val_loss; and the three estimates, NaN where the measurement gave none (|G|^2 not positive or tr Sigma
    negative: too noisy at that point, as at the first steps). To plot B_simple against the loss, and beside
    B_crit(L) (McCandlish et al. 2018, Fig. 7; Kaplan et al. 2020, Fig. 10). A few noisy points pool better
    as means of G2 and trace_sigma (their ratio) than as a mean of B_simple (`noise_scale` says why). The
    last point of an evaluation-2 run holds the final windows' val_loss, as the curve does.
    """
    rows = []
    for r in records:
        c = r["config"]
        for point in r.get("curve", []):
            if "B_simple" not in point:
                continue
            rows.append(dict(key=r["key"], N=r["N"], n_layer=c["n_layer"], d_model=c["d_model"],
                             batch_size=c["batch_size"], n_ctx=c["n_ctx"], lr=c["lr"], seed=c["seed"],
                             step=point["step"], tokens=point["tokens"],
                             **{k: math.nan if point.get(k) is None else float(point[k])
                                for k in ("val_loss", "B_simple", "G2", "trace_sigma")}))
    return pd.DataFrame(rows, columns=NOISE_CURVE_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Command line: python -m scaling_lib bcrit


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `bcrit` to a parser."""
    parser.add_argument("--csv", required=True, metavar="FILE", help="a CSV file, one row a (batch size, steps) point")
    parser.add_argument("--batch", required=True, metavar="COL", help="column of the batch size B")
    parser.add_argument("--steps", required=True, metavar="COL", help="column of the steps S to reach the target")
    parser.add_argument("--group", metavar="COL", help="fit each value of this column apart (e.g. the loss target)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="K",
                        help=f"bootstrap resamples for the 95%% intervals (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")


def _read_points(args) -> pd.DataFrame:
    df = read_csv(args.csv, (args.batch, args.steps, args.group))
    for col in (args.batch, args.steps):
        v = pd.Series(numeric_column(df, col))
        bad = v.isna() | ~np.isfinite(v) | (v <= 0)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise FitError(f"column {col} has {int(bad.sum())} value(s) that are not positive numbers, "
                           f"first {df[col].iloc[row]!r} at row {row}")
        df[col] = v.to_numpy()
    if args.group is not None and df[args.group].isna().any():
        raise FitError(f"column {args.group} has {int(df[args.group].isna().sum())} empty value(s)")
    if args.bootstrap < 0:
        raise FitError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    return df


def critical_batch_table(df: pd.DataFrame, batch: str, steps: str, group: str | None = None, *,
                         bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The critical-batch fit of each group of a table, as JSON-ready dicts keyed by the group's value ('all')."""
    groups = [("all", df)] if group is None else list(df.groupby(group, sort=True))
    out = {}
    for name, g in groups:
        try:
            res = fit_critical_batch(g[batch].to_numpy(), g[steps].to_numpy(), bootstrap=bootstrap, seed=seed)
        except FitError as exc:
            raise FitError(str(exc) if group is None else f"group {group}={name}: {exc}") from None
        d = res.to_dict()
        out[str(name)] = {**{k: d["params"][k] for k in ("S_min", "E_min", "B_crit")}, "ci": d["ci"],
                          "batch_sizes": int(g[batch].nunique()),
                          **{k: v for k, v in d.items() if k not in ("form", "params", "ci")}}
    return out


def cli(args: argparse.Namespace) -> int:
    """`bcrit`: S_min, E_min and B_crit with 95% intervals for each group, as JSON; bad input raises FitError."""
    df = _read_points(args)
    groups = critical_batch_table(df, args.batch, args.steps, args.group, bootstrap=args.bootstrap, seed=args.seed)
    out = {"law": "S = S_min (1 + B_crit/B), E = B S, B_crit = E_min/S_min (Kaplan et al. 2020, Eq. 5.1-5.2)",
           "group": args.group, "bootstrap": args.bootstrap, "seed": args.seed, "groups": groups}
    print(json.dumps(out, indent=1))
    return 0
