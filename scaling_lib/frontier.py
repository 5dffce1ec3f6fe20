"""The compute-efficient frontier (Kaplan et al. 2020, §6 and Appendix B), derived from two fits.

With L(N, S) = (N_c/N)^α_N + (S_c/S)^α_S (Eq. 1.6, S the steps at the critical batch) and
B_crit(L) = B*/L^(1/α_B) (Eq. 1.4), a budget of C = 6 N B_crit S FLOPs is best spent where, at
fixed C, the loss no longer falls with N. Appendix B works it out:

- at the optimum the steps term is α_N/α_S of the size term, so L = (1 + α_N/α_S) L(N, ∞) (B.5):
  compute-efficient training stops a fixed fraction above convergence;
- L(C_min) = (C_c/C_min)^α_C with 1/α_C = 1/α_S + 1/α_B + 1/α_N and
  C_c = 6 N_c B* S_c (1 + α_N/α_S)^(1/α_S + 1/α_N) (α_S/α_N)^(1/α_S) (B.6–B.8);
- N_opt = N_c (1 + α_N/α_S)^(1/α_N) (C/C_c)^(α_C/α_N) (B.9); the steps and the batch follow from
  the two terms of L, and the tokens processed are D = B S;
- a size k times the optimal one needs C(k)/C(1) = k [1 + (α_S/α_N)(1 − k^-α_N)]^(-1/α_S) of the
  compute and S(k)/S(1) = [1 + (α_S/α_N)(1 − k^-α_N)]^(-1/α_S) of the steps (B.4);
- against training to within f' of convergence, efficient training (f = α_N/α_S) uses
  ((1 + f)/(1 + f'))^(1/α_N) times the parameters, ((f/(1 + f))/(f'/(1 + f')))^(-1/α_S) times the
  steps and their product times the compute (B.3; 2.7x, 0.13x and 0.35x with Kaplan's exponents);
- §6.3's contradiction: the data efficient training processes, D(C) = B S, grows so slowly that
  beyond some C* L(C_min) falls below L(D) = (D_c/D)^α_D, the loss that much data allows
  (`contradiction`).

C is in FLOPs when N_c counts parameters, S_c steps and B* tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

CONVERGED = 0.02  # B.3: "close to convergence", 2% above the converged loss


@dataclass(frozen=True)
class Frontier:
    """Eq. 1.6 and Eq. 1.4's constants, and the frontier they imply."""

    alpha_N: float
    N_c: float
    alpha_S: float
    S_c: float
    alpha_B: float
    B_star: float

    def __post_init__(self) -> None:
        for name in ("alpha_N", "N_c", "alpha_S", "S_c", "alpha_B", "B_star"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be positive and finite, not {v}")

    @property
    def r(self) -> float:
        """α_N/α_S: how far above convergence efficient training stops (B.5)."""
        return self.alpha_N / self.alpha_S

    @property
    def alpha_C(self) -> float:
        """The exponent of L(C_min): 1/(1/α_S + 1/α_B + 1/α_N) (B.7)."""
        return 1.0 / (1.0 / self.alpha_S + 1.0 / self.alpha_B + 1.0 / self.alpha_N)

    @property
    def C_c(self) -> float:
        """The scale of L(C_min) = (C_c/C)^α_C, in FLOPs (B.8)."""
        r = self.r
        return (6.0 * self.N_c * self.B_star * self.S_c * (1 + r) ** (1 / self.alpha_S + 1 / self.alpha_N)
                * (1 / r) ** (1 / self.alpha_S))

    @property
    def N_exponent(self) -> float:
        """N_opt ∝ C^(α_C/α_N) (Kaplan et al.: about 0.71 from L(N, S), 0.73 measured)."""
        return self.alpha_C / self.alpha_N

    def loss(self, C) -> np.ndarray:
        return (self.C_c / np.asarray(C, float)) ** self.alpha_C

    def _size_term(self, C) -> np.ndarray:
        return self.loss(C) / (1 + self.r)  # (N_c/N)^α_N at the optimum

    def N_opt(self, C) -> np.ndarray:
        return self.N_c * self._size_term(C) ** (-1.0 / self.alpha_N)

    def S_opt(self, C) -> np.ndarray:
        """The steps at the critical batch: the steps term is r times the size term."""
        return self.S_c * (self.r * self._size_term(C)) ** (-1.0 / self.alpha_S)

    def B_opt(self, C) -> np.ndarray:
        """The critical batch at the loss reached, in tokens."""
        return self.B_star / self.loss(C) ** (1.0 / self.alpha_B)

    def D_opt(self, C) -> np.ndarray:
        """The tokens processed, B S."""
        return self.B_opt(C) * self.S_opt(C)

    def off_optimum(self, k) -> tuple[np.ndarray, np.ndarray]:
        """(compute, steps) to reach the optimum's loss with k times the optimal size, over the
        optimum's (B.4): k < 1 never gets there when 1 + (α_S/α_N)(1 − k^-α_N) <= 0 (NaN)."""
        k = np.asarray(k, float)
        inner = 1.0 + (1.0 / self.r) * (1.0 - k ** (-self.alpha_N))
        with np.errstate(invalid="ignore", divide="ignore"):
            steps = np.where(inner > 0, inner ** (-1.0 / self.alpha_S), np.nan)
        return k * steps, steps

    def sizes_within(self, extra: float = 0.2) -> tuple[float, float]:
        """The smallest and largest multiples k of the optimal size whose compute to the same loss is
        at most 1 + `extra` times the optimum's (B.4; Kaplan et al.: 0.6x to 2.2x for 20%)."""
        if not extra > 0:
            raise ValueError(f"the extra compute must be positive, not {extra}")

        def excess(lk: float) -> float:  # NaN (the loss never reached) counts as too costly
            c = float(self.off_optimum(math.exp(lk))[0])
            return c - (1 + extra) if math.isfinite(c) else 1e300

        def edge(step: float) -> float:  # step out in ln k from the optimum past the bound, then solve
            lk = step
            while excess(lk) < 0:
                if abs(lk) > 50:
                    raise ValueError(f"no size {'below' if step < 0 else 'above'} the optimum costs {extra:.0%} more")
                lk += step
            return math.exp(brentq(excess, *sorted((lk, 0.0))))

        return edge(-0.25), edge(0.25)

    def exponents(self) -> dict[str, float]:
        """How a growing budget splits (Fig. 3): N ∝ C^(α_C/α_N), B ∝ C^(α_C/α_B), S ∝ C^(α_C/α_S), and
        the tokens D = B S; the first three sum to 1, since C = 6 N B S."""
        a = self.alpha_C
        return dict(N=a / self.alpha_N, B=a / self.alpha_B, S=a / self.alpha_S, D=a / self.alpha_B + a / self.alpha_S)

    def versus_converged(self, f_converged: float = CONVERGED) -> dict[str, float]:
        """Efficient training (f = α_N/α_S) over training to within f_converged of convergence, at one
        loss (B.3): the ratios of parameters, steps and compute."""
        if not 0 < f_converged:
            raise ValueError(f"the convergence factor must be positive, not {f_converged}")
        f, g = self.r, f_converged
        N = ((1 + f) / (1 + g)) ** (1 / self.alpha_N)
        S = ((f / (1 + f)) / (g / (1 + g))) ** (-1 / self.alpha_S)
        return dict(f=f, f_converged=g, parameters=N, steps=S, compute=N * S)


def contradiction(frontier: Frontier, alpha_D: float, D_c: float, *, C_range=(1.0, 1e40)) -> dict[str, float]:
    """Where L(C_min) meets L(D) = (D_c/D)^α_D at the tokens efficient training processes, D = B S
    (§6.3, Fig. 15): the compute C*, the loss L*, and N* and D* there; NaN where the two do not cross
    within `C_range` FLOPs. `beyond`: whether L(C_min) promises a loss below what its tokens allow for
    budgets above C* (Kaplan et al.'s case, where D grows so slowly that L(D) falls more slowly than
    L(C_min)), or else for the budgets below it. Both are powers of C, so one exponent comparison says it."""
    if not (alpha_D > 0 and D_c > 0):
        raise ValueError(f"α_D and D_c must be positive, not {alpha_D} and {D_c}")
    beyond = bool(frontier.alpha_C > alpha_D * frontier.exponents()["D"])

    def gap(lC: float) -> float:
        C = math.exp(lC)
        return math.log(frontier.loss(C)) - alpha_D * (math.log(D_c) - math.log(frontier.D_opt(C)))

    lo, hi = (math.log(c) for c in C_range)
    if gap(lo) * gap(hi) > 0:
        return dict(C=math.nan, L=math.nan, N=math.nan, D=math.nan, beyond=beyond)
    lC = brentq(gap, lo, hi, xtol=1e-10)
    C = math.exp(lC)
    return dict(C=C, L=float(frontier.loss(C)), N=float(frontier.N_opt(C)), D=float(frontier.D_opt(C)),
                beyond=beyond)
