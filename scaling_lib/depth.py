"""Depth at a fixed size: what a layer costs in time, and what it buys in loss.

The depth-versus-latency rebuttal (Petty et al. 2024, `shared/seeds/000`) holds the parameter count
fixed, varies the depth, and finds that latency grows linearly with depth while the loss stops
improving after a few layers. The chapter "Depth costs time" repeats both halves on this machine:

- **time**: `bench --depths L,... --fixed-n N --save` times the training step and token generation
  of each depth (`bench.depth_latency`, medians over repeats) and files the result under
  `<runs>/latency/` (`save_latency`); `load_latency` reads them back, `latency_table` and
  `fit_table` flatten the timings and their linear fits in depth for a chapter;
- **loss**: the `depth` sweep trains every depth with several seeds; `by_depth` summarises the seeds
  of each (size, depth), and `first_within` finds the shallowest depth whose mean loss is within a
  tolerance of the best depth's (the rebuttal's "within 1%"), with a bootstrap over seeds that says
  how sure that choice is; `loss_trend` says in words how the loss moves with depth at one size
  (every step up or down, lowest at some depth and up beyond it, a rank-correlated tendency, or no
  steady trend).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import flops
from .store import default_root, write_json

LATENCY = "latency"  # the folder under the runs root that holds the timings
MEASURES = {"train_s_per_step": "training step", "generate_batch_1_s_per_token": "generation, batch 1"}
TOLERANCE = 0.01  # the rebuttal's "within 1% of the best"


# --------------------------------------------------------------------------------------------------
# Time: stored latency measurements
# --------------------------------------------------------------------------------------------------
def latency_name(result: dict[str, Any]) -> str:
    """The file name of a `bench.depth_latency` result: device, fixed N, head size and threads, e.g.
    ``cpu-x86_64-N300000-h8-t1.json`` (one file per such measurement; a new one replaces the old)."""
    for k in ("device", "fixed_N", "head_size", "threads", "shapes"):
        if k not in result:
            raise ValueError(f"not a depth latency result (no {k!r}); make one with bench --depths ... --fixed-n N")
    device = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(result["device"])).strip("-")
    return f"{device}-N{int(round(result['fixed_N']))}-h{result['head_size']}-t{result['threads']}.json"


def save_latency(result: dict[str, Any], root: str | Path | None = None) -> Path:
    """File a `bench.depth_latency` result atomically under `<root>/latency/`, stamped with when it was filed."""
    path = Path(root if root is not None else default_root()) / LATENCY / latency_name(result)
    write_json(path, {**result, "filed": result.get("filed") or time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


def load_latency(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every filed latency result, by device, threads and size (none: an empty list)."""
    folder = Path(root if root is not None else default_root()) / LATENCY
    out = []
    for p in sorted(folder.glob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            rec = json.loads(p.read_text())
        except ValueError as e:
            raise ValueError(f"{p} is not readable JSON: {e}") from e
        latency_name(rec)  # a clear error for a file that is not one
        out.append({**rec, "path": str(p)})
    return sorted(out, key=lambda r: (r["device"], r["threads"], r["fixed_N"], r["head_size"]))


def ensure_latency(profile_name: str, root: str | Path | None = None, *, repeats: int = 10,
                   progress: bool = False) -> list[dict[str, Any]]:
    """The filed latency results under `root`; a profile that trains what it lacks (`train_missing`:
    cpu, smoke) first times and files each size of its depth sweep that has no timing on this device
    at one thread (the sweep's workers' count), the sweep's shapes and head size."""
    import torch

    from .bench import depth_latency
    from .config import RunConfig
    from .plans import profile
    from .train import _device_name

    p = profile(profile_name)
    if p.get("train_missing"):
        have = {(r["device"], r["fixed_N"], r["head_size"], r["threads"]) for r in load_latency(root)}
        device = _device_name(torch.device(p.get("device", "cpu")))
        for N in p["depth_sizes"]:
            if (device, float(N), p["depth_head_size"], 1) in have:
                continue
            result = depth_latency(N, p["depth_layers"], head_size=p["depth_head_size"], n_ctx=p["n_ctx"],
                                   vocab=RunConfig(n_ctx=p["n_ctx"]).vocab, batch_size=p["batch_size"],
                                   device=p.get("device", "cpu"), threads=1, repeats=repeats, progress=progress)
            save_latency(result, root)
    return load_latency(root)


def latency_table(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (measurement, depth, measure): the median seconds and the quartiles over repeats.

    Measures: the training step ("training step", seconds a step) and generation at each batch
    ("generation, batch B", seconds a generation step, which gives each of the B sequences a token)."""
    rows = []
    for res in results:
        for s in res["shapes"]:
            base = dict(device=res["device"], threads=res["threads"], fixed_N=res["fixed_N"], n_layer=s["n_layer"],
                        d_model=s["d_model"], N=s["N"], N_total=s["N_total"])
            timings = [("training step", s["train_s_per_step"])]
            timings += [(f"generation, batch {g['batch']}", g["s_per_token"]) for g in s["generate"]]
            for measure, t in timings:
                rows.append(dict(base, measure=measure, median_s=t["median"], q25_s=t["q25"], q75_s=t["q75"],
                                 repeats=t["n"]))
    cols = ["device", "threads", "fixed_N", "n_layer", "d_model", "N", "N_total", "measure", "median_s", "q25_s",
            "q75_s", "repeats"]
    return pd.DataFrame(rows, columns=cols)


def output_share(n_layer: int, d_model: int, *, n_ctx: int = 128, vocab: int = 4096) -> float:
    """The output layer's (de-embedding's) share of a shape's forward FLOPs per token (Kaplan et al.
    2020, Table 1, every row counted): at the book's small sizes it is most of the work, and it
    shrinks as a fixed N goes deeper and narrower."""
    table = flops.C_forward_table(flops.Shape(n_layer, d_model, n_ctx, vocab))
    return table["de-embed"] / sum(table.values())


def output_shares(t: pd.DataFrame, *, vocab: int = 4096) -> pd.Series:
    """`output_share` of each row of a runs table (its n_layer, d_model and n_ctx), indexed by N."""
    return pd.Series([output_share(int(L), int(d), n_ctx=int(c), vocab=vocab)
                      for L, d, c in zip(t["n_layer"], t["d_model"], t["n_ctx"])], index=t["N"].to_numpy(), dtype=float)


def _measure_name(key: str) -> str:
    m = re.fullmatch(r"generate_batch_(\d+)_s_per_token", key)
    return MEASURES.get(key) or (f"generation, batch {m.group(1)}" if m else key)


def fit_table(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (measurement, measure): the linear fit of the medians in depth that `bench` stored
    (seconds = intercept + slope n_layer), its R², the largest residual relative to the fitted value,
    and the fitted time at the deepest over the shallowest depth."""
    rows = []
    for res in results:
        L = np.array([s["n_layer"] for s in res["shapes"]], float)
        for key, f in (res.get("fits") or {}).items():
            fitted = f["intercept"] + f["slope"] * L
            rows.append(dict(device=res["device"], threads=res["threads"], fixed_N=res["fixed_N"],
                             measure=_measure_name(key), slope_s=f["slope"], intercept_s=f["intercept"],
                             r2=np.nan if f["r2"] is None else f["r2"],
                             max_rel_residual=float(np.max(np.abs(np.asarray(f["residuals"]) / fitted))),
                             ratio=np.nan if f["ratio"] is None else f["ratio"]))
    cols = ["device", "threads", "fixed_N", "measure", "slope_s", "intercept_s", "r2", "max_rel_residual", "ratio"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------------
# Loss: the depth sweep, by depth over seeds
# --------------------------------------------------------------------------------------------------
def nearest_size(N: Iterable[float], targets: Sequence[float]) -> np.ndarray:
    """The target size each N was sized to: the nearest of `targets` in log N (a depth's N misses its
    target by up to a head's step in d_model)."""
    t = np.asarray(sorted(targets), float)
    if not len(t) or np.any(t <= 0):
        raise ValueError(f"the target sizes must be positive and at least one, not {list(targets)}")
    n = np.asarray(list(N), float)
    if np.any(n <= 0):
        raise ValueError("every N must be positive")
    return t[np.abs(np.log(n)[:, None] - np.log(t)[None, :]).argmin(axis=1)]


def by_depth(runs: pd.DataFrame, targets: Sequence[float], loss: str = "final_val_loss") -> pd.DataFrame:
    """The seeds of each (target size, depth): their number, the mean loss, its standard deviation and
    standard error, and the mean perplexity exp(loss) with its standard deviation. `runs` is a
    `store.runs_table` of the depth sweep (columns N, n_layer, d_model, seed and `loss`)."""
    cols = ["size", "n_layer", "d_model", "N", "seeds", "mean", "sd", "se", "ppl_mean", "ppl_sd"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    t = runs.assign(size=nearest_size(runs["N"], targets), ppl=np.exp(runs[loss]))
    g = t.groupby(["size", "n_layer"])
    out = g.agg(d_model=("d_model", "first"), N=("N", "first"), seeds=("seed", "nunique"), mean=(loss, "mean"),
                sd=(loss, "std"), ppl_mean=("ppl", "mean"), ppl_sd=("ppl", "std")).reset_index()
    out["se"] = out["sd"] / np.sqrt(out["seeds"])
    return out[cols].sort_values(["size", "n_layer"]).reset_index(drop=True)


def _first_within(means: dict[int, float], tol: float) -> tuple[int, int]:
    """(the best depth, the shallowest depth whose mean loss is within `tol` of the best's)."""
    best = min(means, key=means.get)
    first = min(L for L, m in means.items() if m <= (1 + tol) * means[best])
    return best, first


def first_within(runs: pd.DataFrame, targets: Sequence[float], *, tol: float = TOLERANCE,
                 loss: str = "final_val_loss", bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """At each target size, the depth with the lowest mean loss over seeds, and the shallowest depth
    whose mean loss is within `tol` (relative) of it.

    How sure is that choice? A bootstrap resamples the seeds of each depth with replacement and
    picks again: `share` is the fraction of resamples that pick the same shallowest depth, and
    `depths_95` the fewest depths that together hold at least 95% of the picks. A depth with a
    single seed cannot be resampled (its mean is fixed), so `min_seeds` is reported beside."""
    if not 0 <= tol < 1:
        raise ValueError(f"the tolerance is a fraction of the best loss, in [0, 1), not {tol}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be non-negative, not {bootstrap}")
    cols = ["size", "best_n_layer", "best_mean", "first_n_layer", "first_mean", "excess", "share", "depths_95",
            "depths", "min_seeds"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    t = runs.assign(size=nearest_size(runs["N"], targets))
    rng = np.random.default_rng(seed)
    rows = []
    for size, g in t.groupby("size"):
        losses = {int(L): gg[loss].to_numpy(float) for L, gg in g.groupby("n_layer")}
        means = {L: float(v.mean()) for L, v in losses.items()}
        best, first = _first_within(means, tol)
        picks = [_first_within({L: float(rng.choice(v, len(v)).mean()) for L, v in losses.items()}, tol)[1]
                 for _ in range(bootstrap)]
        counts = pd.Series(picks, dtype=float).value_counts().sort_values(ascending=False)
        held = counts.cumsum() / max(len(picks), 1)
        depths_95 = sorted(int(L) for L in counts.index[: int((held < 0.95).sum()) + 1]) if len(picks) else [first]
        rows.append(dict(size=size, best_n_layer=best, best_mean=means[best], first_n_layer=first,
                         first_mean=means[first], excess=means[first] / means[best] - 1,
                         share=float(np.mean(np.asarray(picks) == first)) if picks else np.nan,
                         depths_95=depths_95, depths=sorted(losses), min_seeds=min(len(v) for v in losses.values())))
    return pd.DataFrame(rows, columns=cols)


def loss_trend(n_layer: Iterable[float], loss: Iterable[float], *, alpha: float = 0.05) -> dict[str, Any]:
    """How the loss moves with depth at a fixed size, in words a chapter can glue.

    `n_layer` and `loss` give the loss at each depth (several values of one depth are averaged: a
    mean over seeds). Returns the number of depths, the Spearman rank correlation `rho` of the loss
    with the depth and its p-value `p`, the depth with the lowest loss, `direction` ("rises", "falls"
    or None) and `text`: a clause that says no more than the data show. It says the loss rises
    (falls) "at every step in depth" only where each step from one depth to the next raises (lowers)
    it; "lowest at L layers and rises at every step in depth beyond it" where the lowest loss is not
    at the shallowest depth and each of at least two steps after it raises the loss; "tends to rise
    (fall)" where the steps are mixed but the rank correlation is significant at `alpha`; and that it
    shows no steady trend otherwise. Fewer than three depths: `text` says they are too few."""
    t = (pd.DataFrame({"n_layer": np.asarray(list(n_layer), float), "loss": np.asarray(list(loss), float)})
         .dropna().groupby("n_layer", as_index=False)["loss"].mean().sort_values("n_layer"))
    L, y = t["n_layer"].to_numpy(), t["loss"].to_numpy()
    out: dict[str, Any] = dict(depths=len(t), rho=np.nan, p=np.nan,
                               best_n_layer=int(L[y.argmin()]) if len(t) else None, direction=None)
    if len(t) < 3:
        out["text"] = f"{len(t)} depth{'' if len(t) == 1 else 's'} at this size are too few to read a trend with depth"
        return out
    from scipy.stats import spearmanr

    rho, p = spearmanr(L, y)
    out.update(rho=float(rho), p=float(p))
    step, best = np.diff(y), int(y.argmin())
    if (step > 0).all():
        out["direction"], words = "rises", "the loss rises at every step in depth at a fixed $N$"
    elif (step < 0).all():
        out["direction"], words = "falls", "the loss falls at every step in depth at a fixed $N$"
    elif best > 0 and len(t) - 1 - best >= 2 and (step[best:] > 0).all():
        out["direction"] = "rises" if rho > 0 else None
        words = f"the loss at a fixed $N$ is lowest at {L[best]:.0f} layers and rises at every step in depth beyond it"
    elif p < alpha and rho != 0:
        out["direction"] = "rises" if rho > 0 else "falls"
        words = f"the loss tends to {'rise' if rho > 0 else 'fall'} with depth at a fixed $N$, though not at every step"
    else:
        words = "the loss shows no steady trend with depth at a fixed $N$"
    out["text"] = f"{words} (Spearman ρ = {rho:+.2f} between loss and depth over {len(t)} depths)"
    return out


def savings(choice: pd.DataFrame, latency: pd.DataFrame, measure: str) -> pd.DataFrame:
    """What the shallowest depth within the tolerance saves in `measure` (a `latency_table` measure):
    its median time over that of the best depth and over that of the deepest depth timed, at the
    timing's fixed N nearest each size. NaN where a depth was not timed."""
    lat = latency[latency["measure"] == measure]
    cols = ["size", "timed_at_N", "first_n_layer", "first_s", "best_n_layer", "best_s", "deepest_n_layer",
            "deepest_s", "first_over_best", "first_over_deepest"]
    if choice.empty or lat.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, c in choice.iterrows():
        at = nearest_size([c["size"]], lat["fixed_N"].unique())[0]
        times = lat[lat["fixed_N"] == at].groupby("n_layer")["median_s"].median()
        first, best, deepest = times.get(c["first_n_layer"], np.nan), times.get(c["best_n_layer"], np.nan), times.iloc[-1]
        rows.append(dict(size=c["size"], timed_at_N=at, first_n_layer=c["first_n_layer"], first_s=first,
                         best_n_layer=c["best_n_layer"], best_s=best, deepest_n_layer=int(times.index[-1]),
                         deepest_s=deepest, first_over_best=first / best, first_over_deepest=first / deepest))
    return pd.DataFrame(rows, columns=cols)
