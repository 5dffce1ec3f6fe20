"""Predictions filed before the runs they predict, and their scores once those runs exist.

A prediction is a record under ``<runs root>/predictions/<name>.json``: what was predicted (the
validation loss of the grid's best rate at a size and budget), from which stored runs (their keys),
by which fits (the law, its parameters and 95% bootstrap intervals), and the config keys of the
runs it predicts: a key exists before its run does. The commit that adds the file is its timestamp;
`made_at` and `commit` say when and from what code it was made. A prediction is never redone: a
file that exists is not overwritten, and a second prediction is a new record under another name.

The predicted quantity is the one the chapters fit: at each (N, budget), the mean over seeds of the
runs at the grid's best rate (`tuning.at_best_rate`), a measured loss, not a parabola's minimum.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import fit, tuning
from .config import RunConfig
from .pages import budget_name, counted
from .store import Store, write_json

FOLDER = "predictions"
QUANTITY = ("validation loss at the budget, mean over the seeds at the grid's best rate for that (N, budget); "
            "evaluation version {eval_version}")
# the laws a ladder prediction is made with: L(N) at the longest budget, and the two joint laws on every budget
FITS = (("power", "longest budget"), ("kaplan-nd", "every budget"), ("chinchilla", "every budget"))
# the law that places new sizes (between stored ones, or below them) on the IsoFLOP slices: of the joint laws, the
# one whose predictions of the three long-run records erred least (Kaplan's form by at most 2.5%, Chinchilla's 7.6%;
# but Kaplan's 95% intervals held 7 of the 10 measurements, Chinchilla's all 10), chosen before any new size was
# trained
NEW_SIZE_LEVELS_LAW = "kaplan-nd"
# where a ladder prediction's new sizes sit against the stored ones (`predict_ladder`); "longer" runs at stored sizes
# are `predict_longer`'s
SCOPES = ("larger", "between", "smaller")
NEW_SIZES = ("between", "smaller")


class PredictionError(ValueError):
    """A prediction that cannot be made honestly (its targets already trained, too few sizes, a name in use)."""


def path(name: str, store: Store | None = None) -> Path:
    return (store or Store()).root / FOLDER / f"{name}.json"


def load(name: str, store: Store | None = None) -> dict[str, Any]:
    p = path(name, store)
    if not p.exists():
        raise FileNotFoundError(f"no prediction {name!r} under {p.parent}")
    return json.loads(p.read_text())


def load_all(store: Store | None = None) -> list[dict[str, Any]]:
    folder = (store or Store()).root / FOLDER
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]


def claimed(store: Store | None = None) -> set[str]:
    """The config keys of every run some filed prediction predicts."""
    return {k for rec in load_all(store) for t in rec.get("targets", []) for k in t.get("keys", [])}


def _unclaimed(name: str, targets, store: Store) -> tuple[list, Path]:
    """The targets as a list and the prediction's path, after the refusals every prediction makes: no
    targets, a name already taken (a prediction is never redone), or a target already trained (a
    prediction is made before its runs)."""
    targets = list(targets)
    if not targets:
        raise PredictionError("no target configs to predict")
    out = path(name, store)
    if out.exists():
        raise PredictionError(f"a prediction named {name!r} exists ({out}): a prediction is never redone; "
                              "file a new one under another name")
    trained = [c for c in targets if store.has(c)]
    if trained:
        raise PredictionError(f"{len(trained)} target run(s) are stored already (e.g. {trained[0].name}): "
                              "a prediction is made before its runs")
    return targets, out


def _record(name: str, commit: str | None, **fields: Any) -> dict[str, Any]:
    """A prediction's record: its name, when and at which commit it was made (the commit is its timestamp), and
    the fields of its kind."""
    return dict(kind="prediction", name=name, made_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                commit=commit, **fields)


def _sources(table: pd.DataFrame, target_N: Sequence[int], scope: str) -> pd.DataFrame:
    """The rows of `table` a ladder prediction fits its laws on: the sizes below the targets for "larger" ones,
    every other size for new sizes "between" or "smaller"; refuses a target that is not where `scope` says."""
    if scope == "larger":
        return table[table["N"] < min(target_N)]
    rest = table[~table["N"].isin(target_N)]
    stored = np.sort(rest["N"].unique())
    if scope == "between":
        wrong = [N for N in target_N if not (stored < N).any() or not (stored > N).any()]
        why = "has no stored size on one side: a prediction between sizes interpolates"
    else:
        wrong = [N for N in target_N if (stored < N).any()]
        why = "has stored sizes below it: a prediction of smaller sizes is of sizes below every stored one"
    if wrong:
        raise PredictionError(f"N = {', '.join(f'{n:,}' for n in wrong)} {why}")
    return rest


def predict_ladder(name: str, table: pd.DataFrame, targets: Sequence[RunConfig], *, store: Store | None = None,
                   bootstrap: int = 200, seed: int = 0, commit: str | None = None, save: bool = True,
                   scope: str = "larger", levels: dict[str, int] | None = None,
                   slices: pd.DataFrame | None = None) -> dict[str, Any]:
    """Fit the ladder's laws on the stored sizes (those below the targets, or every other one: `scope`) and
    predict the targets' losses.

    `table` is a `runs_table(..., budgets=True)` of a tuned grid; `targets` are the configs of the
    runs to be predicted (every rate and seed planned at those sizes). Refuses when any target is
    stored already, or when the name is taken.

    `scope` says where the targets sit against the stored sizes (`SCOPES`, filed as the record's "scope"):
    "larger" than all of them (the laws fitted on the sizes below the smallest target), "between" two of them, or
    "smaller" than all of them. For new sizes "between" or "smaller", the laws are fitted on every stored size
    other than theirs; and with `levels` (as for `predict_longer`), where the IsoFLOP vertices move once the new
    sizes join the slices, by Kaplan's joint law (`NEW_SIZE_LEVELS_LAW`: no target has a size's own L(D)), the
    slices cut from `slices` (default `table`; the chapter's slices also hold the long runs, which the fits leave
    out).
    """
    if scope not in SCOPES:
        raise PredictionError(f"scope must be one of {SCOPES}, not {scope!r}")
    store = store or Store()
    targets, out = _unclaimed(name, targets, store)
    target_N = sorted({c.N for c in targets})
    src = tuning.at_best_rate(_sources(table, target_N, scope))
    if src["N"].nunique() < 3:
        raise PredictionError(f"{src['N'].nunique()} size(s) to fit on are stored for the {scope} sizes from "
                              f"N = {min(target_N):,}: a prediction needs at least 3")
    versions = sorted(table["eval_version"].unique())
    longest = int(src["tokens"].max())
    # the budgets as trained (steps x tokens a step), the same for the targets: they follow the same recipe
    budgets = sorted(int(b) for b in src["tokens"].unique())
    planned = {len(c.budgets) + 1 for c in targets}
    if planned != {len(budgets)}:
        raise PredictionError(f"the targets plan {sorted(planned)} budget(s), the stored sizes have {len(budgets)}")
    fits, rows = [], {(N, b): dict(N=int(N), tokens=b, predicted={}, ci={}) for N in target_N for b in budgets}
    for form, on in FITS:
        pts = src[src["tokens"] == longest] if on == "longest budget" else src
        x2 = None if form == "power" else pts["tokens"]
        res = fit.fit(form, pts["N"], pts["final_val_loss"], x2=x2, bootstrap=bootstrap, seed=seed,
                      groups=pts["N"], within=pts["seed"])
        fits.append(dict(on=on, **res.to_dict()))
        at = [(N, b) for (N, b) in rows if on != "longest budget" or b == longest]
        Ns = np.array([N for N, _ in at], float)
        Ds = np.array([b for _, b in at], float)
        pred = res.predict(Ns, None if form == "power" else Ds)
        lo, hi = res.predict_interval(Ns, None if form == "power" else Ds)
        for i, k in enumerate(at):
            rows[k]["predicted"][form] = float(pred[i])
            rows[k]["ci"][form] = [_finite(lo[i]), _finite(hi[i])]
    for (N, b), row in rows.items():
        row["keys"] = sorted(c.key for c in targets if c.N == N)
    record = _record(
        name, commit, quantity=QUANTITY.format(eval_version=", ".join(map(str, versions))),
        sweep=targets[0].sweep, bootstrap=dict(resamples=bootstrap, seed=seed, resampling="sizes, then seeds within"),
        sources=sorted(src["key"].unique()), source_sizes=sorted(int(n) for n in src["N"].unique()),
        source_budgets=sorted(int(b) for b in src["tokens"].unique()), fits=fits,
        targets=[rows[k] for k in sorted(rows)],
    )
    if scope != "larger":
        record["scope"] = scope
        if levels is not None:
            cut = table if slices is None else slices
            record["levels"] = predict_levels(cut[~cut["N"].isin(target_N)], record, law=NEW_SIZE_LEVELS_LAW,
                                              **levels)
    elif levels is not None:
        raise PredictionError("levels are filed with a prediction of new sizes between or below the stored ones, "
                              "or of longer runs")
    if save:
        write_json(out, record)
    return record


# a warmup prediction's band (`predict_warmup`), fixed before its run: the small sizes' warmup runs moved their loss
# at 1M tokens and beyond by up to 2.3% against their twins (3,072's at 1M), and by at most 0.4% from 4M on; a
# band of one point keeps the two hypotheses apart where the fixed-rule gap is large (3% at 1M and 2M at 786k)
WARMUP_BAND = 0.01
WARMUP_LAW = "fixed-ladder gap"


def predict_warmup(name: str, gaps: pd.DataFrame, targets: Sequence[RunConfig], twins: Sequence[RunConfig], *,
                   store: Store | None = None, commit: str | None = None, band: float = WARMUP_BAND,
                   save: bool = True) -> dict[str, Any]:
    """Predict that a longer warmup closes the gap between the two ladders at one size: that a run of the warmup
    sweep, budget by budget, sits against its twin in the tuned grid (`twins`, one per target: the same config
    with the grid's warmup) where the fixed-rule ladder's run of nearly the same rate sits. `gaps` is that
    size's rows of `ladder.same_rate_gaps` (gap = loss_grid / loss_fixed − 1); at each of its budgets the
    predicted ratio, loss / twin's loss − 1, is 1 / (1 + gap) − 1, within ± `band`. Filed with scope "warmup"
    under the targets' sweep, so that the ladder chapters, which read the tuned sweep's predictions, pass it by.
    """
    store = store or Store()
    targets, out = _unclaimed(name, targets, store)
    twins = list(twins)
    if len(twins) != len(targets) or any(t.N != w.N for t, w in zip(targets, twins)):
        raise PredictionError("each target needs its twin, a config of the same size")
    sizes = set(gaps["N"].astype(int)) if len(gaps) else set()
    if sizes != {c.N for c in targets}:
        raise PredictionError(f"the gaps hold sizes {sorted(sizes)} and the targets {sorted({c.N for c in targets})}: "
                              "a warmup prediction is made for one size from that size's gaps")
    missing = [w for w in twins if not store.has(w)]
    if missing:
        raise PredictionError(f"the twin {missing[0].name} is not stored: a warmup run is predicted against its twin")
    rows = []
    for g in gaps.sort_values("tokens").itertuples():
        ratio = 1 / (1 + g.gap) - 1
        rows.append(dict(N=int(g.N), tokens=int(g.tokens), predicted={WARMUP_LAW: float(ratio)},
                         ci={WARMUP_LAW: [float(ratio - band), float(ratio + band)]},
                         keys=sorted(c.key for c in targets), twin_keys=sorted(w.key for w in twins),
                         basis=dict(lr_fixed=float(g.lr_fixed), lr_grid=float(g.lr_grid),
                                    loss_fixed=float(g.loss_fixed), loss_grid=float(g.loss_grid),
                                    **({"grid_seed_spread": float(g.spread)} if "spread" in gaps else {}))))
    record = _record(name, commit, scope="warmup",
                     quantity="validation loss at the budget of the warmup run over its tuned-grid twin's, minus one",
                     sweep=targets[0].sweep, band=band,
                     warmup_tokens=sorted({c.warmup_tokens for c in targets}),
                     twin_warmup_tokens=sorted({w.warmup_tokens for w in twins}), targets=rows)
    if save:
        write_json(out, record)
    return record


def score_twins(prediction: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """A prediction of a run against its twin (`predict_warmup`, `predict_seeds`) beside its measurement: per
    target row, the run's loss over its twin's, minus one, from `table` (a `runs_table(..., budgets=True)` holding
    both runs; NaN until both are stored). Columns: N, tokens, predicted, lo, hi, measured, inside, and seed
    where the prediction has one per row."""
    rows = []
    for t in prediction["targets"]:
        at = table[np.isclose(table["tokens"], t["tokens"])] if len(table) else table
        mine = at[at["key"].isin(t["keys"])]["final_val_loss"].mean() if len(at) else float("nan")
        twin = at[at["key"].isin(t["twin_keys"])]["final_val_loss"].mean() if len(at) else float("nan")
        measured = mine / twin - 1
        (value,), ((lo, hi),) = t["predicted"].values(), t["ci"].values()
        rows.append(dict(N=t["N"], tokens=t["tokens"], predicted=value, lo=lo, hi=hi, measured=measured,
                         inside=bool(lo <= measured <= hi) if np.isfinite(measured) else None,
                         **({"seed": t["seed"]} if "seed" in t else {})))
    return pd.DataFrame(rows)


def warmup_summary(prediction: dict[str, Any], table: pd.DataFrame) -> str:
    """One or two sentences on a warmup prediction (`predict_warmup`): what it predicts and, once its run is
    stored, the measured ratios beside the predicted ones and how many fall in the band."""
    sc = score_twins(prediction, table)
    points = prediction["band"] * 100
    head = (f"A repeat of the tuned run warmed up over {', '.join(f'{w:,}' for w in prediction['warmup_tokens'])} "
            "tokens, the same config otherwise, was predicted before it was trained to sit against the tuned run "
            f"where the fixed-rule run does, within ±{points:g} percentage {_number(points, 'point', 'points')} "
            f"(runs/predictions/{prediction['name']}.json)")
    done = sc.dropna(subset=["inside"])
    if done.empty:
        return head + "; it is not stored yet."
    inside = int(done["inside"].sum())
    return (head + ": it is " + ", ".join(f"{m:+.1%} (predicted {p:+.1%}) at {budget_name(t)}" for t, m, p in
                                          zip(done["tokens"], done["measured"], done["predicted"]))
            + f", inside the band at {inside} of {len(done)} budgets.")


def warmup_reading(prediction: dict[str, Any], table: pd.DataFrame, tuned_warmup: int) -> str:
    """What a warmup prediction (`predict_warmup`) says about the two arms once it has held at every budget it
    predicts: that the warmup, not the rate, accounts for the gap, and what the longer warmup gains at the
    shortest and the longest of them. `tuned_warmup`: the warmup, in tokens, of every tuned size above it.
    Empty while a budget is unmeasured or outside its band."""
    sc = score_twins(prediction, table)
    if sc.empty or sc["inside"].isna().any() or not sc["inside"].all():
        return ""
    first, last = sc.iloc[0], sc.iloc[-1]
    return (f" So at this size the warmup, not the rate, accounts for the gap between the arms. Every tuned size "
            f"above {tuned_warmup:,} parameters warms up over {tuned_warmup:,} tokens, so its losses at short "
            f"budgets carry such a cost (here the longer warmup moves the loss by {first['measured'] + 0.0:+.1%} at "
            f"{budget_name(first['tokens'])} tokens and by {last['measured'] + 0.0:+.1%} at {budget_name(last['tokens'])}), "
            "and the tuned ladder's fits read those losses as they are; it is measured at this size alone, on one "
            "seed, so the paired difference's own noise is not measured.")


SEEDS_BAND = 0.01
SEEDS_LAW = "shared seed effect"


def predict_seeds(name: str, table: pd.DataFrame, targets: Sequence[RunConfig], *, store: Store | None = None,
                  commit: str | None = None, band: float = SEEDS_BAND, save: bool = True) -> dict[str, Any]:
    """Predict that a seed moves a tuned grid's runner-up rate as it moved the best rate: that each target, a run
    of the runner-up at seed s (`plans._runner_up_seeds`), sits against the runner-up's run on the grid's seed
    (its twin), budget by budget, where the best rate's run at seed s sits against the best's on the grid's seed,
    within ± `band`. That holds if a seed's initialisation and data order move every rate alike, so that the
    grid's seed compares the rates paired; the null, a seed effect of its own at each rate, puts the ratio at 0
    give or take the seed noise. `table`: the tuned grid's `runs_table(..., budgets=True)`; the best rate is the
    one other rate at the target's size with a run at its seed. Filed with scope "seeds"."""
    store = store or Store()
    targets, out = _unclaimed(name, targets, store)
    grid_seed = int(table["seed"].min())
    rows = []
    for c in sorted(targets, key=lambda c: (c.N, c.seed)):
        at_N = table[table["N"] == c.N]
        seeded = sorted({float(lr) for lr in at_N.loc[at_N["seed"] == c.seed, "lr"] if not np.isclose(lr, c.lr)})
        if len(seeded) != 1:
            raise PredictionError(f"{c.name}: a seed prediction reads the one other rate with a run at seed {c.seed} "
                                  f"at N = {c.N:,}; found {len(seeded)}")
        best, twin = seeded[0], c.replace(seed=grid_seed)
        if not store.has(twin):
            raise PredictionError(f"the twin {twin.name} is not stored: a seed run is predicted against its twin")
        for tokens, at in at_N.groupby("tokens"):
            def loss(lr, seed):
                v = at.loc[np.isclose(at["lr"], lr) & (at["seed"] == seed), "final_val_loss"]
                return float(v.mean()) if len(v) else math.nan
            basis = dict(lr_best=best, loss_best_seed=loss(best, c.seed), loss_best_grid_seed=loss(best, grid_seed),
                         loss_twin=loss(c.lr, grid_seed))
            if not all(np.isfinite(v) for v in basis.values()):
                continue
            ratio = basis["loss_best_seed"] / basis["loss_best_grid_seed"] - 1
            rows.append(dict(N=int(c.N), tokens=int(tokens), seed=int(c.seed), lr=float(c.lr),
                             predicted={SEEDS_LAW: float(ratio)}, ci={SEEDS_LAW: [float(ratio - band), float(ratio + band)]},
                             keys=[c.key], twin_keys=[twin.key], basis=basis))
    if not rows:
        raise PredictionError("no budget where the best rate's seeds and the twin are all stored")
    record = _record(name, commit, scope="seeds",
                     quantity="validation loss at the budget of the run at seed s over its twin's on the grid's seed, "
                              "minus one", sweep=targets[0].sweep, band=band, grid_seed=grid_seed, targets=rows)
    if save:
        write_json(out, record)
    return record


def seeds_summary(prediction: dict[str, Any], table: pd.DataFrame) -> str:
    """One or two sentences on a seed prediction (`predict_seeds`): what it predicts and, once its runs are stored,
    at how many (seed, budget) points it and the null (no shared seed effect: 0) fall in the band, with the
    longest budget's ratios."""
    sc = score_twins(prediction, table)
    t0 = prediction["targets"][0]
    points = prediction["band"] * 100
    head = (f"Seeds {' and '.join(str(s) for s in sorted(sc['seed'].unique()))} of {t0['lr']:g} at N = {t0['N']:,} "
            f"were predicted before they were trained to sit against its run on the grid's seed where "
            f"{t0['basis']['lr_best']:g}'s seeds sit against its own, within ±{points:g} percentage "
            f"{_number(points, 'point', 'points')} (runs/predictions/{prediction['name']}.json)")
    done = sc.dropna(subset=["inside"])
    if done.empty:
        return head + "; they are not stored yet."
    lo, hi = done["lo"] - done["predicted"], done["hi"] - done["predicted"]
    null = int(((lo <= done["measured"]) & (done["measured"] <= hi)).sum())
    last = done[done["tokens"] == done["tokens"].max()]
    return (head + f": it is inside the band at {int(done['inside'].sum())} of {len(done)} (seed, budget) points, "
            f"the null (0) at {null}. At {budget_name(last['tokens'].iloc[0])}: "
            + ", ".join(f"seed {s} {m:+.2%} (predicted {p:+.2%})" for s, m, p in
                        zip(last["seed"], last["measured"], last["predicted"])) + ".")


def score(prediction: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """Each predicted (law, N, budget) beside its measurement, where the runs exist.

    Columns: law, N, tokens, predicted, lo, hi, measured (mean over seeds at the grid's best rate,
    NaN where not trained yet), seeds, error (predicted / measured - 1), inside (the measurement in
    the predicted interval; None where either is missing).
    """
    best = tuning.at_best_rate(table) if not table.empty else table
    rows = []
    for t in prediction["targets"]:
        g = best[(best["N"] == t["N"]) & (best["tokens"] == t["tokens"])] if not best.empty else best
        measured = float(g["final_val_loss"].mean()) if len(g) else float("nan")
        for law, value in t["predicted"].items():
            lo, hi = t["ci"][law]
            inside = None if lo is None or hi is None or not np.isfinite(measured) else bool(lo <= measured <= hi)
            rows.append(dict(law=law, N=t["N"], tokens=t["tokens"], predicted=value, lo=lo, hi=hi,
                             measured=measured, seeds=int(g["seed"].nunique()) if len(g) else 0,
                             error=value / measured - 1 if np.isfinite(measured) else float("nan"), inside=inside))
    return pd.DataFrame(rows)


def summary(prediction: dict[str, Any], table: pd.DataFrame) -> str:
    """One sentence on how a filed prediction scored against `table` (`score`, and `score_levels` where it
    files levels): per law, how many of its scored losses fell inside their intervals and the largest
    error; and how many of the levels predicted to change their sizes have the measured vertex inside its
    predicted range, and off the edge where predicted off. Empty while none of its runs is stored."""
    sc = score(prediction, table).dropna(subset=["measured"])
    if sc.empty:
        return ""
    laws = []
    for law, g in sc.groupby("law", sort=False):
        ok = g["inside"].dropna()
        laws.append(f"{law} {int(ok.sum())} of {len(ok)} inside (errors up to {g['error'].abs().max():.1%})")
    total = len(prediction["targets"])
    text = f"{sc.groupby(['N', 'tokens']).ngroups} of its {total} losses measured: " + "; ".join(laws) + "."
    if prediction.get("levels"):
        lv = score_levels(prediction, table)
        lv = lv[lv["moved"] & lv["edge_measured"].notna()]  # measured once every target is stored
        # a level whose parabola has no minimum inside (as predicted or as measured) has no vertex to score
        vertexless = int((lv["N_opt"].isna() | lv["N_opt_measured"].isna()).sum())
        lv = lv[lv["N_opt"].notna() & lv["N_opt_measured"].notna()]
        ranged = lv[lv["inside"].notna()]  # a level has no range where a target's interval is missing
        if len(lv):
            inside = int(ranged["inside"].sum())
            off = lv[~lv["edge"].astype(bool)]
            k = int((~off["edge_measured"].astype(bool)).sum())
            runs = "new sizes" if scope(prediction) in NEW_SIZES else "long runs"
            text += (f" Of the {counted(len(lv), 'level')} whose sizes the {runs} change, "
                     + (f"{inside} {_number(inside, 'has its', 'have their')} measured vertex inside the predicted "
                        "range" if len(ranged) == len(lv)
                        else f"{len(ranged)} {_number(len(ranged), 'has', 'have')} a predicted range and {inside} "
                             f"{_number(inside, 'its', 'their')} measured vertex inside it")
                     + f"; of the {len(off)} predicted off the edge, {k} {_number(k, 'is', 'are')} off it"
                     + (f" ({vertexless} more without a vertex, predicted or measured)." if vertexless else "."))
    return text


def _number(n: int, one: str, many: str) -> str:
    """The words that agree with a count: `one` for 1, else `many`."""
    return one if n == 1 else many


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def targets_of(cfgs: Iterable[RunConfig], min_N: float) -> list[RunConfig]:
    """The planned configs at sizes from `min_N` up: the runs a ladder prediction is about."""
    return [c for c in cfgs if c.N >= min_N]


# ---------------------------------------------------------------------------------------------
# Longer runs at stored sizes: the loss past the grid's longest budget, and the IsoFLOP vertices it moves
# ---------------------------------------------------------------------------------------------
# each size's own L(D) = E + A / D^alpha (fit form "power-offset" in D), on its budgets from MIN_TOKENS up: the
# 0.25M branch is mostly warmup and its early fall, which the form does not follow (on the stored tuned ladder the
# fits from 0.5M extrapolate 4x to within -4.1% to +1.4%, those from 0.25M within -8.4% to +0.6%: a choice made on
# that backtest, before any longer run exists)
MIN_TOKENS = 500_000
PER_SIZE = "power-offset"
LONGER_JOINT = ("kaplan-nd", "chinchilla")
LONGER_QUANTITY = ("validation loss at the budget of a run trained past the grid's longest budget at the rate best "
                   "there (seed 0); at_best_rate of the table, evaluation version {eval_version}")


def _size_fit(pts: pd.DataFrame, min_tokens: float) -> fit.FitResult:
    use = pts[pts["tokens"] >= 0.99 * min_tokens]  # a budget trains whole steps: 0.5M is 499,712 tokens
    return fit.fit(PER_SIZE, use["tokens"], use["final_val_loss"])


def _cut(budgets: Sequence[int], longest: int, ratio: float) -> int | None:
    """The longest stored budget at most longest/ratio (budgets are whole steps, so within 0.1%)."""
    fit_to = [b for b in budgets if b <= longest / ratio * 1.001]
    return max(fit_to) if fit_to else None


def backtest_longer(table: pd.DataFrame, ratio: float, *, min_tokens: float = MIN_TOKENS,
                    joint: Sequence[str] = LONGER_JOINT) -> pd.DataFrame:
    """How well each law predicts a budget `ratio` times past the last one it is fitted on, on the stored runs:
    every size's longest budget predicted from its budgets up to longest/ratio (each size's own L(D) from
    `min_tokens` up; the joint laws on every size's budgets up to there). Columns: law, N, fit_to, tokens,
    predicted, measured, error (predicted / measured - 1). A size with fewer budgets than its law needs is left
    out."""
    pts = tuning.mean_at_best_rate(table)
    rows = []
    for N, g in pts.groupby("N"):
        longest = int(g["tokens"].max())
        cut = _cut(sorted(g["tokens"]), longest, ratio)
        if cut is None:
            continue
        src = g[g["tokens"] <= cut]
        try:
            res = _size_fit(src, min_tokens)
        except fit.FitError:
            continue
        measured = float(g.loc[g["tokens"] == longest, "final_val_loss"].iloc[0])
        pred = float(res.predict(np.array([longest], float))[0])
        rows.append(dict(law=PER_SIZE, N=int(N), fit_to=cut, tokens=longest, predicted=pred, measured=measured))
    best = tuning.at_best_rate(table)
    longest = int(best["tokens"].max())
    cut = _cut(sorted(best["tokens"].unique()), longest, ratio)
    for form in joint if cut is not None else ():
        src = best[best["tokens"] <= cut]
        try:
            res = fit.fit(form, src["N"], src["final_val_loss"], x2=src["tokens"])
        except fit.FitError:
            continue
        at = pts[pts["tokens"] == longest]
        pred = res.predict(at["N"].to_numpy(float), at["tokens"].to_numpy(float))
        rows += [dict(law=form, N=int(N), fit_to=cut, tokens=longest, predicted=float(p), measured=float(m))
                 for N, p, m in zip(at["N"], pred, at["final_val_loss"])]
    out = pd.DataFrame(rows, columns=["law", "N", "fit_to", "tokens", "predicted", "measured"])
    out["error"] = out["predicted"] / out["measured"] - 1
    return out


def predict_longer(name: str, table: pd.DataFrame, targets: Sequence[RunConfig], *, store: Store | None = None,
                   bootstrap: int = 200, seed: int = 0, commit: str | None = None, save: bool = True,
                   min_tokens: float = MIN_TOKENS, joint: Sequence[str] = LONGER_JOINT,
                   levels: dict[str, int] | None = None) -> dict[str, Any]:
    """Predict the loss of runs that go on past the grid's longest budget at sizes the grid has trained (the
    tuned ladder's long runs), at each of their budgets past it, and file it as `predict_ladder` does.

    Laws: each target size's own L(D) = E + A/D^alpha on its budgets from `min_tokens` up (mean over the seeds at
    the best rate), and the joint laws of `joint` fitted on every stored size and budget. The per-size law's
    interval is calibrated on the stored runs (`backtest_longer` at the same ratio of budgets: the range of the
    relative errors over the stored sizes, so a measurement inside it errs no more than the backtest did); the
    joint laws' intervals are their hierarchical bootstrap's (sizes, then seeds), and their backtest is
    recorded beside them. With `levels` (the slicing: per_decade, min_sizes), where the IsoFLOP vertices move
    (`predict_levels`) is filed with it. Refuses when any target is stored already, when its size has no stored
    budgets, or when the name is taken. The record's `scope` is "longer" (a ladder prediction's, "larger").
    """
    store = store or Store()
    targets, out = _unclaimed(name, targets, store)
    pts = tuning.mean_at_best_rate(table)
    best = tuning.at_best_rate(table)
    have = set(pts["N"].astype(int))
    lacking = sorted({c.N for c in targets} - have)
    if lacking:
        raise PredictionError(f"no stored budgets at N = {', '.join(f'{n:,}' for n in lacking)}: a longer run is "
                              "predicted from its own size's grid")
    versions = sorted(table["eval_version"].unique())
    # the budgets as they will be trained: whole steps of the targets' batch
    planned = {(c.N, (b // c.tokens_per_step) * c.tokens_per_step, c.key) for c in targets for b in c.all_budgets}
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for N, b, key in sorted(planned):
        longest = int(pts.loc[pts["N"] == N, "tokens"].max())
        if b > longest * 1.001:
            row = rows.setdefault((N, b), dict(N=int(N), tokens=int(b), ratio=b / longest, predicted={}, ci={},
                                               keys=[]))
            row["keys"] = sorted({*row["keys"], key})
    if not rows:
        raise PredictionError("no target budget lies past its size's longest stored budget")
    fits, backtests = [], {}
    ratios = sorted({round(r["ratio"], 3) for r in rows.values()})
    for ratio in ratios:
        bt = backtest_longer(table, ratio, min_tokens=min_tokens, joint=joint)
        backtests[ratio] = bt
    for N in sorted({N for N, _ in rows}):
        res = _size_fit(pts[pts["N"] == N], min_tokens)
        fits.append(dict(on=f"N = {N:,}: its budgets from {min_tokens:,.0f} tokens", **res.to_dict()))
        for (n, b), row in rows.items():
            if n != N:
                continue
            pred = float(res.predict(np.array([b], float))[0])
            err = backtests[round(row["ratio"], 3)]
            err = err.loc[err["law"] == PER_SIZE, "error"].to_numpy(float)
            row["predicted"][PER_SIZE] = pred
            row["ci"][PER_SIZE] = ([pred / (1 + err.max()), pred / (1 + err.min())] if len(err) >= 2
                                   else [None, None])
    for form in joint:
        res = fit.fit(form, best["N"], best["final_val_loss"], x2=best["tokens"], bootstrap=bootstrap, seed=seed,
                      groups=best["N"], within=best["seed"])
        fits.append(dict(on="every size and budget", **res.to_dict()))
        keys = sorted(rows)
        Ns, Ds = np.array([k[0] for k in keys], float), np.array([k[1] for k in keys], float)
        pred, (lo, hi) = res.predict(Ns, Ds), res.predict_interval(Ns, Ds)
        for i, k in enumerate(keys):
            rows[k]["predicted"][form] = float(pred[i])
            rows[k]["ci"][form] = [_finite(lo[i]), _finite(hi[i])]
    record = _record(
        name, commit, quantity=LONGER_QUANTITY.format(eval_version=", ".join(map(str, versions))),
        sweep=targets[0].sweep, scope="longer",
        method=(f"{PER_SIZE}: each size's own L(D) = E + A/D^alpha on its budgets from {min_tokens:,.0f} tokens, "
                "interval = the range of the relative errors of the same fit on the stored runs, each size's longest "
                "budget predicted from its budgets up to that budget over the same ratio (`backtest`); "
                f"{', '.join(joint)}: fitted on every stored size and budget, 95% bootstrap intervals"),
        bootstrap=dict(resamples=bootstrap, seed=seed, resampling="sizes, then seeds within (the joint laws)"),
        sources=sorted(best["key"].unique()), source_sizes=sorted(int(n) for n in pts["N"].unique()),
        source_budgets=sorted(int(b) for b in pts["tokens"].unique()), fits=fits,
        backtest={f"{r:g}": _records(bt) for r, bt in backtests.items()},
        targets=[{k: v for k, v in rows[k].items()} for k in sorted(rows)],
    )
    if levels is not None:
        record["levels"] = predict_levels(table, record, **levels)
    if save:
        write_json(out, record)
    return record


def scope(prediction: dict[str, Any]) -> str:
    """What a prediction is about: new sizes "larger" than the stored ones, "between" them or "smaller" than them
    (`predict_ladder`), "longer" runs at stored sizes (`predict_longer`), a "warmup" run against its twin
    (`predict_warmup`), or a runner-up's "seeds" against its run on the grid's seed (`predict_seeds`)."""
    return prediction.get("scope", "larger")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (int(v) if isinstance(v, (np.integer,)) else float(v) if isinstance(v, (float, np.floating)) else v)
             for k, v in r.items()} for r in df.to_dict("records")]


def slice_points(table: pd.DataFrame) -> pd.DataFrame:
    """The points the Kaplan-or-Chinchilla chapter cuts its IsoFLOP slices from: the runs at each (N, tokens)'s
    best rate, seed 0, with C = 6ND (Kaplan's counting, N without embeddings). Columns N, tokens, C, L, key."""
    best = tuning.at_best_rate(table)
    best = best[best["seed"] == 0]
    return pd.DataFrame({"N": best["N"].astype(float), "tokens": best["tokens"].astype(float),
                         "C": 6.0 * best["N"] * best["tokens"], "L": best["final_val_loss"].astype(float),
                         "key": best["key"]}).reset_index(drop=True)


def _coverage(pts: pd.DataFrame, per_decade: int, min_sizes: int) -> pd.DataFrame:
    from .allocation import slice_coverage

    return slice_coverage(pts["C"], pts["N"], pts["L"], pts["tokens"], runs=pts["N"], per_decade=per_decade,
                          min_sizes=min_sizes)


def predict_levels(table: pd.DataFrame, prediction: dict[str, Any], *, law: str = PER_SIZE, per_decade: int = 3,
                   min_sizes: int = 3) -> dict[str, Any]:
    """Where each compute level's IsoFLOP vertex goes once the predicted runs join the slices.

    The slices are the chapter's (`slice_points`: seed 0 at the best rate, Kaplan's counting; `per_decade`
    levels a decade, `min_sizes` sizes a level), cut from the stored runs and from the targets' predicted losses
    by `law`. Each level's vertex is given now and with the predicted points; its range is the vertex's over every
    corner of the targets' intervals (each target size at the low or the high end of its interval at all of its
    budgets), and `edge_corners` counts the corners that leave it at an edge. A level the targets do not reach
    keeps its vertex. Returns the settings and one row a level, JSON-ready.
    """
    import itertools

    now_pts = slice_points(table)
    tgt = pd.DataFrame([dict(N=float(t["N"]), tokens=float(t["tokens"]), L=t["predicted"][law],
                             lo=t["ci"][law][0], hi=t["ci"][law][1]) for t in prediction["targets"]])
    tgt["C"] = 6.0 * tgt["N"] * tgt["tokens"]
    now = _coverage(now_pts, per_decade, min_sizes).set_index("C")
    central = _coverage(pd.concat([now_pts, tgt[["N", "tokens", "C", "L"]]], ignore_index=True), per_decade,
                        min_sizes).set_index("C")
    sizes = sorted(tgt["N"].unique())
    corners = []
    bounded = tgt["lo"].notna().all() and tgt["hi"].notna().all()
    for ends in itertools.product(("lo", "hi"), repeat=len(sizes)) if bounded else ():
        pick = dict(zip(sizes, ends))
        pts = tgt.assign(L=[r[pick[r["N"]]] for _, r in tgt.iterrows()])
        corners.append(_coverage(pd.concat([now_pts, pts[["N", "tokens", "C", "L"]]], ignore_index=True),
                                 per_decade, min_sizes).set_index("C"))
    rows = []
    for c in sorted(set(now.index) | set(central.index)):
        r0 = now.loc[c] if c in now.index else None
        r1 = central.loc[c]
        at = [k.loc[c] for k in corners if c in k.index]
        n_opt = [float(k["N_opt"]) for k in at]
        rows.append(dict(
            C=float(c), sizes_now=list(r0["sizes"]) if r0 is not None else [], N_opt_now=_opt(r0, "N_opt"),
            edge_now=bool(r0["edge"]) if r0 is not None else None, side_now=r0["side"] if r0 is not None else None,
            sizes=list(r1["sizes"]), N_opt=float(r1["N_opt"]), below=int(r1["below"]), above=int(r1["above"]),
            edge=bool(r1["edge"]), side=r1["side"], cause=r1["cause"],
            N_opt_lo=min(n_opt) if n_opt else None, N_opt_hi=max(n_opt) if n_opt else None,
            edge_corners=sum(bool(k["edge"]) for k in at), corners=len(at)))
    return dict(law=law, per_decade=per_decade, min_sizes=min_sizes, counting="N without embeddings, C = 6ND",
                points="seed 0 at each (N, tokens)'s best rate", sources=sorted(now_pts["key"].unique()),
                rows=rows)


def _opt(row, col) -> float | None:
    return None if row is None else _finite(float(row[col]))


def _as_predicted(prediction: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """The rows of `table` a longer prediction's levels are scored on: the grid as it stood when the prediction
    was made, and its targets at the budgets it predicted.

    The grid as it stood: the runs finished by `made_at` (a run without the time counts as earlier), less every
    run trained past the grid's longest budget that the levels were not cut from (`levels["sources"]`: a
    prediction between sizes cuts its slices from the long runs too). The best rate at each (N, tokens) averages the seeds
    (`tuning.best_rates`), so a seed stored later, or one left out, could move a vertex the targets never reach.
    Of the targets, only the budgets predicted are read: their branches at the grid's budgets were not predicted.
    Sizes outside the prediction's `source_sizes` (which a `--source-max-n` may have narrowed) are left out, but
    for the new sizes a prediction between sizes is about: their whole grid up to the longest budget is read,
    every rate and seed it came to hold, as the chapter reads it (a grid grows past a winning edge after the
    prediction, and the prediction is of the tuned size, not of the rates it happened to list).
    """
    if table.empty:
        return table
    longest = max(prediction["source_budgets"])
    long_keys = set(table.loc[table["tokens"] > longest, "key"]) - set(prediction.get("levels", {}).get("sources", ()))
    made = pd.Timestamp(prediction["made_at"])
    then = ~table["key"].isin(long_keys) & table["N"].isin(prediction["source_sizes"])
    new_sizes = {t["N"] for t in prediction["targets"]} - set(prediction["source_sizes"])
    grown = (table["N"].isin(new_sizes) & (table["tokens"] <= longest * 1.001)).to_numpy()
    if "finished" in table:
        finished = pd.to_datetime(table["finished"], utc=True, format="ISO8601")
        then &= finished.isna() | (finished <= made)
    predicted = {(k, round(float(t["tokens"]))) for t in prediction["targets"] for k in t["keys"]}
    at_target = np.array([(k, round(float(d))) in predicted for k, d in zip(table["key"], table["tokens"])], bool)
    return table[then.to_numpy() | at_target | grown]


def score_levels(prediction: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """The predicted vertices beside those measured on the slices cut as the prediction cut them (`_as_predicted`),
    once every target is stored; before, the measured columns are NaN and None: the table the prediction saw,
    with its targets' points at the budgets it predicted. Columns: C, N_opt_now, N_opt (predicted), N_opt_lo,
    N_opt_hi, edge (predicted), N_opt_measured, edge_measured, inside (the measured vertex within the predicted
    range; None without both), moved (the prediction has its runs change the level's sizes)."""
    lv = prediction.get("levels")
    if not lv:
        raise PredictionError(f"prediction {prediction.get('name')!r} files no levels")
    targets = {k for t in prediction["targets"] for k in t["keys"]}
    landed = len(table) > 0 and targets <= set(table["key"])
    pts = slice_points(_as_predicted(prediction, table)) if landed else pd.DataFrame()
    got = _coverage(pts, lv["per_decade"], lv["min_sizes"]).set_index("C") if len(pts) else pd.DataFrame()
    rows = []
    for r in lv["rows"]:
        m = got.loc[r["C"]] if len(got) and r["C"] in got.index else None
        n = float(m["N_opt"]) if m is not None else float("nan")
        inside = (None if m is None or r["N_opt_lo"] is None or not np.isfinite(n)
                  else bool(r["N_opt_lo"] <= n <= r["N_opt_hi"]))
        rows.append(dict(C=r["C"], N_opt_now=r["N_opt_now"], N_opt=r["N_opt"], N_opt_lo=r["N_opt_lo"],
                         N_opt_hi=r["N_opt_hi"], edge=r["edge"], N_opt_measured=n,
                         edge_measured=bool(m["edge"]) if m is not None else None, inside=inside,
                         moved=r["sizes"] != r["sizes_now"]))
    return pd.DataFrame(rows)
