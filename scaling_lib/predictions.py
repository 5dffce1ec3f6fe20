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
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import fit, tuning
from .config import RunConfig
from .store import Store, write_json

FOLDER = "predictions"
QUANTITY = ("validation loss at the budget, mean over the seeds at the grid's best rate for that (N, budget); "
            "evaluation version {eval_version}")
# the laws a ladder prediction is made with: L(N) at the longest budget, and the two joint laws on every budget
FITS = (("power", "longest budget"), ("kaplan-nd", "every budget"), ("chinchilla", "every budget"))


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


def predict_ladder(name: str, table: pd.DataFrame, targets: Sequence[RunConfig], *, store: Store | None = None,
                   bootstrap: int = 200, seed: int = 0, commit: str | None = None, save: bool = True) -> dict[str, Any]:
    """Fit the ladder's laws on the stored sizes below the targets and predict the targets' losses.

    `table` is a `runs_table(..., budgets=True)` of a tuned grid; `targets` are the configs of the
    runs to be predicted (every rate and seed planned at those sizes). Refuses when any target is
    stored already, or when the name is taken.
    """
    store = store or Store()
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
    target_N = sorted({c.N for c in targets})
    src = tuning.at_best_rate(table[table["N"] < min(target_N)])
    if src["N"].nunique() < 3:
        raise PredictionError(f"{src['N'].nunique()} size(s) below N = {min(target_N):,} are stored: "
                              "a prediction needs at least 3")
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
    record = dict(
        kind="prediction", name=name, made_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        commit=commit, quantity=QUANTITY.format(eval_version=", ".join(map(str, versions))),
        sweep=targets[0].sweep, bootstrap=dict(resamples=bootstrap, seed=seed, resampling="sizes, then seeds within"),
        sources=sorted(src["key"].unique()), source_sizes=sorted(int(n) for n in src["N"].unique()),
        source_budgets=sorted(int(b) for b in src["tokens"].unique()), fits=fits,
        targets=[rows[k] for k in sorted(rows)],
    )
    if save:
        write_json(out, record)
    return record


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


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def targets_of(cfgs: Iterable[RunConfig], min_N: float) -> list[RunConfig]:
    """The planned configs at sizes from `min_N` up: the runs a ladder prediction is about."""
    return [c for c in cfgs if c.N >= min_N]
