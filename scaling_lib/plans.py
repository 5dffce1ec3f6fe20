"""Experiment plans: which runs each sweep of the book holds, under each profile.

A profile fixes the grid sizes that a sweep and its chapter use (notebooks never type them). A
sweep is a function from a profile (and what the store already holds, for grids that grow at a
winning edge) to a list of RunConfigs. Nothing here trains: the runner does (`runner`, `sweep`).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

from . import arch
from .flops import shapes_at_fixed_N
from .config import EVAL_VERSION, RunConfig
from .store import FINISHED, Store
from .tuning import RULE_FILE, LRRule

log = logging.getLogger(__name__)

# The model-size ladder (n_layer, d_model): ~768 to ~1.5M non-embedding parameters on the CPU;
# the gpu profile extends it by about a decade.
LADDER_CPU = ((1, 8), (1, 16), (2, 24), (2, 48), (3, 64), (4, 96), (4, 128), (5, 160))
LADDER_GPU_EXTRA = ((6, 256), (8, 320))
# The tuned ladder (issue "The ladder, measured right"): fourteen sizes over three and a half decades, five
# in the top one in steps of at most x2 (230k, 307k, 442k, 786k, 1.5M), each tuned at its own horizon.
# 1,536 (2 x 8) and 6,144 (2 x 16) came later, to halve the x4 steps 768 -> 3,072 -> 13,824: with them
# missing, the IsoFLOP levels at 2.2e10, 4.6e10, 1e11 and 4.6e11 FLOPs had a single size below their
# vertex (the Kaplan-or-Chinchilla chapter's edge table). A choice made on those runs; the new sizes'
# losses and the vertices they move were predicted before they were trained
# (runs/predictions/tune-between-1.5k-6.1k.json). 432 (1 x 6) came last, the same way, for the level
# at 1e10 FLOPs that 1,536 made: its vertex (1,070) had only 768 below it
# (runs/predictions/tune-smaller-432.json).
LADDER_TUNED = ((1, 6), (1, 8), (2, 8), (1, 16), (2, 16), (2, 24), (2, 32), (2, 48), (3, 64), (3, 80), (4, 80),
                (4, 96), (4, 128), (5, 160))

# Where the tuned ladder's learning-rate grids start: LR* = A N^b through the parabola minima of
# the stored `lr` sweep (2M tokens, cosine; the CPU run where a size has one). Pinned, so that the
# grids (and their keys) stay put when runs are added; tests/test_plans.py refits it from the
# stored runs. Each grid is three rates in x2 steps on the lattice 0.01 * 2^k around it.
LR_PRIOR = dict(A=0.4748, b=-0.3742)
LR_LATTICE = 0.01

# Shapes at N ~ 3e5 for Fig. 5: depth against width (12 n_layer d_model^2 fixed), feed-forward
# ratio at 4 layers, and attention head dimension at (4, 96).
SHAPES_FIG5 = (
    *(dict(n_layer=L, d_model=d) for L, d in ((1, 160), (2, 112), (4, 80), (6, 64), (8, 56), (12, 46), (16, 40))),
    *(dict(n_layer=4, d_model=d, d_ff=r * d) for r, d in ((1, 112), (2, 96), (8, 61))),
    *(dict(n_layer=4, d_model=96, n_head=h) for h in (1, 2, 6, 12)),
)

# A profile fixes the grid sizes a notebook or sweep uses; notebooks never type them.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        corpus="tiny", device="cpu", batch_size=8, n_ctx=64, eval_tokens=4096,
        ladder=((1, 8), (1, 16), (2, 16)), tokens=40_960, budgets=(20_480,), seeds=(0, 1), seed_sizes=((1, 8),),
        long_max_N=1_000, long_tokens=81_920, long_budgets=(20_480, 40_960),
        lr_grid=(1e-2, 3e-2), lr_tokens=20_480,
        data_model=(1, 16), data_budget=40_960, data_sizes=(32_768, 65_536, 0),
        shapes=(dict(n_layer=1, d_model=16), dict(n_layer=2, d_model=12)), shape_tokens=20_480,
        shape_lr_tuned=(),  # the smoke grids stay one run a shape (the tests count them)
        lstm_ladder=((1, 8), (1, 16), (2, 16)), lstm_tokens=40_960, lstm_lr_grid=(1e-2, 3e-2),
        tune_ladder=((1, 8), (1, 16)), tune_tokens=40_960, tune_budgets=(10_240, 20_480), tune_seeds=(0, 1),
        tune_eval_version=EVAL_VERSION, tune_long_sizes=(), tune_long_tokens=163_840, tune_longer=(),
        warmup_ladder=((1, 8), (1, 16)), warmup_fixed_tokens=8_192,
        context_ladder=((1, 8), (1, 16), (2, 16)), context_n_ctx=(16, 64), context_tokens=20_480,
        recur_ladder=((1, 8), (1, 16), (2, 8), (2, 16)), recur_counts=(1, 2), recur_tokens=20_480,
        depth_sizes=(3_000,), depth_layers=(1, 2, 3), depth_seeds=(0, 1), depth_tokens=20_480, depth_head_size=4,
        overfit_ladder=((1, 8), (1, 16)), overfit_data_sizes=(4_096, 16_384, 0), overfit_tokens=40_960,
        overfit_dropout=0.1,
        batch_ladder=((1, 8), (1, 16)), batch_sizes=(2, 4, 8, 16), batch_tokens=20_480, batch_lr_factors=(0.5, 1, 2),
        batch_evals_per_decade=16, batch_noise_batches=1,
        schedule_model=(1, 8), schedule_tokens=20_480,
        schedule_variants=(dict(schedule="cosine"), dict(schedule="constant"), dict(schedule="wsd", lr_factor=0.5)),
        lr_rule_file="",  # the smoke store holds no fitted rule: the pilot's rule instead
        train_missing=True, eval_version=EVAL_VERSION,
    ),
    "book": dict(
        corpus="books", device="cpu", batch_size=32, n_ctx=128, eval_tokens=65_536,
        ladder=LADDER_CPU, tokens=8_000_000, budgets=(1_000_000, 2_000_000, 4_000_000), seeds=(0, 1, 2),
        seed_sizes=((1, 16), (2, 48), (4, 96)),
        # sizes up to long_max_N (what two cores have afforded so far) go on to long_tokens; the shared budgets keep the
        # shortest budget, so the warmup, the data order and the stable phase are the 8M runs' own
        long_max_N=800_000, long_tokens=16_000_000, long_budgets=(1_000_000, 2_000_000, 4_000_000, 8_000_000),
        lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1), lr_tokens=2_000_000,
        data_model=(4, 128), data_budget=16_000_000, data_sizes=(2**19, 2**20, 2**21, 2**22, 0),
        shapes=SHAPES_FIG5, shape_tokens=4_000_000,
        # tuned at the shape budget: the shallowest and the deepest of depth-against-width, and the
        # best of the stored scan at the ladder's rule (a choice made after seeing the scan)
        shape_lr_tuned=(dict(n_layer=1, d_model=160), dict(n_layer=2, d_model=112), dict(n_layer=16, d_model=40)),
        lstm_ladder=((1, 16), (1, 32), (1, 64), (2, 64), (2, 128)), lstm_tokens=8_000_000,
        lstm_lr_grid=(3e-3, 1e-2, 3e-2),
        # the tuned ladder: every size to 16M tokens (1.8 epochs), cooldown branches at every doubling
        # from 0.25M, three rates or more a size, then three seeds at the best
        tune_ladder=LADDER_TUNED, tune_tokens=16_000_000,
        tune_budgets=(250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000), tune_seeds=(0, 1, 2),
        tune_eval_version=EVAL_VERSION,
        # the long runs (issue: IsoFLOP slices with their vertex at the small-N edge): at 16M tokens the small
        # sizes stop short of the compute levels where the slices need them below their vertex
        # (`allocation.slice_coverage`), so 13.8k and 24.6k go on to 64M tokens (7.1 epochs of the 9.0M-token
        # split), one run each at the rate that is best at 16M, seed 0, with a cooldown branch at 32M and the
        # grid's warmup (`tune_long_run`): the levels at 2.2e12 and 4.6e12 FLOPs gain a second size below their
        # vertex (runs/predictions/tune-long-13.8k-24.6k-64M.json); about 3 worker-hours (2.8 at the tuned
        # ladder's median rate a cost unit, 3.1 at these sizes' own; they took about 0.5 each). A second round,
        # 3.1k and 55k the same way, for the levels at 4.6e11, 1e12 and 1e13 FLOPs
        # (runs/predictions/tune-long-3.1k-55k-64M.json). A third, 768 the same way, for the level at 2.2e11
        # FLOPs, whose slice has one size below its vertex and would gain 768 at 47M tokens (`slice_coverage`'s
        # need_more_tokens); about 0.4 worker-hours by 3.1k's run. Read by the Kaplan-or-Chinchilla chapter;
        # the chapters about the grids read `TUNE_GRID`
        tune_long_sizes=((1, 8), (1, 16), (2, 24), (2, 32), (2, 48)), tune_long_tokens=64_000_000,
        # a fourth round, longer still: 24.6k (2 x 32) to 128M tokens (14 epochs), for the level at 1e13 FLOPs,
        # whose slice has one size below its vertex and would gain 24.6k at 68M tokens; its 32M and 64M
        # branches would repeat the 64M run's, so it has none (`tune_long_run`'s `after`); about 1 worker-hour
        # by the 64M run's 31 min (runs/predictions/tune-long-24.6k-128M.json)
        tune_longer=((2, 32, 128_000_000),),
        # Porian et al.'s warmup step (the Kaplan-or-Chinchilla chapter): the tuned ladder's sizes up to 55k again at
        # their best config at 16M, with one fixed warmup for every size in place of about N tokens: Kaplan et al.'s
        # 3,000 steps were 1.2% of their 250,000, and 1.2% of the grid's 16M tokens is 192k (77% of the 0.25M
        # branch, 8x the book's warmup at 55k, 77x at 768); about 2 worker-hours by the grids' run times (`progress`).
        # 786k joined later: above 25k every tuned size warms up over 25k tokens (10% of the 0.25M branch), and at
        # 786k the fixed-rule ladder's run of nearly the grid's rate (100k of warmup) sits 3% below the grid's at
        # 1M and 2M tokens; its warmup run (about 50 min) was predicted to close that gap before it was trained
        # (runs/predictions/warmup-786k-fixed-ladder-gap.json)
        warmup_ladder=((1, 6), (1, 8), (2, 8), (1, 16), (2, 16), (2, 24), (2, 32), (2, 48), (4, 128)),
        warmup_fixed_tokens=192_000,
        # short contexts (Fig. 21; 6 runs, cost 147M) and recurrent transformers (Fig. 17; 12 runs,
        # cost 136M): about 0.8 worker-hours each at the 2.1e-5 s a cost unit of the stored CPU runs,
        # at the rate of the rule fitted to the tuned ladder (lr_rule_file, under the store's root)
        context_ladder=((2, 24), (3, 64), (4, 128)), context_n_ctx=(32, 128), context_tokens=4_000_000,
        recur_ladder=((1, 16), (2, 24), (2, 48), (3, 64)), recur_counts=(1, 2, 4), recur_tokens=4_000_000,
        # depth at a fixed size (the depth-versus-latency rebuttal's Fig. 2): five depths from 1 to 16 layers at
        # N near 50k and 300k (d_model in steps of 8 channels, heads of 8), five seeds each, at the rule's
        # rate, to the shape sweep's 4M tokens
        depth_sizes=(50_000, 300_000), depth_layers=(1, 2, 4, 8, 16), depth_seeds=(0, 1, 2, 3, 4),
        depth_tokens=4_000_000, depth_head_size=8,
        # overfitting (Kaplan §4, Fig. 9): four tuned-ladder sizes (3k to 442k) on six nested subsets in
        # x2 steps from 0.26M tokens to the whole split (9.0M), 10% dropout, early-stopped within 8M
        # tokens (0.9 epochs of the whole split, 31 of the smallest subset)
        overfit_ladder=((1, 16), (2, 32), (3, 64), (4, 96)), overfit_data_sizes=(2**18, 2**19, 2**20, 2**21, 2**22, 0),
        overfit_tokens=8_000_000, overfit_dropout=0.1,
        # batch-size scans (Kaplan §5.1, Fig. 10, 18): three sizes at six batches in x2 steps (1k to 32k
        # tokens a step), each at three rates, one token budget
        batch_ladder=((1, 16), (2, 32), (3, 64)), batch_sizes=(8, 16, 32, 64, 128, 256), batch_tokens=4_000_000,
        batch_lr_factors=(0.5, 1, 2), batch_evals_per_decade=16,
        # B_simple (McCandlish et al. 2018) at every evaluation, on one batch of the run's own: +6.7% of the
        # sweep's time as timed on the CPU (1% of a run at 8 sequences a step to 17% at 256, where the
        # evaluations are many for the steps), the estimate tighter the larger the batch
        batch_noise_batches=1,
        # learning-rate schedules (Kaplan App. D.6, Fig. 22): one size of the tuned ladder (24.6k) under
        # eight schedules of one token budget, at the rule's rate (or a multiple of it, `lr_factor`)
        schedule_model=(2, 32), schedule_tokens=4_000_000,
        schedule_variants=(dict(schedule="cosine"), dict(schedule="cosine", min_lr_ratio=0.0),
                           dict(schedule="cosine", lr_factor=0.5), dict(schedule="cosine", lr_factor=2.0),
                           dict(schedule="cosine", warmup_tokens=1_000_000), dict(schedule="wsd"),
                           dict(schedule="wsd", cooldown_frac=0.5), dict(schedule="constant")),
        lr_rule_file=RULE_FILE,
        train_missing=False,
        # the stored sweeps were evaluated the first way (config.EVAL_VERSION); --set eval_version=2 re-runs them
        eval_version=1,
    ),
}
PROFILES["cpu"] = dict(PROFILES["book"], train_missing=True)
PROFILES["gpu"] = dict(
    PROFILES["book"],
    device="cuda", ladder=LADDER_CPU + LADDER_GPU_EXTRA, tokens=32_000_000, long_max_N=0,
    budgets=(2_000_000, 4_000_000, 8_000_000, 16_000_000), data_budget=32_000_000, shape_tokens=16_000_000,
    shape_lr_tuned=(),
    lstm_ladder=((1, 16), (1, 32), (1, 64), (2, 64), (2, 128), (2, 256)), lstm_tokens=16_000_000,
    train_missing=True,
)


# The type of every profile entry, checked when a profile is read (an override included), so that
# `--set tokens=1e6` or a misspelt grid fails at once with the entry's name, not deep in a sweep.
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(v) -> bool:
    return isinstance(v, tuple) and all(_int(x) for x in v)


def _sizes(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, tuple) and len(x) == 2 and _ints(x) for x in v)


def _floats(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, (int, float)) and x > 0 for x in v)


def _long_sizes(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, tuple) and len(x) == 3 and all(_int(i) and i > 0 for i in x)
                                        for x in v)


def _shapes(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, dict) for x in v)


ENTRY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: (lambda v: isinstance(v, str), "a name") for k in ("corpus", "device")},
    "lr_rule_file": (lambda v: isinstance(v, str), "a path under the store's root, or '' for the pilot's rule"),
    **{k: (_int, "an integer") for k in ("batch_size", "n_ctx", "eval_tokens", "tokens", "long_max_N", "long_tokens",
                                          "lr_tokens", "data_budget", "shape_tokens", "lstm_tokens", "tune_tokens",
                                          "tune_long_tokens", "warmup_fixed_tokens",
                                          "eval_version", "tune_eval_version", "context_tokens", "recur_tokens",
                                          "overfit_tokens", "batch_tokens", "batch_evals_per_decade",
                                          "batch_noise_batches",
                                          "depth_tokens", "depth_head_size", "schedule_tokens")},
    **{k: (_ints, "a tuple of integers") for k in ("budgets", "seeds", "long_budgets", "data_sizes", "tune_budgets",
                                                    "tune_seeds", "data_model", "schedule_model", "context_n_ctx",
                                                    "recur_counts",
                                                    "overfit_data_sizes", "batch_sizes", "depth_sizes",
                                                    "depth_layers", "depth_seeds")},
    **{k: (_sizes, "a tuple of (n_layer, d_model) pairs") for k in ("ladder", "seed_sizes", "lstm_ladder",
                                                                     "tune_ladder", "tune_long_sizes", "warmup_ladder",
                                                                     "context_ladder",
                                                                     "recur_ladder", "overfit_ladder", "batch_ladder")},
    **{k: (_floats, "a tuple of positive rates") for k in ("lr_grid", "lstm_lr_grid", "batch_lr_factors")},
    "overfit_dropout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                        "a share of at least 0 and below 1"),
    **{k: (_shapes, "a tuple of shape dicts") for k in ("shapes", "shape_lr_tuned")},
    "schedule_variants": (_shapes, "a tuple of dicts of schedule fields (and lr_factor)"),
    "train_missing": (lambda v: isinstance(v, bool), "True or False"),
    "tune_longer": (_long_sizes, "a tuple of (n_layer, d_model, tokens) triples"),
}


def profile(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The named profile, with some of its entries replaced; a clear error for an unknown name or
    entry, or for an entry of the wrong type."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    unknown = sorted(set(overrides or {}) - set(PROFILES[name]))
    if unknown:
        raise ValueError(f"profile {name!r} has no entry {', '.join(map(repr, unknown))} to override")
    p = dict(PROFILES[name], **(overrides or {}))
    for key, value in p.items():
        check, what = ENTRY_TYPES.get(key, (lambda v: True, ""))
        if not check(value):
            raise ValueError(f"profile entry {key!r} must be {what}, not {value!r}")
    return p


# The pilot's rule, LR = A N^exponent capped at `cap`: its numbers, for the chapters that quote them
LR_PILOT = dict(A=5.6, exponent=-0.57, cap=0.1)


def lr_rule_pilot(N: float) -> float:
    """Best peak LR against N measured in this machine's pilot (training.md): 5.6 N^-0.57, capped at 0.1
    (`LR_PILOT`)."""
    return float(min(LR_PILOT["cap"], LR_PILOT["A"] * N**LR_PILOT["exponent"]))


SweepFn = Callable[[dict, Store], list[RunConfig]]
SWEEPS: dict[str, SweepFn] = {}


def sweep(fn: SweepFn) -> SweepFn:
    SWEEPS[fn.__name__.removeprefix("sweep_").replace("_", "-")] = fn
    return fn


def _sweep_name(p: dict, name: str) -> str:
    """Where a sweep's runs are filed: a GPU profile's under a folder of their own."""
    return name + ("-gpu" if p.get("device") == "cuda" else "")


def _base(p: dict, name: str, **kw) -> RunConfig:
    return RunConfig(sweep=_sweep_name(p, name), batch_size=p["batch_size"], n_ctx=p["n_ctx"], eval_tokens=p["eval_tokens"],
                     device=p.get("device", "cpu"), corpus=p.get("corpus", "books"),
                     eval_version=p["eval_version"], **kw)


def ladder_lr(N: float) -> float:
    """Peak LR for the ladder: the rule fitted to this machine's pilot LR sweep (training.md)."""
    return round(lr_rule_pilot(N), 5)


def _lr_grid(base: RunConfig, grid, store: Store) -> list[RunConfig]:
    """`base` at each rate of the grid, which grows (x3, at most twice) past an edge that wins.

    Only complete grids are judged: a rate still untrained leaves the grid as it is. A diverged rate
    is a stored result too, the worst one.
    """
    grid = sorted(grid)
    for _ in range(2):
        losses = {}
        for lr in grid:
            rec = store.load(base.replace(lr=lr))
            if rec is not None:
                losses[lr] = rec["final"]["val_loss"] if rec["status"] == "ok" else math.inf
        if len(losses) < len(grid):
            break
        best = min(losses, key=losses.get)
        if best == grid[-1] and grid[-1] * 3 <= 1.0:
            grid.append(round(grid[-1] * 3, 6))
        elif best == grid[0] and grid[0] / 3 >= 1e-5:
            grid.insert(0, round(grid[0] / 3, 8))
        else:
            break
    return [base.replace(lr=lr) for lr in grid]


@sweep
def sweep_lr(p: dict, store: Store) -> list[RunConfig]:
    """Peak learning rate at every ladder size, at a short budget; the grid grows at an edge that wins."""
    cfgs = []
    for n_layer, d_model in p["ladder"]:
        base = _base(p, "lr", n_layer=n_layer, d_model=d_model, tokens=p["lr_tokens"], schedule="cosine")
        cfgs += _lr_grid(base, p["lr_grid"], store)
    return cfgs


@sweep
def sweep_ladder(p: dict, store: Store) -> list[RunConfig]:
    """The model-size ladder, each size at several doubling budgets (wsd cooldowns), extra seeds at some sizes.

    Sizes up to the profile's `long_max_N` train on to `long_tokens`, with `long_budgets` as branches.
    """
    cfgs = []
    for n_layer, d_model in p["ladder"]:
        base = _base(p, "ladder", n_layer=n_layer, d_model=d_model, tokens=p["tokens"], budgets=p["budgets"],
                     schedule="wsd")
        if base.N <= p.get("long_max_N", 0):
            base = base.replace(tokens=p["long_tokens"], budgets=p["long_budgets"])
        seeds = p["seeds"] if (n_layer, d_model) in p["seed_sizes"] else (0,)
        cfgs += [base.replace(lr=ladder_lr(base.N), seed=s) for s in seeds]
    # every size once before the extra seeds, the longest first within each
    return sorted(cfgs, key=lambda c: (c.seed, -cost([c])))


def lr_prior(N: float) -> float:
    """The rate at which a tuned-ladder grid is centred (LR_PRIOR)."""
    return LR_PRIOR["A"] * N ** LR_PRIOR["b"]


def lattice_lr(k: int) -> float:
    return float(f"{LR_LATTICE * 2.0 ** k:.6g}")


def _budget_losses(rec: dict) -> dict[int, float]:
    """A stored run's loss at each of its budgets; a diverged run or budget is the worst result."""
    if rec["status"] not in FINISHED:
        return {b["tokens"]: math.inf for b in rec.get("budgets", [])} or {0: math.inf}
    budgets = rec.get("budgets") or [dict(tokens=rec.get("tokens", 0), val_loss=rec["final"].get("val_loss"),
                                          status=rec["status"])]
    return {b["tokens"]: b["val_loss"] if b.get("status", "ok") == "ok" and b["val_loss"] is not None
            and math.isfinite(b["val_loss"]) else math.inf for b in budgets}


def _tuned_grid(base: RunConfig, store: Store, max_steps: int = 3) -> tuple[list[RunConfig], RunConfig | None]:
    """Three rates in x2 steps around the prior, and one more past each edge that wins at any of
    the budgets (at most `max_steps` times a side), so that every (N, budget) has its best rate
    strictly inside; and, once no edge wins, the config that is best at the longest budget (else
    None). A diverged rate is a stored result, the worst one.

    A rate added past an edge is trained only as far as it must be (`_growth_run`): where the edge
    won at the shorter budgets alone, to the budget after the last of them. At a budget that a rate's
    run does not reach, the best is read among the rates that do."""
    k0 = round(math.log2(lr_prior(base.N) / LR_LATTICE))
    runs = {k: base.replace(lr=lattice_lr(k)) for k in (k0 - 1, k0, k0 + 1)}
    grow = {"up": 0, "down": 0}
    while True:
        ks = sorted(runs)
        losses = {}
        for k in ks:
            rec = store.load(runs[k])
            if rec is None and runs[k].tokens != base.tokens:  # a full-length run of the rate serves as well
                full = base.replace(lr=lattice_lr(k))
                rec = store.load(full)
                runs[k] = full if rec is not None else runs[k]
            if rec is not None:
                losses[k] = _budget_losses(rec)
        grid = [runs[k] for k in ks]
        if len(losses) < len(ks):
            return grid, None
        budgets = sorted(set().union(*(set(v) for v in losses.values())))
        best_at = {t: min((k for k in ks if t in losses[k]), key=lambda k: losses[k][t]) for t in budgets}
        wins = {side: [t for t in budgets if best_at[t] == edge] for side, edge in (("down", ks[0]), ("up", ks[-1]))}
        step = {side: bool(wins[side]) and grow[side] < max_steps for side in wins}
        if not any(step.values()):
            # an edge among the rates that reach the budget (the grid's ends, where every rate reaches it)
            present = {t: [k for k in ks if t in losses[k]] for t in budgets}
            edge = any(best_at[t] in (present[t][0], present[t][-1]) and len(present[t]) > 1 or len(present[t]) == 1
                       for t in budgets)
            return grid, None if edge or not budgets else base.replace(lr=lattice_lr(best_at[budgets[-1]]))
        for side, k in (("down", ks[0] - 1), ("up", ks[-1] + 1)):
            if step[side]:
                runs[k] = _growth_run(base, k, wins[side])
                grow[side] += 1


def _growth_run(base: RunConfig, k: int, won_at: list[int]) -> RunConfig:
    """The run of rate `k` added past an edge that won at the budgets `won_at` (tokens as stored, whole steps):
    a run to the first of the grid's budgets past the last of them, with the grid's warmup and its shorter
    budgets. Its stable phase is the full-length run's, and a cooldown branch draws its data by its own
    length (`train._cooldown_branch`), so its branches are those a run to the grid's longest budget would make,
    at a fraction of the cost; where the edge won at the budget before the longest, it is the full run."""
    tps = base.tokens_per_step
    after = [b for b in base.all_budgets if b // tps > max(won_at) // tps]
    horizon = after[0] if after else base.tokens
    if horizon >= base.tokens:
        return base.replace(lr=lattice_lr(k))
    return base.replace(lr=lattice_lr(k), tokens=horizon, budgets=tuple(b for b in base.budgets if b < horizon),
                        warmup_tokens=base.warmup_tokens)


# Overrides that plan the tuned ladder without its long runs: its grids and their seeds, what the chapters
# about the grids (the best rates, the rule, L(N, D) of the ladder, the best runs' curves) read.
TUNE_GRID: dict[str, Any] = {"tune_long_sizes": (), "tune_longer": ()}


def _seed_mean(cfg: RunConfig, store: Store, seeds, tokens: int) -> float | None:
    """A rate's mean loss at `tokens` over its stored, finished runs at `seeds` (`_budget_losses`: a diverged
    budget counts as the worst result); None where none of them reaches `tokens`. The book's reading of a rate
    (`tuning.best_rates`), as the plan's rules for seeds (`_runner_up_seeds`, `_past_mean_edge`) apply it."""
    losses = [_budget_losses(r).get(tokens) for r in (store.load(cfg.replace(seed=s)) for s in seeds)
              if r is not None and r["status"] in FINISHED]
    losses = [v for v in losses if v is not None]
    return sum(losses) / len(losses) if losses else None


def _runner_up_seeds(best: RunConfig, grid: list[RunConfig], store: Store, seeds) -> list[RunConfig]:
    """The extra seeds at a finished grid's runner-up rate (the second best at the longest budget on the grid's
    seed), where the best rate's seeds, all landed, lift its mean over them at that budget above the runner-up's
    one run. One rate's seed mean against another's single run would then name the best by which rate has more
    seeds; with the same seeds at both, the two are compared like for like (`tuning.best_rates` reads the means).
    Only the runner-up: a third rate is not seeded, whatever the runner-up's seeds show."""
    recs = [store.load(best.replace(seed=s)) for s in seeds]
    if len(recs) < 2 or any(r is None or r["status"] not in FINISHED for r in recs):
        return []
    longest = max(_budget_losses(recs[0]))
    rivals = {}
    for c in grid:
        rec = store.load(c)
        if c.lr != best.lr and rec is not None and longest in _budget_losses(rec):
            rivals[c] = _budget_losses(rec)[longest]
    if not rivals:
        return []
    runner_up = min(rivals, key=rivals.get)
    if not _seed_mean(best, store, seeds, longest) > rivals[runner_up]:
        return []
    return [runner_up.replace(seed=s) for s in seeds if s != runner_up.seed]


def _past_mean_edge(base: RunConfig, grid: list[RunConfig], store: Store, seeds, max_steps: int = 3) -> list[RunConfig]:
    """Once a grid's runner-up has its seeds (`_runner_up_seeds`): where the rate best at the longest budget by each
    rate's mean over its seeds (the book's reading, `tuning.best_rates`) is the lowest or the highest of the rates
    that reach that budget, the next rate past it, trained to the longest budget on the grid's seed; and so on while
    the new rate wins (at most `max_steps`). A rate the grid trained only to a shorter horizon (`_growth_run`) is
    planned again at full length, and then stands in for the shorter run (`_tuned_grid`). The grid's own growth reads
    its seed alone, so this is where the mean reading gets its best inside at the budget a size is read at."""
    full = [c for c in grid if c.tokens == base.tokens]
    recs = [store.load(c) for c in full]
    if not recs or any(r is None for r in recs):
        return []
    longest = max(_budget_losses(recs[0]))
    out: list[RunConfig] = []
    while len(out) < max_steps:
        means = {c.lr: _seed_mean(c, store, seeds, longest) for c in full + out}
        if any(v is None for v in means.values()):
            return out
        lrs = sorted(means)
        best = min(means, key=means.get)
        if best not in (lrs[0], lrs[-1]):
            return out
        k = round(math.log2(best / LR_LATTICE)) + (-1 if best == lrs[0] else 1)
        out.append(base.replace(lr=lattice_lr(k)))
    return out


def tune_long_run(best: RunConfig, p: dict, tokens: int | None = None, after: int | None = None) -> RunConfig:
    """A size's long run: its grid's best config at the longest budget (seed 0) trained on to `tokens`
    (default `tune_long_tokens`), with a cooldown branch at every doubling of `tune_tokens` below that and past
    `after` (default `tune_tokens`: those points are the grid's; a longer round passes the first round's
    length, whose run has those branches), and the grid's own warmup, so that its stable phase is the stored
    run's and it only adds budgets past the stored ones."""
    tokens = tokens or p["tune_long_tokens"]
    after = after or p["tune_tokens"]
    budgets, b = [], 2 * p["tune_tokens"]
    while b < tokens:
        if b > after:
            budgets.append(b)
        b *= 2
    return best.replace(tokens=tokens, budgets=tuple(budgets), warmup_tokens=best.warmup_tokens)


def _longer_runs(best: RunConfig, p: dict, size: tuple[int, int]) -> list[RunConfig]:
    """A size's runs past the grid: the long run where it is in `tune_long_sizes`, and each of `tune_longer`'s
    at that size, with branches only past the first round's length."""
    first = size in p["tune_long_sizes"]
    out = [tune_long_run(best, p)] if first else []
    out += [tune_long_run(best, p, tokens=t, after=p["tune_long_tokens"] if first else None)
            for L, d, t in p["tune_longer"] if (L, d) == size]
    return out


def is_tune_long(cfg: RunConfig, p: dict) -> bool:
    """Whether a config of the tuned ladder is a long run (trained past the grid's `tune_tokens`)."""
    return cfg.tokens > p["tune_tokens"]


def _tune_base(p: dict, n_layer: int, d_model: int) -> RunConfig:
    """A tuned-ladder size's grid run before its rate: wsd to `tune_tokens`, branches at `tune_budgets`."""
    return _base(p, "tune", n_layer=n_layer, d_model=d_model, tokens=p["tune_tokens"], budgets=p["tune_budgets"],
                 schedule="wsd").replace(eval_version=p["tune_eval_version"])


@sweep
def sweep_tune(p: dict, store: Store) -> list[RunConfig]:
    """The tuned ladder: at every size a grid of peak rates, each a wsd run to the longest budget
    with cooldown branches at every doubling; then the extra seeds at the size's best rate, and at its runner-up
    where those seeds lift the best's mean above it (`_runner_up_seeds`); and, at
    the sizes of `tune_long_sizes`, the long run (`tune_long_run`) once the size's grid is finished, and
    those of `tune_longer`, a longer round past it."""
    unknown = sorted(set(p["tune_long_sizes"]) - set(p["tune_ladder"]))
    if unknown:
        raise ValueError(f"tune_long_sizes {unknown} are not sizes of tune_ladder: a long run continues a tuned grid")
    if p["tune_long_sizes"] and p["tune_long_tokens"] <= p["tune_tokens"]:
        raise ValueError(f"tune_long_tokens ({p['tune_long_tokens']:,}) must exceed tune_tokens ({p['tune_tokens']:,})")
    for L, d, t in p["tune_longer"]:
        if (L, d) not in p["tune_ladder"]:
            raise ValueError(f"tune_longer size {(L, d)} is not a size of tune_ladder: a long run continues a tuned grid")
        floor = p["tune_long_tokens"] if (L, d) in p["tune_long_sizes"] else p["tune_tokens"]
        if t <= floor:
            raise ValueError(f"tune_longer {(L, d, t)}: {t:,} tokens must exceed the size's runs so far ({floor:,})")
    cfgs = []
    for n_layer, d_model in p["tune_ladder"]:
        grid, best = _tuned_grid(_tune_base(p, n_layer, d_model), store)
        cfgs += grid
        if best is not None:
            cfgs += [best.replace(seed=s) for s in p["tune_seeds"] if s != best.seed]
            runner_up = _runner_up_seeds(best, grid, store, p["tune_seeds"])
            cfgs += runner_up
            if runner_up and all(store.has(c) for c in runner_up):
                cfgs += _past_mean_edge(_tune_base(p, n_layer, d_model), grid, store, p["tune_seeds"])
            cfgs += _longer_runs(best, p, (n_layer, d_model))
    # the smallest first: the sizes that the prediction is fitted on land before the largest
    return sorted(cfgs, key=lambda c: (c.N, c.seed, c.lr, c.tokens))


def _tune_foreseen(p: dict, store: Store) -> list[RunConfig]:
    """The runs `sweep_tune` plans once a size's grid is finished, at every size whose grid is not: the extra
    seeds, and the long run where the size has one, at the grid's centre rate (the best where no edge wins)."""
    out = []
    for n_layer, d_model in p["tune_ladder"]:
        grid, best = _tuned_grid(_tune_base(p, n_layer, d_model), store)
        if best is None:
            centre = grid[len(grid) // 2]
            out += [centre.replace(seed=s) for s in p["tune_seeds"] if s != centre.seed]
            out += _longer_runs(centre, p, (n_layer, d_model))
    return out


def foreseen(name: str, profile_name: str, store: Store | None = None,
             overrides: dict | None = None) -> list[RunConfig]:
    """The runs a sweep will plan once the runs planned now land, where that can be told in advance (the tuned
    ladder's seeds and long runs at a size whose grid is unfinished, taken at the grid's centre rate); empty
    for the sweeps that plan everything at once, or whose growth cannot be told (a grid that grows past a
    winning edge adds rates no one can foresee). `overrides` as for `configs`."""
    if name not in FORESEEN:
        return []
    return FORESEEN[name](profile(profile_name, overrides), store or Store())


@sweep
def sweep_warmup(p: dict, store: Store) -> list[RunConfig]:
    """Porian et al.'s warmup step (the Kaplan-or-Chinchilla chapter's "what moves the exponent"): at each size of
    `warmup_ladder` whose tuned grid is finished, the grid's best config at the longest budget (seed 0, its
    branches and rate) trained again with one fixed warmup for every size, `warmup_fixed_tokens`, in place of the
    book's (about N tokens, `config.default_warmup`). Its twin in the tuned grid is `warmup_twin`."""
    return [_warmup_run(p, best) for best, finished in _warmup_grids(p, store) if finished]


def _warmup_grids(p: dict, store: Store) -> list[tuple[RunConfig, bool]]:
    """Each warmup size's grid: its best config at the longest budget and True where the grid is finished, else
    its centre rate's config and False."""
    unknown = sorted(set(p["warmup_ladder"]) - set(p["tune_ladder"]))
    if unknown:
        raise ValueError(f"warmup_ladder {unknown} are not sizes of tune_ladder: a warmup run repeats a tuned grid's")
    out = []
    for n_layer, d_model in p["warmup_ladder"]:
        grid, best = _tuned_grid(_tune_base(p, n_layer, d_model), store)
        out.append((best, True) if best is not None else (grid[len(grid) // 2], False))
    return out


def _warmup_run(p: dict, grid_run: RunConfig) -> RunConfig:
    return grid_run.replace(sweep=_sweep_name(p, "warmup"), warmup_tokens=p["warmup_fixed_tokens"])


def _warmup_foreseen(p: dict, store: Store) -> list[RunConfig]:
    """The warmup runs of the sizes whose grid is unfinished, at the grid's centre rate."""
    return [_warmup_run(p, centre) for centre, finished in _warmup_grids(p, store) if not finished]


# the sweeps whose plan grows from their results in a way that can be foreseen: what they will add
FORESEEN: dict[str, SweepFn] = {"tune": _tune_foreseen, "warmup": _warmup_foreseen}


def warmup_twin(cfg: RunConfig) -> RunConfig:
    """The tuned-grid run that a run of the warmup sweep repeats with the book's warmup: the same config, filed
    under `tune`, its warmup the default again."""
    return cfg.replace(sweep=cfg.sweep.replace("warmup", "tune", 1), warmup_tokens=-1)


@sweep
def sweep_data(p: dict, store: Store) -> list[RunConfig]:
    """L(D): one large model on nested subsets of the training split, early-stopped (Kaplan §3.1)."""
    n_layer, d_model = p["data_model"]
    base = _base(p, "data", n_layer=n_layer, d_model=d_model, tokens=p["data_budget"], schedule="cosine",
                 early_stop=True)
    base = base.replace(lr=ladder_lr(base.N))
    # the largest subsets first: they run longest (the smaller ones stop early)
    sizes = sorted(p["data_sizes"], key=lambda d: d or math.inf, reverse=True)
    return [base.replace(data_tokens=d) for d in sizes]


@sweep
def sweep_shape(p: dict, store: Store) -> list[RunConfig]:
    """Shapes at (nearly) fixed N: depth against width, feed-forward ratio, head dimension (Fig. 5),
    at the ladder's rate; and the shapes of `shape_lr_tuned` at half and twice it too, the grid
    growing past a winning edge, to test whether the rule's rate makes the trend."""
    cfgs = []
    for shape in p["shapes"]:
        base = _base(p, "shape", tokens=p["shape_tokens"], schedule="cosine", **shape)
        cfgs.append(base.replace(lr=ladder_lr(base.N)))
    for shape in p.get("shape_lr_tuned", ()):
        base = _base(p, "shape", tokens=p["shape_tokens"], schedule="cosine", **shape)
        lr = ladder_lr(base.N)
        cfgs += [c for c in _lr_grid(base, (round(lr / 2, 6), lr, round(lr * 2, 6)), store) if c not in cfgs]
    return cfgs


@sweep
def sweep_lstm(p: dict, store: Store) -> list[RunConfig]:
    """An LSTM ladder (Fig. 7), each size at a small grid of learning rates that grows at a winning edge."""
    cfgs = []
    for n_layer, d_model in p["lstm_ladder"]:
        base = _base(p, "lstm", arch="lstm", n_layer=n_layer, d_model=d_model, tokens=p["lstm_tokens"],
                     schedule="cosine")
        cfgs += _lr_grid(base, p["lstm_lr_grid"], store)
    return sorted(cfgs, key=lambda c: -cost([c]))  # the longest first: a sweep cut short misses small runs


class MissingRule(FileNotFoundError):
    """A sweep takes its rates from the fitted learning-rate rule, and the store holds none."""


def rule_lr(p: dict, store: Store, N: float, D: float, sweep_name: str) -> float:
    """The peak rate of a sweep planned after the tuned ladder: the fitted rule LR*(N, D) filed under
    the store's root (the profile's `lr_rule_file`, tuning.RULE_FILE), on a lattice of quarter
    octaves so that a refit that moves the rate a little leaves the grid (and its keys) put; the
    pilot's rule where the profile names no file (smoke)."""
    if not p["lr_rule_file"]:
        return ladder_lr(N)
    path = store.root / p["lr_rule_file"]
    if not path.is_file():
        raise MissingRule(
            f"the {sweep_name!r} sweep takes its learning rates from the fitted rule {path}, which does not exist: "
            "fit it to the tuned ladder (tuning.fit_rule of tuning.best_rates of the 'tune' sweep) and save it "
            f"there (LRRule.save), or plan with the pilot's rule instead (--set lr_rule_file=''); "
            "the sweeps that need no rule run when named without this one")
    return lattice_rate(float(LRRule.load(path)(N, D)))


def lattice_rate(lr: float) -> float:
    """A rate rounded to the nearest quarter octave of the lattice 0.01 * 2^k: the rate a sweep planned from
    the fitted rule trains at (`rule_lr`)."""
    return lattice_lr(round(4 * math.log2(lr / LR_LATTICE)) / 4)


@sweep
def sweep_context(p: dict, store: Store) -> list[RunConfig]:
    """Short contexts (Kaplan Fig. 21, App. D.5): each size at every n_ctx of `context_n_ctx`, at one
    token budget and one batch in tokens (more sequences a step where they are shorter), with the
    loss at every position stored along training (Fig. 20, right)."""
    cfgs = []
    tokens_per_step = p["batch_size"] * p["n_ctx"]
    for n_ctx in p["context_n_ctx"]:
        if tokens_per_step % n_ctx:
            raise ValueError(f"context_n_ctx {n_ctx} does not divide the batch of {tokens_per_step} tokens")
    for n_layer, d_model in p["context_ladder"]:
        for n_ctx in p["context_n_ctx"]:
            base = _base(p, "context", n_layer=n_layer, d_model=d_model, tokens=p["context_tokens"], schedule="wsd",
                         eval_per_position=True)
            base = base.replace(n_ctx=n_ctx, batch_size=tokens_per_step // n_ctx, eval_version=EVAL_VERSION)
            cfgs.append(base.replace(lr=rule_lr(p, store, base.N, base.tokens, "context")))
    return sorted(cfgs, key=lambda c: (-cost([c]), -c.n_ctx))  # the longest first


@sweep
def sweep_recur(p: dict, store: Store) -> list[RunConfig]:
    """Recurrent transformers (Kaplan Fig. 17, App. D.2): each size with its blocks applied once (the
    plain gpt) and `recur_counts` times (arch 'ut'), at the rate the rule gives its N (the shared
    parameters counted once, so both see the same rate)."""
    cfgs = []
    for n_layer, d_model in p["recur_ladder"]:
        for n_recur in p["recur_counts"]:
            base = _base(p, "recur", arch="gpt" if n_recur == 1 else "ut", n_layer=n_layer, d_model=d_model,
                         n_recur=n_recur, tokens=p["recur_tokens"], schedule="wsd").replace(eval_version=EVAL_VERSION)
            cfgs.append(base.replace(lr=rule_lr(p, store, base.N, base.tokens, "recur")))
    return sorted(cfgs, key=lambda c: -cost([c]))  # the longest first



@sweep
def sweep_overfit(p: dict, store: Store) -> list[RunConfig]:
    """Overfitting (Kaplan §4, Fig. 9, Eq. 1.5): every size of `overfit_ladder` on every nested subset
    of the training split in `overfit_data_sizes` (0: the whole split), with 10% dropout as in the
    paper, early-stopped on the validation loss within `overfit_tokens`; D is the subset's size, not
    the tokens processed. The rate is the rule's at (N, overfit_tokens), the budget each run is
    planned to, as for every sweep after the tuned ladder; evaluated the new way, so that an
    early-stopped run reports the test loss of the model it selected."""
    cfgs = []
    for n_layer, d_model in p["overfit_ladder"]:
        base = _base(p, "overfit", n_layer=n_layer, d_model=d_model, tokens=p["overfit_tokens"], schedule="cosine",
                     early_stop=True, dropout=p["overfit_dropout"]).replace(eval_version=EVAL_VERSION)
        base = base.replace(lr=rule_lr(p, store, base.N, base.tokens, "overfit"))
        cfgs += [base.replace(data_tokens=d) for d in p["overfit_data_sizes"]]
    # the largest subsets and sizes first: they run longest (the smaller subsets stop early)
    return sorted(cfgs, key=lambda c: (-(c.data_tokens or math.inf), -c.N))


@sweep
def sweep_batch(p: dict, store: Store) -> list[RunConfig]:
    """Batch-size scans (Kaplan §5.1, Fig. 10 and 18; McCandlish et al. 2018): each size of
    `batch_ladder` at every batch of `batch_sizes` (sequences a step), all to one token budget
    (`batch_tokens`) at a constant rate after the warmup, so that the steps S and examples E to reach a
    loss are read off the curve (`batch.steps_to_reach`, between evaluations that come
    `batch_evals_per_decade` times a decade of steps, 16 in the profiles: twice the default).

    The rate is re-tuned at every batch, as McCandlish et al. do: `batch_lr_factors` (half, once and
    twice) times a centre, the grid growing past an edge that wins at the budget (`_lr_grid`). The
    centre is the rule's rate, fitted at the profile's batch B0, times sqrt(B/B0): the square-root
    rule under which Adam's updates keep their noise as the batch changes (Malladi et al. 2022), a
    middle way between a fixed rate (right far above the critical batch) and the linear rule (right
    far below it), so that the x4 grid reaches the best rate at both ends of the scan. The centre
    is put on the rule's lattice of quarter octaves, so a batch twice another's is half an octave
    apart and shares rates with it.

    Every run measures the gradient noise scale B_simple at each evaluation (`batch_noise_batches`
    batches of its own batch, config `noise_batches`), an estimate of B_crit independent of the scans
    (McCandlish et al. 2018; `batch.noise_scale_curve` reads it back)."""
    cfgs = []
    B0 = p["batch_size"]
    for n_layer, d_model in p["batch_ladder"]:
        for B in p["batch_sizes"]:
            base = _base(p, "batch", n_layer=n_layer, d_model=d_model, tokens=p["batch_tokens"], schedule="constant")
            base = base.replace(batch_size=B, evals_per_decade=p["batch_evals_per_decade"], eval_version=EVAL_VERSION,
                                noise_batches=p["batch_noise_batches"])
            centre = rule_lr(p, store, base.N, base.tokens, "batch") * math.sqrt(B / B0)
            centre = lattice_lr(round(4 * math.log2(centre / LR_LATTICE)) / 4)
            cfgs += _lr_grid(base, [float(f"{centre * f:.6g}") for f in p["batch_lr_factors"]], store)
    # the smallest batches first within a size: the most steps, the longest runs
    return sorted(cfgs, key=lambda c: (-cost([c]), c.batch_size, c.lr))

SCHEDULE_FIELDS = ("schedule", "min_lr_ratio", "cooldown_frac", "warmup_tokens")


@sweep
def sweep_schedule(p: dict, store: Store) -> list[RunConfig]:
    """Learning-rate schedules (Kaplan App. D.6, Fig. 22): the size `schedule_model` under each of
    `schedule_variants` (a schedule and its shape: `min_lr_ratio`, `cooldown_frac`, `warmup_tokens`;
    and `lr_factor`, a multiple of the rule's peak rate), all to `schedule_tokens`; the chapter sets
    each run's final loss against the area under its schedule (`schedules.summed_lr`)."""
    n_layer, d_model = p["schedule_model"]
    base = _base(p, "schedule", n_layer=n_layer, d_model=d_model, tokens=p["schedule_tokens"])
    base = base.replace(eval_version=EVAL_VERSION)
    lr = rule_lr(p, store, base.N, base.tokens, "schedule")
    cfgs = []
    for v in p["schedule_variants"]:
        unknown = sorted(set(v) - set(SCHEDULE_FIELDS) - {"lr_factor"})
        if unknown:
            raise ValueError(f"schedule_variants: {', '.join(unknown)} is not a schedule field "
                             f"({', '.join(SCHEDULE_FIELDS)}, or lr_factor)")
        fields = {k: v[k] for k in SCHEDULE_FIELDS if k in v}
        cfg = base.replace(**fields, lr=float(f"{lr * v.get('lr_factor', 1.0):.6g}"))
        if cfg in cfgs:
            raise ValueError(f"schedule_variants: {v} repeats another variant")
        cfgs.append(cfg)
    return cfgs


@sweep
def sweep_depth(p: dict, store: Store) -> list[RunConfig]:
    """Depth at a fixed size (the depth-versus-latency rebuttal, seeds/000, Fig. 2; 'Depth costs time'):
    at each N of `depth_sizes`, the shape of each depth of `depth_layers` whose non-embedding N is
    nearest (`flops.shapes_at_fixed_N`, d_model in steps of `depth_head_size`, heads of that size),
    with every seed of `depth_seeds`, at the rule's rate for the shape's own N, to `depth_tokens`."""
    cfgs = []
    for N in p["depth_sizes"]:
        for s in shapes_at_fixed_N(N, p["depth_layers"], head_size=p["depth_head_size"], n_ctx=p["n_ctx"]):
            base = _base(p, "depth", n_layer=s["n_layer"], d_model=s["d_model"], n_head=s["n_head"],
                         tokens=p["depth_tokens"], schedule="wsd").replace(eval_version=EVAL_VERSION)
            lr = rule_lr(p, store, base.N, base.tokens, "depth")
            cfgs += [base.replace(lr=lr, seed=seed) for seed in p["depth_seeds"]]
    return sorted(cfgs, key=lambda c: (c.seed, -cost([c])))  # every shape's first seed before any second


def configs(name: str, profile_name: str, store: Store | None = None,
            overrides: dict | None = None) -> list[RunConfig]:
    """Every config of a named sweep, of several ('data,lstm') or of 'all', under a profile.

    `overrides` replaces profile entries: {"long_max_N": 0} is the ladder as it stood before its
    smaller sizes went on to 16M tokens (every size at 8M).
    """
    store = store or Store()
    p = profile(profile_name, overrides)
    names = list(SWEEPS) if name == "all" else name.split(",")
    for n in names:
        if n not in SWEEPS:
            raise ValueError(f"unknown sweep {n!r}: choose one of {', '.join(SWEEPS)} or 'all'")
    out = []
    for n in names:
        try:
            out += SWEEPS[n](p, store)
        except MissingRule:
            if name != "all":
                raise
            # 'all' is what can be planned now: a sweep that waits for the tuned rule joins once it is stored
            log.info("sweep %s waits for the fitted learning-rate rule; left out of 'all'", n)
    return out


def cost(cfgs: list[RunConfig]) -> float:
    """A rough cost: tokens times (N at each use + the output layer), for ordering and for the log line."""
    return sum(c.tokens * (1.2 if c.budgets else 1.0) * (c.N * arch.uses(c) + c.d_model * c.vocab) / 1e5
               for c in cfgs)
