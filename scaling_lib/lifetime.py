"""What a budget should buy: the model that reaches a target loss at the least cost of training it
and serving it (Sardana et al. 2024, "Beyond Chinchilla-optimal"), in FLOPs, device-hours and dollars,
under an optional bound on the latency of a generated token.

A compute-optimal plan (`planner.plan`) minimises the loss for a training budget and ignores what the
model costs afterwards. A model that will serve T tokens costs about 2 N FLOPs a token more (the forward
pass; Kaplan et al. 2020, §2.1), so for a fixed target loss a smaller model trained on more tokens can be
cheaper over its life. For each size N the tokens D(N) that reach the target come from the law's
`loss(N, D)` (the law is any `laws.Law`); the total 6 N D(N) + 2 N T is minimised over N in log N.

Units are stated where they are assumed: the throughput is the achieved FLOP/s of the device (what
`bench` reports under `flops`), the same for training and serving; the price is per device-hour; a spot
discount applies to training only (serving is not interruptible). The latency of a token at batch 1 is
taken as linear in depth, `ms_base + ms_per_layer * n_layer`, and depth follows from N at a fixed aspect
ratio d_model / n_layer, with N = 12 n_layer d_model^2 (Kaplan et al. 2020, Table 1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from .laws import FLOPS_PER_PARAM_TOKEN, Law

INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0  # a forward pass: C_forward ~ 2 N (Kaplan et al. 2020, §2.1)
ASPECT = 64.0  # d_model / n_layer; Kaplan et al. 2020 (Fig. 5) find the loss flat over roughly 20 to 200
LOG_N_RANGE = (math.log(1e2), math.log(1e16))  # where the search for N looks (parameters)
LOG_D_RANGE = (0.0, math.log(1e30))  # where D(N) is looked for (tokens)


class Unreachable(ValueError):
    """No size within the bounds reaches the target loss."""


def _positive(name: str, v: float | None, *, allow_zero: bool = False) -> None:
    if v is None:
        return
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {v!r}")


@dataclass(frozen=True)
class Prices:
    """What turns FLOPs into hours and dollars. Any of them may be unknown (None): the plan then stops at
    the last unit it can give."""

    throughput: float | None = None  # achieved FLOP/s, training and serving alike
    price_per_hour: float | None = None  # dollars per device-hour
    spot_discount: float = 0.0  # the fraction off the price for training (0 to <1)

    def __post_init__(self):
        _positive("the throughput (FLOP/s)", self.throughput)
        _positive("the price per hour", self.price_per_hour, allow_zero=True)
        if not (math.isfinite(self.spot_discount) and 0 <= self.spot_discount < 1):
            raise ValueError(f"the spot discount must lie in [0, 1), got {self.spot_discount!r}")
        if self.price_per_hour is not None and self.throughput is None:
            raise ValueError("a price per hour needs a throughput (--throughput FLOP/s) to turn FLOPs into hours")

    def hours(self, flops: float) -> float | None:
        return None if self.throughput is None else flops / self.throughput / 3600.0

    def dollars(self, train_flops: float, serve_flops: float) -> float | None:
        if self.price_per_hour is None:
            return None
        return self.price_per_hour * (self.hours(train_flops) * (1 - self.spot_discount) + self.hours(serve_flops))


@dataclass(frozen=True)
class Latency:
    """A bound on the milliseconds a token takes at batch 1, latency = ms_base + ms_per_layer n_layer,
    with n_layer = (N / (12 aspect^2))^(1/3) at d_model = aspect n_layer."""

    max_ms: float
    ms_per_layer: float
    ms_base: float = 0.0
    aspect: float = ASPECT

    def __post_init__(self):
        _positive("the latency bound (ms)", self.max_ms)
        _positive("the latency per layer (ms)", self.ms_per_layer)
        _positive("the latency's constant part (ms)", self.ms_base, allow_zero=True)
        _positive("the aspect ratio d_model / n_layer", self.aspect)
        if self.ms_base >= self.max_ms:
            raise ValueError(f"the latency bound {self.max_ms:g} ms leaves no time for any layer after the constant "
                             f"part {self.ms_base:g} ms")

    def n_layer(self, N: float) -> float:
        return (N / (12.0 * self.aspect**2)) ** (1.0 / 3.0)

    def ms(self, N: float) -> float:
        return self.ms_base + self.ms_per_layer * self.n_layer(N)

    @property
    def max_n_layer(self) -> float:
        return (self.max_ms - self.ms_base) / self.ms_per_layer

    @property
    def max_N(self) -> float:
        return 12.0 * self.aspect**2 * self.max_n_layer**3


def tokens_for_loss(law: Law, N: float, target: float) -> float:
    """The training tokens D at which `law.loss(N, D)` equals `target` (the loss falls with D); inf where
    even unlimited data leaves size N above the target."""
    f = lambda lD: float(law.loss(N, math.exp(lD))) - target  # noqa: E731
    lo, hi = LOG_D_RANGE
    if f(hi) >= 0:
        return math.inf
    if f(lo) <= 0:
        return math.exp(lo)
    return math.exp(brentq(f, lo, hi, xtol=1e-12))


def _total(law: Law, N: float, target: float, inference_tokens: float,
           train_weight: float = 1.0) -> tuple[float, float, float]:
    """The objective train_weight * training FLOPs + serving FLOPs, the training FLOPs, and D."""
    D = tokens_for_loss(law, N, target)
    train = FLOPS_PER_PARAM_TOKEN * N * D
    return train_weight * train + INFERENCE_FLOPS_PER_PARAM_TOKEN * N * inference_tokens, train, D


def cheapest(law: Law, target: float, inference_tokens: float = 0.0, N_max: float | None = None,
             train_weight: float = 1.0) -> dict[str, float]:
    """The size N, and its tokens D, that reach `target` at the least training-plus-serving cost, with N at
    most `N_max`. The cost is train_weight x training FLOPs + serving FLOPs: 1 counts FLOPs (and, at one
    throughput, device-hours); 1 - spot discount counts dollars. With no serving this is the
    compute-optimal model for that loss. Raises Unreachable where no size up to the bound reaches it."""
    _positive("the target loss", target)
    _positive("the inference tokens", inference_tokens, allow_zero=True)
    lo, hi = LOG_N_RANGE
    if N_max is not None:
        hi = min(hi, math.log(N_max))
    grid = np.linspace(lo, hi, 400)
    totals = np.array([_total(law, math.exp(x), target, inference_tokens, train_weight)[0] for x in grid])
    if not np.isfinite(totals).any():
        bound = f" up to N = {math.exp(hi):.3g} (the latency bound)" if N_max is not None else ""
        raise Unreachable(f"no model size{bound} reaches a loss of {target:g} under the {law.name} law, "
                          "whatever it is trained on")
    i = int(np.nanargmin(np.where(np.isfinite(totals), totals, np.nan)))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if not np.isfinite(totals[max(i - 1, 0)]):
        # the left neighbour cannot reach the target: the total rises without bound towards the smallest size
        # that can, so the minimum lies between that size (found by bisection) and the right neighbour
        lo_x, hi_x = a, grid[i]
        for _ in range(60):
            mid = (lo_x + hi_x) / 2
            lo_x, hi_x = (lo_x, mid) if math.isfinite(tokens_for_loss(law, math.exp(mid), target)) else (mid, hi_x)
        a = hi_x

    def log_total(x: float) -> float:
        t = _total(law, math.exp(x), target, inference_tokens, train_weight)[0]
        return math.log(t) if math.isfinite(t) else 1e3

    r = minimize_scalar(log_total, bounds=(a, b), method="bounded", options={"xatol": 1e-9})
    x = r.x if r.fun <= math.log(totals[i]) else grid[i]
    N = math.exp(x)
    _, train, D = _total(law, N, target, inference_tokens)
    serve = INFERENCE_FLOPS_PER_PARAM_TOKEN * N * inference_tokens
    return {"N": N, "D": D, "train_flops": train, "inference_flops": serve, "total_flops": train + serve,
            "tokens_per_parameter": D / N, "at_bound": bool(N_max is not None and x >= hi - 1e-6)}


def _priced(row: dict[str, float], prices: Prices) -> dict[str, Any]:
    out = dict(row)
    for part in ("train", "inference", "total"):
        out[f"{part}_device_hours"] = prices.hours(row[f"{part}_flops"])
    out["dollars"] = prices.dollars(row["train_flops"], row["inference_flops"])
    return out


def lifetime_plan(law: Law, target: float, inference_tokens: float = 0.0, prices: Prices = Prices(),
                  latency: Latency | None = None) -> dict[str, Any]:
    """The cheapest model over its life for a target loss, beside the compute-optimal model for the same loss
    (trained as if it would never serve) costed with the same serving, and what the latency bound costs.

    The cost minimised is dollars where a price is given (training at the spot discount), else FLOPs
    (which, at one throughput, are device-hours too)."""
    w = 1.0 - prices.spot_discount if prices.price_per_hour is not None else 1.0
    objective = "dollars" if prices.price_per_hour is not None else "FLOPs"
    best = cheapest(law, target, inference_tokens, latency.max_N if latency else None, train_weight=w)
    out: dict[str, Any] = {"target_loss": target, "inference_tokens": inference_tokens, "minimised": objective,
                           "lifetime_optimal": _priced(best, prices)}
    compute_opt = cheapest(law, target, 0.0)
    serve = INFERENCE_FLOPS_PER_PARAM_TOKEN * compute_opt["N"] * inference_tokens
    compute_opt = dict(compute_opt, inference_flops=serve, total_flops=compute_opt["train_flops"] + serve)
    out["compute_optimal"] = _priced(compute_opt, prices)
    cost = (lambda r: r["dollars"]) if objective == "dollars" else (lambda r: r["total_flops"])  # noqa: E731
    out["saving_over_compute_optimal"] = 1.0 - cost(out["lifetime_optimal"]) / cost(out["compute_optimal"])
    if latency is not None:
        free = _priced(cheapest(law, target, inference_tokens, train_weight=w), prices)
        out["latency"] = dict(asdict(latency), max_n_layer=latency.max_n_layer, max_N=latency.max_N,
                              ms_of_plan=latency.ms(best["N"]), ms_without_bound=latency.ms(free["N"]),
                              binding=bool(free["N"] > latency.max_N),
                              extra_cost_of_bound=cost(out["lifetime_optimal"]) / cost(free) - 1.0)
    out["warnings"] = list(getattr(law, "loss_caveats", ()))
    out["assumptions"] = {
        "N": f"parameters as the {law.name} law counts them ({getattr(law, 'N_counts', 'see the law')})",
        "training FLOPs": f"{FLOPS_PER_PARAM_TOKEN:g} N D",
        "serving FLOPs": f"{INFERENCE_FLOPS_PER_PARAM_TOKEN:g} N per token served (the forward pass)",
        "throughput_flops_per_s": prices.throughput,
        "price_per_device_hour": prices.price_per_hour,
        "spot_discount": f"{prices.spot_discount:g} off the price of training only",
        **({"latency": f"ms_base + ms_per_layer n_layer at batch 1, n_layer = (N / (12 aspect^2))^(1/3), "
                       f"aspect {latency.aspect:g}"} if latency else {}),
    }
    return out
