"""Fits of the scaling laws: arrays in, a frozen result (parameters, bootstrap intervals, residuals) out.

Every form is fitted in log L, where the noise of a loss curve is roughly multiplicative, and every
law is evaluated in log space, because the scales (N_c ~ 1e13 against N ~ 1e3) overflow otherwise.
The forms whose fit is not linear are started from a grid of points, as Hoffmann et al. (2022) and
Besiroglu et al. (2024) do, since their optimum depends on where the search starts.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, minimize
from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, Approach 3

FORMS = ("power", "power-offset", "log", "kaplan-nd", "kaplan-ns", "chinchilla")

PARAMS: dict[str, tuple[str, ...]] = {
    "power": ("alpha", "X_c", "log_X_c"),
    "power-offset": ("E", "A", "alpha"),
    "log": ("a", "b"),
    "kaplan-nd": ("alpha_N", "alpha_D", "N_c", "D_c"),
    "kaplan-ns": ("alpha_N", "N_c", "alpha_S", "S_c"),
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
}

TWO_VARIABLE = ("kaplan-nd", "kaplan-ns", "chinchilla")

# The exponents the least-squares fitters bound from above. A resample that ends at the cap has not
# found an optimum in it: an interval that reaches the cap has no upper end (`FitResult.reaches_cap`).
EXPONENT_CAP = 10.0
CAPPED: dict[str, tuple[str, ...]] = {
    "power-offset": ("alpha",),
    "kaplan-nd": ("alpha_N", "alpha_D"),
    "kaplan-ns": ("alpha_N", "alpha_S"),
}


def free_params(form: str) -> int:
    """How many parameters of `form` are fitted (the power law's log_X_c is X_c again, not a free one)."""
    return len(PARAMS[form]) - (form == "power")


def _at_cap(value):
    """Whether an exponent (or each of an array of them) ended at `EXPONENT_CAP`, up to the optimiser's rounding."""
    return np.asarray(value, float) >= EXPONENT_CAP * (1 - 1e-6)


_SCALES = ("X_c", "A", "B", "N_c", "D_c", "S_c")  # positive scales, compared in log
MAX_CI_RATIO = 2.0  # an interval wider than this factor (hi/lo) leaves its parameter barely determined
TRADE_OFF_CORR = 0.8  # two parameters whose resampled values correlate at least this much trade off
CAP_REACHED = f"resamples reach the fit's cap of {EXPONENT_CAP:g}"
CAP_TEXT = f"upper end not identified: {CAP_REACHED}"


class FitError(ValueError):
    """Input a fit cannot use, or a fit that found no optimum; the message is one line."""


# ---------------------------------------------------------------------------------------------
# The laws, for plots and notebooks


def _log(v) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(v, dtype=float))


def _exp(v):
    with np.errstate(over="ignore"):
        return np.exp(v)


def power_law(X, alpha: float, X_c: float) -> np.ndarray:
    """L = (X_c / X)^alpha.

    Kaplan et al. 2020, Eq. 1.1-1.3.
    """
    return _exp(alpha * (_log(X_c) - _log(X)))


def power_offset(X, E: float, A: float, alpha: float) -> np.ndarray:
    """L = E + A / X^alpha: a power law above an irreducible loss E."""
    return _exp(np.logaddexp(_log(E), _log(A) - alpha * _log(X)))


def log_law(X, a: float, b: float) -> np.ndarray:
    """L = a - b ln X, the logarithmic alternative to a power law.

    Kaplan et al. 2020, Fig. 23.
    """
    return a - b * _log(X)


def kaplan_nd(N, D, alpha_N: float, alpha_D: float, N_c: float, D_c: float) -> np.ndarray:
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D; D = inf gives L(N).

    Kaplan et al. 2020, Eq. 1.5.
    """
    return _exp(_log_kaplan_nd(_log(N), _log(D), alpha_N, alpha_D, _log(N_c), _log(D_c)))


def kaplan_ns(N, S, alpha_N: float, N_c: float, alpha_S: float, S_c: float) -> np.ndarray:
    """L(N, S) = (N_c/N)^alpha_N + (S_c/S)^alpha_S; S = inf gives L(N).

    Kaplan et al. 2020, Eq. 1.6.
    """
    return _exp(_log_kaplan_ns(_log(N), _log(S), alpha_N, _log(N_c), alpha_S, _log(S_c)))


def chinchilla(N, D, E: float, A: float, B: float, alpha: float, beta: float) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta.

    Hoffmann et al. 2022, §3.3 (Approach 3).
    """
    return _exp(_log_chinchilla(_log(N), _log(D), _log(A), _log(B), _log(E), alpha, beta))


def chinchilla_optimal(C, params: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N_opt, D_opt) for a budget of C FLOPs under C = 6 N D.

    Hoffmann et al. 2022, §3.3: N_opt = G (C/6)^a, a = beta/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)).
    """
    alpha, beta, A, B = (float(params[k]) for k in ("alpha", "beta", "A", "B"))
    a = beta / (alpha + beta)
    log_G = (math.log(alpha * A) - math.log(beta * B)) / (alpha + beta)
    log_C6 = _log(C) - math.log(6.0)
    N_opt = _exp(log_G + a * log_C6)
    return N_opt, _exp(log_C6) / N_opt


def _log_kaplan_nd(lN, lD, alpha_N, alpha_D, lN_c, lD_c):
    return alpha_D * np.logaddexp((alpha_N / alpha_D) * (lN_c - lN), lD_c - lD)


def _log_kaplan_ns(lN, lS, alpha_N, lN_c, alpha_S, lS_c):
    return np.logaddexp(alpha_N * (lN_c - lN), alpha_S * (lS_c - lS))


def _log_chinchilla(lN, lD, a, b, e, alpha, beta):
    # Hoffmann's parametrisation: A = exp(a), B = exp(b), E = exp(e), so the sum is a log-sum-exp.
    return np.logaddexp(np.logaddexp(a - alpha * lN, b - beta * lD), e)


def _log_predict(form: str, p: Mapping[str, float], lx, lx2) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if form == "power":
            return p["alpha"] * (p.get("log_X_c", _log(p["X_c"])) - lx)
        if form == "power-offset":
            return np.logaddexp(_log(p["E"]), _log(p["A"]) - p["alpha"] * lx)
        if form == "log":
            return _log(p["a"] - p["b"] * lx)
        if form == "kaplan-nd":
            return _log_kaplan_nd(lx, lx2, p["alpha_N"], p["alpha_D"], _log(p["N_c"]), _log(p["D_c"]))
        if form == "kaplan-ns":
            return _log_kaplan_ns(lx, lx2, p["alpha_N"], _log(p["N_c"]), p["alpha_S"], _log(p["S_c"]))
        if form == "chinchilla":
            return _log_chinchilla(
                lx, lx2, _log(p["A"]), _log(p["B"]), _log(p["E"]), p["alpha"], p["beta"]
            )
    raise FitError(f"unknown form {form!r}; expected one of {', '.join(FORMS)}")


# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True, eq=False)  # eq would compare the residual arrays, which is ambiguous
class FitResult:
    """A fitted law: parameters by the paper's names, 95% bootstrap intervals, log residuals."""

    form: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    residuals: np.ndarray = field(repr=False)  # log L - log predicted, one per point
    rmse_log: float
    n_points: int
    n_boot: int = 0
    n_boot_ok: int = 0
    boot_params: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    resampling: str = "points"  # what the bootstrap drew: points, groups, or groups then units within

    @property
    def max_abs_residual(self) -> float:
        """The largest |log L - log predicted|: about the worst relative error."""
        return float(np.max(np.abs(self.residuals)))

    @property
    def ci_missing(self) -> str | None:
        """Why the fit has no intervals (no bootstrap, or too few resamples converged); None if it has them."""
        if self.ci:
            return None
        if self.n_boot == 0:
            return "no bootstrap"
        if self.n_boot == 1:
            return "one bootstrap resample gives no interval"
        return f"only {self.n_boot_ok} of {self.n_boot} bootstrap resamples converged"

    def interval(self, name: str, scale: float = 1.0) -> tuple[float, float]:
        """The 95% interval of parameter `name`, times `scale` (ordered again if it is negative); NaNs if none.

        NaN bounds make every comparison false: test `ci_missing` before reading a conclusion off them.
        """
        if name not in self.params:
            raise KeyError(f"{name!r} is not a parameter of the {self.form} form ({', '.join(self.params)})")
        if name not in self.ci:
            return (math.nan, math.nan)
        lo, hi = sorted((scale * self.ci[name][0], scale * self.ci[name][1]))
        return (lo, hi)

    def reaches_cap(self, name: str) -> bool:
        """Whether the interval of `name` runs up to `EXPONENT_CAP`, the bound its fitter puts on it: then
        the resamples do not identify an upper end, and the interval's top is the optimiser's, not the data's."""
        hi = self.interval(name)[1]
        return name in CAPPED.get(self.form, ()) and math.isfinite(hi) and bool(_at_cap(hi))

    def cap_text(self, name: str) -> str:
        """Why an interval that reaches the cap has no upper end, with how many resamples ended at the cap where
        the resamples are kept: 'upper end not identified: k of n resamples reach the fit's cap of 10'."""
        boot = self.boot_params
        if boot is None or name not in boot or not len(boot):
            return CAP_TEXT
        k = int(_at_cap(boot[name].to_numpy(float)).sum())
        return f"upper end not identified: {k} of {len(boot)} resamples reach the fit's cap of {EXPONENT_CAP:g}"

    def contains(self, name: str, value: float) -> bool | None:
        """Whether `value` lies in the interval of `name`; None where there is no finite interval."""
        lo, hi = self.interval(name)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        if self.reaches_cap(name):  # no upper end: a value above the lower one may or may not be inside
            return False if value < lo else None
        return bool(lo <= value <= hi)

    def interval_ratio(self, name: str) -> float:
        """hi/lo of the interval of `name`: how many times over the data leave it open (inf where lo <= 0,
        NaN where there is no interval)."""
        lo, hi = self.interval(name)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return math.nan
        return math.inf if lo <= 0 else hi / lo

    def trade_off(self, name: str) -> tuple[str, float] | None:
        """The parameter whose resampled values move most with those of `name`, and their correlation (scales
        in log, since they are positive and span decades); None without resamples."""
        boot = self.boot_params
        if boot is None or name not in boot or len(boot) < 3:
            return None
        names = [k for k in boot.columns if k in self.params and k != "log_X_c"]  # log_X_c is X_c again
        cols = {k: np.log(boot[k]) if k in _SCALES and bool((boot[k] > 0).all()) else boot[k] for k in names}
        corr = {k: float(np.corrcoef(cols[name], v)[0, 1]) for k, v in cols.items() if k != name and v.std() > 0}
        corr = {k: c for k, c in corr.items() if math.isfinite(c)}
        if not corr or cols[name].std() == 0:
            return None
        other = max(corr, key=lambda k: abs(corr[k]))
        return other, corr[other]

    def determination_text(self, name: str, label: str | None = None) -> str:
        """A sentence on how well the data pin `name` down: the factor its interval spans, and where that exceeds
        MAX_CI_RATIO, that the data barely determine it, with the parameter it trades off against."""
        label = label or name
        r = self.interval_ratio(name)
        if math.isnan(r):
            return f"{label} has no interval ({self.ci_missing or 'not finite in some resamples'})"
        if r <= MAX_CI_RATIO:
            return f"the 95% interval of {label} spans a factor {r:.2g}"
        span = "includes zero" if math.isinf(r) else f"spans a factor {r:.2g}"
        out = f"the data barely determine {label}: its 95% interval {span}"
        partner = self.trade_off(name)
        if partner is not None and abs(partner[1]) >= TRADE_OFF_CORR:
            out += (f", and across the resamples it moves with {partner[0]} (correlation {partner[1]:+.2f}): "
                    "the fit trades one against the other")
        return out

    def ci_text(self, name: str, fmt: str = ".4f", sep: str = "–", scale: float = 1.0) -> str:
        """The interval of `name` as text, 'lo–hi' in format `fmt`; 'n/a (why)' where there is none.

        `scale` multiplies both bounds (-1 gives the interval of -name, e.g. an exponent's sign flipped).
        """
        lo, hi = self.interval(name, scale)
        if self.ci_missing is not None:
            return f"n/a ({self.ci_missing})"
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return f"n/a ({name} is not finite in some of the {self.n_boot_ok} resamples)"
        if self.reaches_cap(name):  # the lower end only, scaled (a negative scale turns it into an upper end)
            end = scale * self.interval(name)[0]
            return f"{'≥' if scale > 0 else '≤'} {end:{fmt}} ({self.cap_text(name)})"
        return interval_text(lo, hi, fmt, sep)

    def predict(self, x, x2=None) -> np.ndarray:
        """The fitted law at x (and x2 for the two-variable forms)."""
        if self.form in TWO_VARIABLE and x2 is None:
            raise FitError(f"form {self.form!r} needs x2 to predict")
        lx = _log(x)
        lx2 = None if x2 is None else _log(x2)
        if self.form == "log":
            return log_law(x, self.params["a"], self.params["b"])
        return _exp(_log_predict(self.form, self.params, lx, lx2))

    def predict_interval(self, x, x2=None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap interval of the prediction at x (and x2): every resample's law evaluated there.

        NaNs where the fit has no interval (see `ci_missing`).
        """
        shape = np.shape(np.asarray(x, float))
        if self.ci_missing is not None or self.boot_params is None:
            return np.full(shape, math.nan), np.full(shape, math.nan)
        with np.errstate(all="ignore"):
            draws = np.array([replace(self, params=dict(row)).predict(x, x2)
                              for row in self.boot_params.to_dict("records")])
            q = 100 * (1 - level) / 2
            return np.nanpercentile(draws, q, axis=0), np.nanpercentile(draws, 100 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; non-finite numbers become None."""
        return {
            "form": self.form,
            "params": {k: _json_float(v) for k, v in self.params.items()},
            "ci": {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in self.ci.items()},
            "rmse_log": _json_float(self.rmse_log),
            "max_abs_residual": _json_float(self.max_abs_residual),
            "n_points": self.n_points,
            "n_boot": self.n_boot,
            "n_boot_ok": self.n_boot_ok,
            "resampling": self.resampling,
            "ci_missing": self.ci_missing,
        }


def loose_parameters(pairs: Iterable[tuple[str, FitResult]],
                     max_ratio: float = MAX_CI_RATIO) -> list[tuple[str, FitResult]]:
    """The (name, fit) pairs whose parameter's 95% interval spans more than `max_ratio` (hi/lo, an interval
    through zero included), in their order: the parameters the data barely determine, as `determination_text`
    reads them. A parameter without an interval is not among them (its fit says why: `ci_missing`)."""
    return [(name, res) for name, res in pairs if res.interval_ratio(name) > max_ratio]


def interval_text(lo: float, hi: float, fmt: str = ".4f", sep: str = "–") -> str:
    """'0.031–0.045'; with a negative bound 'lo to hi' ('-0.71 to 0.27'), which a dash would garble."""
    return f"{lo:{fmt}}{sep if lo >= 0 and hi >= 0 else ' to '}{hi:{fmt}}"


def _json_float(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# Validation


def numeric_array(name: str, v) -> np.ndarray:
    """`v` as a one-dimensional float array, or a FitError that names it."""
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise FitError(f"{name} is not numeric") from None
    if a.ndim != 1:
        raise FitError(f"{name} must be one-dimensional, got shape {a.shape}")
    return a


def check_positive(name: str, a: np.ndarray, where: str = "index") -> np.ndarray:
    """`a` itself, or a FitError naming `name` and its first NaN, infinite or non-positive entry."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise FitError(f"{name} has {bad.sum()} NaN or infinite value(s), first at {where} {np.argmax(bad)}")
    if (a <= 0).any():
        i = int(np.argmax(a <= 0))
        raise FitError(f"{name} must be positive; {(a <= 0).sum()} value(s) <= 0, first {a[i]:g} at {where} {i}")
    return a


def _validate(form: str, x, y, x2, groups=None, within=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    if form not in FORMS:
        raise FitError(f"unknown form {form!r}; expected one of {', '.join(FORMS)}")
    if form in TWO_VARIABLE and x2 is None:
        raise FitError(f"form {form!r} needs a second variable x2")
    if form not in TWO_VARIABLE and x2 is not None:
        raise FitError(f"form {form!r} takes one variable, but x2 was given")
    arrays = {"x": x, "y": y} if x2 is None else {"x": x, "x2": x2, "y": y}
    out = {name: numeric_array(name, v) for name, v in arrays.items()}
    lengths = {name: len(a) for name, a in out.items()}
    for name, labels in (("groups", groups), ("within", within)):
        if labels is not None:
            lengths[name] = len(np.asarray(labels))
    if len(set(lengths.values())) > 1:
        raise FitError("arrays of different lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    for name, a in out.items():
        check_positive(name, a)
    n_params = free_params(form)
    if len(out["y"]) < n_params + 1:
        raise FitError(
            f"too few points for form {form!r}: {len(out['y'])} given, at least {n_params + 1} needed"
        )
    for name in ("x", "x2"):
        if name in out and len(np.unique(out[name])) < 2:
            raise FitError(f"{name} takes a single value; the fit needs at least two")
    return out["x"], out.get("x2"), out["y"]


# ---------------------------------------------------------------------------------------------
# BLAS threads


@contextlib.contextmanager
def _one_blas_thread():
    """Run the optimisers on one BLAS thread, and restore the count after."""
    # L-BFGS-B and the least-squares solvers call BLAS on 5x5 matrices: threads only add
    # synchronisation, and on a machine shared with a training job that made a Chinchilla fit
    # 10x slower (measured: 2-4 s against 0.25 s).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------------------------------------
# The fitters. Each works on logs (lx, lx2, ly) and returns the parameters by their paper names.


def _multistart(solve: Callable, starts: Sequence[np.ndarray]) -> np.ndarray:
    """Run `solve` from every start and keep the lowest cost; a start that fails is skipped."""
    best, best_cost = None, np.inf
    for th0 in starts:
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                th, cost = solve(np.asarray(th0, dtype=float))
        except Exception:  # a bad start must not end the fit
            continue
        if np.all(np.isfinite(th)) and np.isfinite(cost) and cost < best_cost:
            best, best_cost = th, cost
    if best is None:
        raise FitError("no starting point converged")
    return best


def _least_squares(resid: Callable, jac: Callable, lower, upper) -> Callable:
    def solve(th0):
        th0 = np.clip(th0, lower, upper)
        r = least_squares(
            resid, th0, jac=jac, bounds=(lower, upper), x_scale="jac",
            ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=2000,
        )
        return r.x, 2 * r.cost

    return solve


def _fit_power(lx, lx2, ly, starts):
    # log L = alpha log X_c - alpha log X is linear in log X: the regression is the exact fit.
    slope, intercept = np.polyfit(lx, ly, 1)
    alpha = -slope
    if abs(alpha) < 1e-12:
        raise FitError("the data are flat in x; alpha is zero and X_c undefined")
    # X_c = exp(intercept / alpha) over- or underflows when alpha is tiny (a nearly flat trend):
    # its logarithm is kept too, and predictions use it.
    log_X_c = float(intercept / alpha)
    return {"alpha": float(alpha), "X_c": float(_exp(log_X_c)), "log_X_c": log_X_c}


def _fit_log(lx, lx2, ly, starts):
    y = np.exp(ly)
    # Weighting by 1/L makes the linear fit first-order equal to one on log L: a start that
    # Gauss-Newton on the log residuals then polishes.
    w = 1.0 / y
    M = np.column_stack([np.ones_like(lx), -lx]) * w[:, None]
    th_lin = np.linalg.lstsq(M, y * w, rcond=None)[0]
    th_starts = [th_lin] + [np.array([s["a"], s["b"]]) for s in starts or ()]

    def resid(th):
        return ly - np.log(np.maximum(th[0] - th[1] * lx, 1e-300))

    def jac(th):
        P = np.maximum(th[0] - th[1] * lx, 1e-300)
        return -np.column_stack([1 / P, -lx / P])

    th = _multistart(_least_squares(resid, jac, [-np.inf, -np.inf], [np.inf, np.inf]), th_starts)
    return {"a": float(th[0]), "b": float(th[1])}


def _fit_power_offset(lx, lx2, ly, starts):
    # theta = (E, log A, alpha); E >= 0 and bounded by the smallest loss, alpha > 0 (a falling law).
    y_min = float(np.exp(ly.min()))

    def resid(th):
        return ly - np.logaddexp(np.log(th[0]), th[1] - th[2] * lx)

    def jac(th):
        lP = np.logaddexp(np.log(th[0]), th[1] - th[2] * lx)
        t_over_P = np.exp(th[1] - th[2] * lx - lP)
        return -np.column_stack([np.exp(-lP), t_over_P, -lx * t_over_P])

    if starts:
        th_starts = [np.array([s["E"], math.log(s["A"]), s["alpha"]]) for s in starts]
    else:
        y = np.exp(ly)
        th_starts = []
        for f_E, alpha in itertools.product((0.0, 0.3, 0.6, 0.9), (0.05, 0.15, 0.4, 1.0)):
            E = f_E * y_min
            th_starts.append([E, float(np.mean(np.log(y - E) + alpha * lx)), alpha])
    lower, upper = [0.0, -np.inf, 1e-6], [y_min, np.inf, EXPONENT_CAP]
    th = _multistart(_least_squares(resid, jac, lower, upper), th_starts)
    return {"E": float(th[0]), "A": float(_exp(th[1])), "alpha": float(th[2])}


def _fit_kaplan_nd(lN, lD, ly, starts):
    # theta = (alpha_N, alpha_D, log N_c, log D_c)
    def parts(th):
        aN, aD, lNc, lDc = th
        u = (aN / aD) * (lNc - lN)
        v = lDc - lD
        s = np.logaddexp(u, v)
        return u, v, s

    def resid(th):
        return ly - th[1] * parts(th)[2]

    def jac(th):
        aN, aD, lNc, lDc = th
        u, v, s = parts(th)
        w_u, w_v = np.exp(u - s), np.exp(v - s)
        return -np.column_stack([w_u * (lNc - lN), s - w_u * u, w_u * aN, aD * w_v])

    if starts:
        th_starts = [
            np.array([s["alpha_N"], s["alpha_D"], math.log(s["N_c"]), math.log(s["D_c"])]) for s in starts
        ]
    else:
        th_starts = []
        for aN, aD, sN, sD in itertools.product((0.04, 0.08, 0.16), (0.05, 0.1, 0.2), (0, -3), (0, -3)):
            # Scales put each term alone at the data's level, then below it by e^3.
            th_starts.append([aN, aD, np.median(lN + ly / aN) + sN, np.median(lD + ly / aD) + sD])
    lower, upper = [1e-4, 1e-4, -200.0, -200.0], [EXPONENT_CAP, EXPONENT_CAP, 700.0, 700.0]
    th = _multistart(_least_squares(resid, jac, lower, upper), th_starts)
    return {"alpha_N": float(th[0]), "alpha_D": float(th[1]), "N_c": float(_exp(th[2])), "D_c": float(_exp(th[3]))}


def _fit_kaplan_ns(lN, lS, ly, starts):
    # theta = (alpha_N, log N_c, alpha_S, log S_c)
    def parts(th):
        aN, lNc, aS, lSc = th
        u, v = aN * (lNc - lN), aS * (lSc - lS)
        return u, v, np.logaddexp(u, v)

    def resid(th):
        return ly - parts(th)[2]

    def jac(th):
        aN, lNc, aS, lSc = th
        u, v, s = parts(th)
        w_u, w_v = np.exp(u - s), np.exp(v - s)
        return -np.column_stack([w_u * (lNc - lN), w_u * aN, w_v * (lSc - lS), w_v * aS])

    if starts:
        th_starts = [
            np.array([s["alpha_N"], math.log(s["N_c"]), s["alpha_S"], math.log(s["S_c"])]) for s in starts
        ]
    else:
        y = np.exp(ly)
        th_starts = []
        for aN, aS, f_N in itertools.product((0.04, 0.08, 0.16), (0.3, 0.7, 1.5), (0.3, 0.6, 0.9)):
            # Scales that give the N term a share f_N of the loss, the S term the rest.
            lNc = np.median(lN + np.log(f_N * y) / aN)
            lSc = np.median(lS + np.log((1 - f_N) * y) / aS)
            th_starts.append([aN, lNc, aS, lSc])
    lower, upper = [1e-4, -200.0, 1e-4, -200.0], [EXPONENT_CAP, 700.0, EXPONENT_CAP, 700.0]
    th = _multistart(_least_squares(resid, jac, lower, upper), th_starts)
    return {"alpha_N": float(th[0]), "N_c": float(_exp(th[1])), "alpha_S": float(th[2]), "S_c": float(_exp(th[3]))}


# A modest version of Hoffmann et al.'s grid (theirs: 4,500 starts), in their parametrisation.
# On synthetic data about half of the starts of their grid reach the best optimum, so 32 spare
# enough; pass `starts=start_grid(...)` for a wider search.
CHINCHILLA_GRID = {
    "e": (-1.0, 1.0),
    "a": (5.0, 15.0),
    "b": (5.0, 15.0),
    "alpha": (0.5, 1.0),
    "beta": (0.5, 1.0),
}


def _chinchilla_objective(th, lN, lD, ly, delta=HUBER_DELTA):
    """Summed Huber loss of the log residuals and its gradient.

    Hoffmann et al. 2022, Approach 3; summed, not averaged, after Besiroglu et al. 2024.
    """
    a, b, e, alpha, beta = th
    c0 = a - alpha * lN
    c1 = b - beta * lD
    m = np.maximum(np.maximum(c0, c1), e)
    w0, w1, w2 = np.exp(c0 - m), np.exp(c1 - m), np.exp(e - m)
    s = w0 + w1 + w2
    r = ly - (m + np.log(s))
    # dh is the Huber derivative; dh (r - dh/2) is the Huber value on both sides of delta.
    dh = np.clip(r, -delta, delta)
    f = float(dh @ (r - 0.5 * dh))
    g0, g1 = dh * w0 / s, dh * w1 / s
    return f, -np.array([g0.sum(), g1.sum(), (dh * w2 / s).sum(), -(g0 @ lN), -(g1 @ lD)])


CHINCHILLA_THETA = ("log_A", "log_B", "log_E", "alpha", "beta")  # the coordinates the fit searches in


def chinchilla_jacobian(params: Mapping[str, float], N, D) -> np.ndarray:
    """d log L / d theta at each point, theta = (log A, log B, log E, alpha, beta): (n, 5).

    The Gauss-Newton matrix J^T J it gives is the curvature of a least-squares fit in log L, the
    Huber fit's curvature inside its quadratic zone.
    """
    lN, lD = _log(N), _log(D)
    c0 = math.log(params["A"]) - params["alpha"] * lN
    c1 = math.log(params["B"]) - params["beta"] * lD
    e = np.full_like(lN, math.log(params["E"]))
    m = np.maximum(np.maximum(c0, c1), e)
    w = np.column_stack([np.exp(c0 - m), np.exp(c1 - m), np.exp(e - m)])
    w /= w.sum(axis=1, keepdims=True)  # each term's share of the loss
    return np.column_stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 0] * lN, -w[:, 1] * lD])


def _fit_chinchilla(lN, lD, ly, starts):
    # theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e)
    if starts:
        th_starts = [
            np.array([math.log(s["A"]), math.log(s["B"]), math.log(s["E"]), s["alpha"], s["beta"]])
            for s in starts
        ]
    else:
        g = CHINCHILLA_GRID
        th_starts = [
            np.array([a, b, e, al, be])
            for e, a, b, al, be in itertools.product(g["e"], g["a"], g["b"], g["alpha"], g["beta"])
        ]

    def solve(th0):
        # Tolerances far below the default: with a loss this small the defaults stop early,
        # the trap Besiroglu et al. 2024 found in the original fit.
        r = minimize(
            _chinchilla_objective, th0, args=(lN, lD, ly), jac=True, method="L-BFGS-B",
            options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-9},
        )
        return r.x, r.fun

    th = _multistart(solve, th_starts)
    a, b, e, alpha, beta = th
    return {"E": float(_exp(e)), "A": float(_exp(a)), "B": float(_exp(b)), "alpha": float(alpha), "beta": float(beta)}


_FITTERS: dict[str, Callable] = {
    "power": _fit_power,
    "power-offset": _fit_power_offset,
    "log": _fit_log,
    "kaplan-nd": _fit_kaplan_nd,
    "kaplan-ns": _fit_kaplan_ns,
    "chinchilla": _fit_chinchilla,
}


def _fit_once(form, lx, lx2, ly, starts) -> dict[str, float]:
    params = _FITTERS[form](lx, lx2, ly, starts)
    if any(math.isnan(v) for v in params.values()):
        raise FitError("the fit returned NaN parameters")
    return params


# ---------------------------------------------------------------------------------------------
# The public entry points


def start_grid(**values: Sequence[float]) -> list[dict[str, float]]:
    """Every combination of the given values, as starting points for `fit(..., starts=...)`."""
    names = list(values)
    return [dict(zip(names, map(float, combo))) for combo in itertools.product(*values.values())]


def fit(
    form: str,
    x,
    y,
    x2=None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    groups=None,
    within=None,
    block: int | None = None,
    starts: Sequence[Mapping[str, float]] | None = None,
) -> FitResult:
    """Fit `form` to losses y at x (and x2), with a seeded bootstrap of `bootstrap` resamples.

    `groups` (one label a point, e.g. the model size) makes the bootstrap resample whole groups;
    `within` (a second label, e.g. the seed) makes it hierarchical: groups first, then, inside each
    drawn group, its `within` units with replacement (a size with three seeds may come back with
    seed 1 twice and seed 2 once). `block` (a length, for points in order along a curve, whose
    neighbours are correlated) draws moving blocks of that many consecutive points instead (Künsch
    1989). `starts` (dicts by the paper's names) replaces the default grid.
    """
    if within is not None and groups is None:
        raise FitError("within= resamples inside groups: give groups= too")
    if block is not None and (groups is not None or not 1 <= block <= len(np.atleast_1d(y))):
        raise FitError(f"block= takes a length from 1 to the number of points ({len(np.atleast_1d(y))}), "
                       f"without groups=; got {block}")
    x, x2, y = _validate(form, x, y, x2, groups, within)
    with _one_blas_thread():
        return _fit(form, x, y, x2, bootstrap, seed, groups, within, starts, block)


def _fit(form, x, y, x2, bootstrap, seed, groups, within, starts, block=None) -> FitResult:
    lx, ly = np.log(x), np.log(y)
    lx2 = None if x2 is None else np.log(x2)
    params = _fit_once(form, lx, lx2, ly, starts)
    with np.errstate(all="ignore"):
        residuals = ly - _log_predict(form, params, lx, lx2)
    if not np.all(np.isfinite(residuals)):
        raise FitError(f"the fitted {form} law is not positive at every point")

    ci: dict[str, tuple[float, float]] = {}
    n_ok, boot_df = 0, None
    if bootstrap > 0:
        draw = resampler(len(ly), groups, within, block)
        boot_df = _bootstrap(form, lx, lx2, ly, params, bootstrap, seed, draw)
        n_ok = len(boot_df)
        if n_ok >= 2:
            # a scale that overflows in some resamples (X_c of a nearly flat trend) is inf there; its
            # interval is then inf or NaN, which is the honest answer, without numpy's warning
            with np.errstate(invalid="ignore"):
                ci = {
                    k: (float(np.percentile(boot_df[k], 2.5)), float(np.percentile(boot_df[k], 97.5)))
                    for k in PARAMS[form]
                }
    return FitResult(
        form=form,
        params=params,
        ci=ci,
        residuals=residuals,
        rmse_log=float(np.sqrt(np.mean(residuals**2))),
        n_points=len(y),
        n_boot=int(bootstrap),
        n_boot_ok=n_ok,
        boot_params=boot_df,
        resampling=(f"moving blocks of {block} points" if block else "points" if groups is None else "groups"
                    if within is None else "groups, then units within"),
    )


def resampler(n: int, groups=None, within=None, block: int | None = None) -> Callable[[np.random.Generator], np.ndarray]:
    """A function drawing one bootstrap resample of n points as an index array.

    Points one by one; whole groups (`groups`); groups, then inside each drawn group its `within`
    units (hierarchical: a unit is e.g. one seed's points at one size); or moving blocks of `block`
    consecutive points, cut to n (for ordered, autocorrelated points).
    """
    if block is not None:
        starts = n - block + 1
        k = -(-n // block)
        return lambda rng: np.concatenate([np.arange(s, s + block) for s in rng.integers(0, starts, k)])[:n]
    if groups is None:
        return lambda rng: rng.integers(0, n, n)
    codes, labels = pd.factorize(np.asarray(groups), use_na_sentinel=False)
    if within is None:
        members = [np.flatnonzero(codes == g) for g in range(len(labels))]
        return lambda rng: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
    sub, _ = pd.factorize(np.asarray(within), use_na_sentinel=False)
    units = [[np.flatnonzero((codes == g) & (sub == u)) for u in np.unique(sub[codes == g])]
             for g in range(len(labels))]

    def draw(rng: np.random.Generator) -> np.ndarray:
        parts = []
        for g in rng.integers(0, len(units), len(units)):
            parts += [units[g][u] for u in rng.integers(0, len(units[g]), len(units[g]))]
        return np.concatenate(parts)

    return draw


def _bootstrap(form, lx, lx2, ly, params, K, seed, draw) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Each resample starts from the full fit's optimum rather than the whole grid: the optimum
    # of a resample lies near it, and K grid searches would cost K times the fit.
    starts = None if form in ("power",) else [params]
    rows = []
    for _ in range(K):
        idx = draw(rng)
        try:
            x2 = None if lx2 is None else np.exp(lx2[idx])
            _validate(form, np.exp(lx[idx]), np.exp(ly[idx]), x2)
            p = _fit_once(form, lx[idx], None if lx2 is None else lx2[idx], ly[idx], starts)
        except Exception:  # a degenerate resample (one x value, too few points) is dropped
            continue
        rows.append(p)
    return pd.DataFrame(rows, columns=list(PARAMS[form]))


def extrapolation_check(form: str, x, y, x2=None, *, holdout: int = 2, by=None) -> dict[str, Any]:
    """Fit on all but the `holdout` largest values of x (or of `by`) and predict the held-out points.

    Returns the fit, the held-out mask and the relative errors pred/actual - 1 of those points.
    """
    x, x2, y = _validate(form, x, y, x2)
    key = x if by is None else np.asarray(by)
    if len(key) != len(y):
        raise FitError(f"arrays of different lengths: by {len(key)}, y {len(y)}")
    levels = np.unique(key)
    if holdout < 1 or holdout >= len(levels):
        raise FitError(f"holdout must be between 1 and {len(levels) - 1}, got {holdout}")
    held = np.isin(key, levels[-holdout:])
    train = ~held
    result = fit(form, x[train], y[train], None if x2 is None else x2[train])
    pred = result.predict(x[held], None if x2 is None else x2[held])
    rel = pred / y[held] - 1
    return {
        "fit": result,
        "held_out": held,
        "x": x[held],
        "x2": None if x2 is None else x2[held],
        "actual": y[held],
        "predicted": pred,
        "rel_error": rel,
        "max_abs_rel_error": float(np.max(np.abs(rel))),
    }


FIT_MARGIN = 2.0  # a richer law "fits better" only where it halves the simpler one's residual scale


def residual_scale(result: FitResult) -> float:
    """The root-mean-square log residual per degree of freedom, sqrt(sum r^2 / (n - k)) for k free
    parameters: a scale that an extra parameter does not lower by itself. NaN where n <= k."""
    k = free_params(result.form)
    r = np.asarray(result.residuals, float)
    return float(np.sqrt(np.sum(r ** 2) / (len(r) - k))) if len(r) > k else math.nan


def compare_fits(simpler: FitResult, richer: FitResult, *, margin: float = FIT_MARGIN) -> dict[str, Any]:
    """Whether `richer` (a law with more parameters fitted to the same points, e.g. a power law with a
    floor against the pure power law) fits them markedly better than `simpler`: its residual scale
    (`residual_scale`, which counts each law's parameters) is at most 1/`margin` of the simpler's.

    Returns both scales, their `ratio` (simpler over richer), `margin` and `better` (False where the
    richer law has no degree of freedom left, or the points differ in number)."""
    if margin < 1:
        raise ValueError(f"the margin is a factor of at least 1, not {margin}")
    if free_params(richer.form) <= free_params(simpler.form):
        raise ValueError(f"{richer.form!r} has no more parameters than {simpler.form!r}")
    s_simple, s_rich = residual_scale(simpler), residual_scale(richer)
    same = simpler.n_points == richer.n_points
    if not same or not math.isfinite(s_rich):
        ratio = math.nan
    else:
        ratio = s_simple / s_rich if s_rich > 0 else (math.inf if s_simple > 0 else math.nan)
    better = bool(same and math.isfinite(s_rich) and s_simple > 0 and s_rich * margin <= s_simple)
    return dict(s_simpler=s_simple, s_richer=s_rich, ratio=ratio, margin=margin, better=better)


def rival_verdict(scales: dict[str, float], *, margin: float = FIT_MARGIN) -> tuple[str | None, str]:
    """Which of two laws with as many parameters, fitted to the same points, fits them better, by their residual
    scales (e.g. log-space RMSE) by name: the winner only where its scale is at most 1/`margin` of the other's
    (as `compare_fits` asks of a richer law); a smaller edge is named as one. Returns (the clear winner or None,
    a clause: 'the power law fits better (its RMSE 2.4 times smaller)', 'the power law fits a little better (its
    RMSE 1.5 times smaller, short of the margin of 2 for a clear difference)')."""
    if len(scales) != 2:
        raise ValueError(f"two laws to compare, not {len(scales)}")
    (a, sa), (b, sb) = sorted(scales.items(), key=lambda kv: kv[1])
    if not (sa > 0 and math.isfinite(sb)):
        return None, f"the {a} and the {b} cannot be compared (residual scales {sa:g} and {sb:g})"
    r = sb / sa
    if r >= margin:
        return a, f"the {a} fits better (its RMSE {r:.2g} times smaller)"
    return None, (f"the {a} fits a little better (its RMSE {r:.2g} times smaller, short of the margin of {margin:g} "
                  "for a clear difference)")


CHECK_SIZES = 5  # the sizes an extrapolation check of `compare_forms` needs: two held out, three to fit
BEYOND = 30  # how far beyond the largest size `compare_forms` predicts (Kaplan et al. Fig. 23 draws 30x)


def compare_forms(x, y, forms: Sequence[str] = ("power", "log"), *,
                  holdout: int = 2) -> tuple[list[dict[str, Any]], dict[str, FitResult]]:
    """Each of `forms` fitted to the same losses y at x (one point a size), as a row of the comparison: `sizes`,
    `form`, `rmse_log`, `max_residual`, the relative errors of an `extrapolation_check` holding out the `holdout`
    largest sizes (`extrapolation`, as text: '-0.76%, -1.98%'; 'n/a' with fewer than CHECK_SIZES sizes) and their
    mean absolute value (`extrapolation_mean_abs`, NaN without a check), and `prediction_at_30x_largest` (the law
    at BEYOND times the largest x). Returns the rows and the fits by form."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sizes = len(np.unique(x))
    rows, fits = [], {}
    for form in forms:
        res = fits[form] = fit(form, x, y)
        ext = extrapolation_check(form, x, y, holdout=holdout) if sizes >= CHECK_SIZES else None
        rows.append(dict(sizes=sizes, form=form, rmse_log=res.rmse_log, max_residual=res.max_abs_residual,
                         extrapolation=", ".join(f"{e:+.2%}" for e in ext["rel_error"]) if ext else "n/a",
                         extrapolation_mean_abs=float(np.mean(np.abs(ext["rel_error"]))) if ext else math.nan,
                         prediction_at_30x_largest=float(res.predict(x.max() * BEYOND))))
    return rows, fits


def form_tally(comparison: pd.DataFrame, panel: Sequence[str] = ("ladder", "budget")) -> dict[str, Any]:
    """Over the panels of a comparison (`compare_forms` rows of the power law and the logarithm, one each a panel,
    the panel named by its `panel` columns): `panels`; `lower_rmse`, in how many the power law has the lower
    log-space RMSE; `checked`, how many have an extrapolation check, and `smaller_held_out`, in how many of those the
    power law's mean held-out error is the smaller, with `held_out_text` ('3 of the 4 with a check', or why none);
    `clear`, in how many the power law fits clearly better by `rival_verdict`."""
    none = f"none (no panel has the {CHECK_SIZES} sizes a check needs)"
    if not len(comparison):
        return dict(panels=0, lower_rmse=0, checked=0, smaller_held_out=0, held_out_text=none, clear=0)
    wide = comparison.set_index([*panel, "form"])[["rmse_log", "extrapolation_mean_abs"]].unstack("form")
    rmse_p, rmse_l = wide[("rmse_log", "power")], wide[("rmse_log", "log")]
    ext_p, ext_l = wide[("extrapolation_mean_abs", "power")], wide[("extrapolation_mean_abs", "log")]
    checked = ext_p.notna() & ext_l.notna()
    smaller = int((ext_p[checked] < ext_l[checked]).sum())
    clear = sum(rival_verdict({"power law": p, "logarithm": q})[0] == "power law" for p, q in zip(rmse_p, rmse_l))
    return dict(panels=len(wide), lower_rmse=int((rmse_p < rmse_l).sum()), checked=int(checked.sum()),
                smaller_held_out=smaller,
                held_out_text=f"{smaller} of the {int(checked.sum())} with a check" if checked.any() else none,
                clear=int(clear))


# ---------------------------------------------------------------------------------------------
# Command line


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `fit` to a parser."""
    parser.add_argument("--form", required=True, choices=FORMS, help="the law to fit")
    parser.add_argument("--csv", required=True, metavar="FILE", help="a CSV file with one row a point")
    parser.add_argument("--x", required=True, metavar="COL", help="column of x (N, D, C or S)")
    parser.add_argument("--x2", metavar="COL", help="column of the second variable (D or S)")
    parser.add_argument("--y", required=True, metavar="COL", help="column of the loss L (nats/token)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="K", help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")
    parser.add_argument("--group", metavar="COL", help="resample whole groups of this column")


def read_csv(path, columns: Sequence[str | None]) -> pd.DataFrame:
    """A CSV file that has every named column (None entries are skipped); a FitError of one line otherwise."""
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise FitError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise FitError(f"column(s) {', '.join(missing)} not in {path} (has {', '.join(map(str, df.columns))})")
    return df


def numeric_column(df: pd.DataFrame, col: str) -> np.ndarray:
    """Column `col` as floats; a FitError naming the first value that is not a number."""
    v = pd.to_numeric(df[col], errors="coerce")
    text = v.isna() & df[col].notna()
    if text.any():
        raise FitError(
            f"column {col} has {int(text.sum())} non-numeric value(s), first {df[col][text].iloc[0]!r} "
            f"at row {int(np.argmax(text.to_numpy()))}"
        )
    return v.to_numpy(dtype=float)


def cli(args: argparse.Namespace) -> int:
    """Run a fit from the command line: JSON on stdout, or one `error:` line on stderr and 2."""
    try:
        df = read_csv(args.csv, (args.x, args.x2, args.y, args.group))
        if args.bootstrap < 0:
            raise FitError(f"--bootstrap must be >= 0, got {args.bootstrap}")

        def numeric(col):
            return numeric_column(df, col)

        result = fit(
            args.form,
            numeric(args.x),
            numeric(args.y),
            None if args.x2 is None else numeric(args.x2),
            bootstrap=args.bootstrap,
            seed=args.seed,
            groups=None if args.group is None else df[args.group].to_numpy(),
        )
    except FitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = result.to_dict()
    out.update(out["params"])
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m scaling_lib.fit", description=__doc__.splitlines()[0])
    add_cli_arguments(_parser)
    sys.exit(cli(_parser.parse_args()))
