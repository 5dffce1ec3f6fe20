"""Compute-optimal allocation: for a training budget C, the model size N, the tokens D (and, where the law
gives them, the batch B, the steps S and the loss L) that a scaling law recommends.

A law is an object with `loss(N, D)`, `optimum(C)` (C in FLOPs) and the compute range it was fitted on;
`plan(law, C)` adds the warnings (a budget outside that range) and the units. Other budgets (dollars, an
inference cost) can be planned with the same laws by minimising `loss` under another constraint, as
`numerical_optimum` does under C = 6 N D.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from . import lifetime, results
from .fit import chinchilla, chinchilla_optimal, kaplan_nd
from .laws import BESIROGLU, CHINCHILLA, FLOPS_PER_PARAM_TOKEN, KAPLAN, Law

PF_DAY = 8.64e19  # FLOPs in a PF-day: 1e15 FLOP/s for 86,400 s (Kaplan et al. 2020, §1.3)
UNITS = {"flops": 1.0, "pf-days": PF_DAY}

# Kaplan et al. 2020, Table 6 (Appendix A; Eq. 6.1 gives N_opt, Fig. 14 shows N and S_min): X = X_e C_min^p
# with C_min in PF-days. Values from shared/reference/equations.md, which restores the numbers the seed
# text (shared/seeds/003_*.txt, §6.1 and Appendix A) lost in extraction.
KAPLAN_TABLE6 = {
    "N_opt": (1.3e9, 0.73),   # non-embedding parameters; Eq. 6.1, Fig. 14 (left)
    "B": (2.0e6, 0.24),       # tokens; B ~ B_crit (Table 6; §6.1: B_crit ~ L^-4.8 ~ C_min^0.24)
    "S_min": (5.4e3, 0.03),   # steps; Fig. 14 (right), Eq. 6.2 (a lower bound)
    "D_opt": (2e10, 0.27),    # tokens, one epoch; Table 6
}
# Kaplan et al. 2020, Eq. 1.3 / Fig. 13: L(C_min) = (C_c^min / C_min)^alpha_C^min, C in PF-days.
KAPLAN_L_CMIN = KAPLAN["L(C_min)"]
# The compute over which the fits were made. No paper prints it in its text; each range below says where
# it comes from and how approximate it is.
KAPLAN_RANGE_PF_DAYS = (1e-8, 1e1)
KAPLAN_RANGE_SOURCE = ("Kaplan et al. 2020, Fig. 13-14: approximately the span of C_min on their axes (the text "
                       "prints no range), 1e-8 to 1e1 PF-days")
CHINCHILLA_RANGE_FLOPS = (6e18, 3e21)
CHINCHILLA_RANGE_SOURCE = ("Hoffmann et al. 2022, §3.2, Fig. 3: the nine IsoFLOP budgets, 6e18 to 3e21 FLOPs "
                           "(approximate for Approach 3, which was fitted on all their runs, 70M-16B parameters)")
BESIROGLU_RANGE_SOURCE = ("Besiroglu et al. 2024 refit the data they reconstructed from Hoffmann et al. 2022, "
                          "Fig. 4: taken as Hoffmann's range, 6e18 to 3e21 FLOPs (approximate)")

# --law book: the model-size chapter's Chinchilla-form fit, read from what the chapter recorded.
BOOK_CHAPTER = "04_model_size"
BOOK_FIT = "ms_GPU_ch"  # the record names' prefix: ms_<ladder>_ch_<param>
BOOK_PARAMS = ("E", "A", "B", "alpha", "beta")
BOOK_RANGE = ("C_lo", "C_hi")  # the smallest and largest 6 N D of the points fitted, FLOPs


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta, minimised under C = 6 N D in closed form.

    Hoffmann et al. 2022, §3.3 (Approach 3), Eq. 4: N_opt = G (C/6)^(beta/(alpha+beta)),
    G = (alpha A/(beta B))^(1/(alpha+beta)), D_opt = C/(6 N_opt).
    """

    name: str
    params: Mapping[str, float]
    C_range: tuple[float, float]
    range_source: str
    source: str
    N_counts: str = "all parameters, embeddings included"
    notes: tuple[str, ...] = ()

    @property
    def sources(self) -> dict[str, str]:
        return {"N_opt": f"{self.source}: N_opt = G (C/6)^(beta/(alpha+beta))", "D_opt": "C / (6 N_opt)",
                "L": "E + A/N_opt^alpha + B/D_opt^beta"}

    def loss(self, N, D) -> np.ndarray:
        p = self.params
        return chinchilla(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"])

    def optimum(self, C: float) -> dict[str, float]:
        N, D = chinchilla_optimal(C, self.params)
        N, D = float(N), float(D)
        return {"N_opt": N, "D_opt": D, "L": float(self.loss(N, D))}


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al.'s compute-efficient frontier: Table 6 for N, B, S_min and D; Eq. 1.3 for L(C_min).

    The budget is C_min, the non-embedding compute 6 N B S of training far below the critical batch
    (Eq. 5.5), in PF-days inside. Table 6's D_opt and B are those of training at B ~ B_crit, where a run
    takes S = 2 S_min steps (Eq. 5.4), so B S ~ D_opt and the compute actually spent is about 2 C_min.
    `loss(N, D)` is Eq. 1.5 with Table 2's constants (the early-stopped loss, not Table 6's fit).
    """

    name: str = "kaplan"
    C_range: tuple[float, float] = (KAPLAN_RANGE_PF_DAYS[0] * PF_DAY, KAPLAN_RANGE_PF_DAYS[1] * PF_DAY)
    range_source: str = KAPLAN_RANGE_SOURCE
    source: str = "Kaplan et al. 2020, Table 6 (Eq. 6.1, Fig. 14) and Eq. 1.3 (Fig. 13)"
    N_counts: str = "non-embedding parameters"
    notes: tuple[str, ...] = (
        "C is C_min, the non-embedding compute 6 N B S far below the critical batch (Eq. 5.5)",
        "B ~ B_crit, S = 2 S_min steps at that batch (Eq. 5.4), so B S ~ D_opt and about 2 C_min is spent",
        "L is in nats per token on WebText2 with a 50,257-token BPE: not comparable with other tokenizers",
    )
    # what a plan that reads loss(N, D) as a law of tokens trained (scaling_lib.lifetime) must say
    loss_caveats: tuple[str, ...] = (
        "loss(N, D) is Kaplan et al.'s Eq. 1.5, the early-stopped loss of a model trained on a dataset of D tokens "
        "(to convergence, over several passes where needed); read as the loss after D tokens of training it is "
        "optimistic, so D here is a lower bound and the FLOPs undercount training",
    )

    @property
    def sources(self) -> dict[str, str]:
        return dict(KAPLAN_SOURCES)

    def loss(self, N, D) -> np.ndarray:
        p = KAPLAN["L(N,D)"]
        return kaplan_nd(N, D, p["alpha_N"], p["alpha_D"], p["N_c"], p["D_c"])

    def optimum(self, C: float) -> dict[str, float]:
        c = C / PF_DAY
        out = {k: X_e * c**p for k, (X_e, p) in KAPLAN_TABLE6.items()}
        out["S"] = 2.0 * out["S_min"]
        out["L"] = (KAPLAN_L_CMIN["C_c"] / c) ** KAPLAN_L_CMIN["alpha_C"]
        return {k: out[k] for k in ("N_opt", "D_opt", "B", "S", "S_min", "L")}


KAPLAN_SOURCES = {
    "N_opt": "Kaplan et al. 2020, Table 6 / Eq. 6.1: N = 1.3e9 C_min^0.73",
    "D_opt": "Kaplan et al. 2020, Table 6: D = 2e10 C_min^0.27 tokens (one epoch)",
    "B": "Kaplan et al. 2020, Table 6 and §6.1: B = 2.0e6 C_min^0.24 tokens (B ~ B_crit)",
    "S_min": "Kaplan et al. 2020, Table 6 / Eq. 6.2, Fig. 14 (right): S_min = 5.4e3 C_min^0.03",
    "S": "Kaplan et al. 2020, Eq. 5.4 at B = B_crit: S = 2 S_min",
    "L": "Kaplan et al. 2020, Eq. 1.3, Fig. 13: L = (3.1e8 / C_min)^0.050",
}


def chinchilla_law() -> ChinchillaLaw:
    """Hoffmann et al. 2022's printed Approach-3 fit (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28)."""
    return ChinchillaLaw("chinchilla", dict(CHINCHILLA), CHINCHILLA_RANGE_FLOPS, CHINCHILLA_RANGE_SOURCE,
                         "Hoffmann et al. 2022, §3.3: Approach 3's fit (Eq. 10) and its optimum (Eq. 4)")


def besiroglu_law() -> ChinchillaLaw:
    """Besiroglu et al. 2024's replication of Approach 3 (E 1.82, A 482.0, B 2085.4, alpha 0.348, beta 0.366)."""
    return ChinchillaLaw("besiroglu", dict(BESIROGLU), CHINCHILLA_RANGE_FLOPS, BESIROGLU_RANGE_SOURCE,
                         "Besiroglu et al. 2024, Chinchilla scaling: a replication attempt (their refit of "
                         "Approach 3); optimum as Hoffmann et al. 2022, Eq. 4")


def book_law(results_dir=None, prefix: str = BOOK_FIT) -> ChinchillaLaw:
    """The book's own Chinchilla-form fit, read from the model-size chapter's stored records (not re-fitted).

    Reads `<results dir>/04_model_size.json` (`results.stored_dir()` by default: `$SCALING_LIB_RESULTS`,
    else the checkout's `book/_results`) for the records `<prefix>_E`, `_A`, `_B`, `_alpha`, `_beta` (the
    fit of E + A/N^alpha + B/D^beta on N without embeddings and D in tokens) and `<prefix>_C_lo`, `_C_hi`
    (the compute 6 N D of its smallest and largest points, FLOPs). Raises LookupError naming what is missing.
    """
    out = results.stored_dir() if results_dir is None else Path(results_dir)
    path = out / f"{BOOK_CHAPTER}.json"
    if not path.exists():
        raise LookupError(f"--law book needs {path}, which the {BOOK_CHAPTER} chapter writes; it is missing")
    stored = {r.name: r.value for r in results.load(out, [BOOK_CHAPTER]) if r.chapter == BOOK_CHAPTER}
    names = [f"{prefix}_{k}" for k in BOOK_PARAMS + BOOK_RANGE]
    missing = [n for n in names if stored.get(n) is None]
    if missing:
        raise LookupError(f"--law book needs the {BOOK_CHAPTER} chapter to record {', '.join(missing)} in {path} "
                          "(see scaling_lib/planner.py, book_law)")
    params = {k: float(stored[f"{prefix}_{k}"]) for k in BOOK_PARAMS}
    C_range = (float(stored[f"{prefix}_C_lo"]), float(stored[f"{prefix}_C_hi"]))
    return ChinchillaLaw(
        "book", params, C_range, f"{path.name}: 6 N D of the points the fit {prefix} was made on",
        f"the book's fit of E + A/N^alpha + B/D^beta ({path.name}, records {prefix}_*)",
        N_counts="non-embedding parameters",
        notes=("C = 6 N D with N without embeddings, D in tokens",
               "L is in nats per token of the book's 4,096-token BPE: not comparable with the papers' losses"),
    )


LAWS = {"kaplan": KaplanLaw, "chinchilla": chinchilla_law, "besiroglu": besiroglu_law, "book": book_law}


def get_law(name: str) -> Law:
    """A law by its name (kaplan, chinchilla, besiroglu, book)."""
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}; expected one of {', '.join(LAWS)}")
    return LAWS[name]()


def to_flops(C: float | str, unit: str = "flops") -> float:
    """A budget in `unit` (flops or pf-days) as FLOPs; ValueError unless it is a positive finite number."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")
    try:
        c = float(C)
    except (TypeError, ValueError):
        raise ValueError(f"the compute must be a number, got {C!r}") from None
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"the compute must be positive and finite, got {C!r}")
    return c * UNITS[unit]


@dataclass(frozen=True)
class Plan:
    """A law's compute-optimal allocation for one budget, with the warnings of planning outside its range."""

    law: str
    C: float  # FLOPs
    allocation: dict[str, float]
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.law, "C_flops": self.C, "C_pf_days": self.C / PF_DAY, **self.allocation,
                **self.info, "warnings": list(self.warnings)}


def plan(law: Law, C: float) -> Plan:
    """The allocation `law.optimum(C)` for a budget of C FLOPs, warned where C lies outside the law's fitted range."""
    if not (math.isfinite(C) and C > 0):
        raise ValueError(f"the compute must be positive and finite, got {C!r}")
    lo, hi = law.C_range
    warn = []
    if not lo <= C <= hi:
        side = "below" if C < lo else "above"
        warn.append(f"C = {C:.3g} FLOPs lies {side} the {law.name} law's fitted range, {lo:.3g} to {hi:.3g} FLOPs "
                    f"({law.range_source}): the plan is an extrapolation")
    info = {
        "N_counts": law.N_counts,
        "units": {"N_opt": "parameters", "D_opt": "tokens", "B": "tokens", "S": "steps", "S_min": "steps",
                  "L": "nats per token"},
        "fitted_range_flops": [lo, hi],
        "range_source": law.range_source,
        "source": getattr(law, "source", law.name),
        "sources": dict(getattr(law, "sources", {})),
        "notes": list(getattr(law, "notes", ())),
    }
    if isinstance(law, ChinchillaLaw):
        info["params"] = dict(law.params)
    alloc = law.optimum(C)
    info["units"] = {k: v for k, v in info["units"].items() if k in alloc}
    return Plan(law.name, float(C), alloc, tuple(warn), info)


def numerical_optimum(law: Law, C: float, flops_per_token: float = FLOPS_PER_PARAM_TOKEN) -> dict[str, float]:
    """min over N of law.loss(N, C/(flops_per_token N)), found numerically in log N (a check of closed forms)."""
    def f(lN):
        N = math.exp(lN)
        return float(law.loss(N, C / (flops_per_token * N)))

    lC = math.log(C / flops_per_token)
    r = minimize_scalar(f, bounds=(0.0, lC), method="bounded", options={"xatol": 1e-10})
    N = math.exp(r.x)
    return {"N_opt": N, "D_opt": C / (flops_per_token * N), "L": float(r.fun)}


# ---------------------------------------------------------------------------------------------
# Command line: python -m scaling_lib plan


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `plan` to a parser (values checked by `cli`, so a bad one is one error line)."""
    parser.add_argument("--compute", required=True, metavar="C", help="the training budget")
    parser.add_argument("--unit", default="flops", metavar="UNIT",
                        help=f"unit of C: {', '.join(UNITS)} (default flops)")
    parser.add_argument("--law", required=True, metavar="LAW", help=", ".join(LAWS))
    g = parser.add_argument_group(
        "training and serving (scaling_lib.lifetime; any of these adds a 'lifetime' plan: the model that reaches "
        "the target loss at the least cost of training plus serving)")
    g.add_argument("--target-loss", type=float, metavar="L",
                   help="the loss to reach (default: the loss the compute buys under the law's compute-optimal plan)")
    g.add_argument("--inference-tokens", type=float, metavar="T", help="tokens the model will serve over its life")
    g.add_argument("--throughput", type=float, metavar="FLOP/S",
                   help="achieved FLOP/s of the device, training and serving alike ('bench' reports it as flops)")
    g.add_argument("--price-per-hour", type=float, metavar="P", help="dollars per device-hour")
    g.add_argument("--spot-discount", type=float, default=0.0, metavar="F",
                   help="fraction off the price for training (interruptible); serving pays full price")
    g.add_argument("--max-latency-ms", type=float, metavar="M", help="a bound on a token's latency at batch 1")
    g.add_argument("--latency-ms-per-layer", type=float, metavar="MS",
                   help="with --max-latency-ms: milliseconds a layer adds to a token (the slope of latency on depth)")
    g.add_argument("--latency-ms-base", type=float, default=0.0, metavar="MS",
                   help="with --max-latency-ms: the latency's part that does not grow with depth (default 0)")
    g.add_argument("--latency-fit", metavar="FILE",
                   help="with --max-latency-ms: take the slope and the constant part from a timing that `bench "
                        "--depths ... --save` filed (its batch-1 generation line in depth); it holds for models of "
                        "the width it timed, on its device")
    g.add_argument("--aspect-ratio", type=float, metavar="R",
                   help="with --max-latency-ms: d_model / n_layer, which sets the depth of a size (default 64)")


LIFETIME_OPTIONS = ("target_loss", "inference_tokens", "throughput", "price_per_hour", "max_latency_ms",
                    "latency_ms_per_layer", "latency_fit", "aspect_ratio")


def cli(args: argparse.Namespace) -> int:
    """`plan`: the law's allocation as JSON on stdout; a budget outside its range also warns on stderr."""
    law = get_law(args.law)
    p = plan(law, to_flops(args.compute, args.unit))
    out = p.to_dict()
    if any(getattr(args, k, None) is not None for k in LIFETIME_OPTIONS):
        out["lifetime"] = _lifetime(args, law, p)
    for w in p.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


def _lifetime(args: argparse.Namespace, law: Law, p: Plan) -> dict[str, Any]:
    """The 'lifetime' part of `plan`'s answer, from its options (scaling_lib.lifetime)."""
    latency_parts = ("latency_ms_per_layer", "latency_fit", "aspect_ratio")
    if args.max_latency_ms is None and any(getattr(args, k, None) is not None for k in latency_parts):
        raise ValueError("--latency-ms-per-layer, --latency-fit and --aspect-ratio describe the latency of "
                         "--max-latency-ms: give it")
    latency, source = None, None
    if args.max_latency_ms is not None:
        per_layer, base = args.latency_ms_per_layer, args.latency_ms_base
        if getattr(args, "latency_fit", None) is not None:
            if per_layer is not None:
                raise ValueError("give --latency-ms-per-layer or --latency-fit, not both")
            per_layer, base, source = _latency_from_fit(args.latency_fit)
        if per_layer is None:
            raise ValueError("--max-latency-ms needs --latency-ms-per-layer or --latency-fit (the slope of a token's "
                             "latency on depth)")
        latency = lifetime.Latency(args.max_latency_ms, per_layer, base,
                                   args.aspect_ratio if args.aspect_ratio is not None else lifetime.ASPECT)
    prices = lifetime.Prices(args.throughput, args.price_per_hour, args.spot_discount)
    target = args.target_loss if args.target_loss is not None else p.allocation["L"]
    out = lifetime.lifetime_plan(law, target, args.inference_tokens or 0.0, prices, latency)
    out["target_from"] = ("--target-loss" if args.target_loss is not None else
                          f"the loss the compute-optimal plan for C = {p.C:.3g} FLOPs reaches")
    if source is not None:
        out["latency_from"] = source
    return out


def _latency_from_fit(path: str) -> tuple[float, float, dict[str, Any]]:
    """(ms a layer, ms at no layer, where from) of a filed depth-latency timing's batch-1 generation fit."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the latency timing {path}: {e}") from None
    line = (result.get("fits") or {}).get("generate_batch_1_s_per_token") if isinstance(result, dict) else None
    if not line:
        raise ValueError(f"{path} holds no batch-1 generation fit; file one with bench --depths L,... --fixed-n N "
                         "--gen-batches 1 --save")
    if not line["slope"] > 0:
        raise ValueError(f"{path}: the batch-1 latency does not grow with depth (slope {line['slope']:g} s a layer)")
    source = dict(file=str(path), device=result.get("device"), fixed_N=result.get("fixed_N"),
                  threads=result.get("threads"), r2=line.get("r2"),
                  note="measured at this N on this device; a wider model's layer takes longer")
    return 1e3 * line["slope"], max(1e3 * line["intercept"], 0.0), source
