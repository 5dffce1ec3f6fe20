"""The run store: one JSON record per run under ``runs/<sweep>/``, keyed by its config's hash.

A record holds the config, the learning curve, the result at every token budget, the final
metrics and the provenance (git commit, device, versions, wall time, epochs). Records are written
atomically and never edited. No torch here, and no training (that is the runner's): the analysis
chapters load runs without a model.

A record is found by its key, not by its file name: the name in ``<name>-<key>.json`` is there for
people, and may read differently for runs filed before a field was added. ``schema`` says which
layout a record has (1: the first 132 runs, which carry no ``schema`` entry).

A run that crashed leaves a failed record (``<root>/.failed/<sweep>/<name>-<key>.json``: the error,
its traceback, where and how often it failed) out of the records' way: the run still counts as
missing, so a retry trains it, and filing its record removes the failure. Every file is written
to a temporary name in its folder, flushed to disk and renamed, so that a reader on any machine of
a shared file system sees a whole record or none.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .config import INTRODUCED, RunConfig, vocab_size

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "runs"
SCHEMA_VERSION = 2  # 2: `schema` and `config.eval_version` in every record, budgets with standard errors
FAILED = ".failed"  # under the root: the failed records, out of the way of the records
FINISHED = ("ok", "early_stopped")  # the statuses of a run that trained to its end, or stopped early as planned
NOT_RUNS = ("predictions", "rules", "reference", "latency")  # other records under the root: predictions, fitted
# rules, n-gram lines, timings of depth against latency


def default_root() -> Path:
    return Path(os.environ.get("SCALING_LIB_RUNS", DEFAULT_ROOT))


class Store:
    """Run records on disk: ``<root>/<sweep>/<name>-<key>.json``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        self._index: dict[str, dict[str, Path]] = {}  # sweep -> key -> path, refreshed on a miss

    def path(self, cfg: RunConfig) -> Path:
        """Where the record of a config lies: where it was filed, else where it would be filed."""
        return self.find(cfg) or self.root / cfg.sweep / f"{cfg.name}-{cfg.key}.json"

    def find(self, cfg: RunConfig) -> Path | None:
        """The stored record's path, looked up by the config's key in its sweep's folder."""
        index = self._index.get(cfg.sweep)
        if index is None or cfg.key not in index or not index[cfg.key].exists():
            index = self._index[cfg.sweep] = self._scan(self.root / cfg.sweep)
        return index.get(cfg.key)

    @staticmethod
    def _scan(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {p.stem.rsplit("-", 1)[-1]: p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")}

    def has(self, cfg: RunConfig) -> bool:
        return self.find(cfg) is not None

    def load(self, cfg: RunConfig) -> dict[str, Any] | None:
        p = self.find(cfg)
        return load_record(p) if p is not None else None

    def save(self, record: dict[str, Any]) -> Path:
        cfg = RunConfig.from_stored(record["config"])
        if cfg.key != record["key"]:
            raise ValueError(f"record key {record['key']} does not match its config ({cfg.key})")
        record = {k: v for k, v in record.items() if k != "path"}  # where it lies is not part of it
        p = self.path(cfg)
        write_json(p, record)
        self._index.setdefault(cfg.sweep, {})[cfg.key] = p
        self.failure_path(cfg).unlink(missing_ok=True)  # a retry that succeeded replaces the failure
        return p

    # --- failures ---
    def failure_path(self, cfg: RunConfig) -> Path:
        return self.root / FAILED / cfg.sweep / f"{cfg.name}-{cfg.key}.json"

    def save_failure(self, cfg: RunConfig, error: str, detail: str = "") -> Path:
        """File that a run crashed (the error, its traceback, the host, the attempt); replaces the last failure."""
        p = self.failure_path(cfg)
        attempts = (self.failure(cfg) or {}).get("attempts", 0) + 1
        write_json(p, dict(schema=SCHEMA_VERSION, key=cfg.key, name=cfg.name, sweep=cfg.sweep, config=cfg.to_dict(),
                           status="failed", error=error, traceback=detail, attempts=attempts,
                           host=platform.node(), pid=os.getpid(), failed=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        return p

    def failure(self, cfg: RunConfig) -> dict[str, Any] | None:
        """The failed record of a config that crashed and has not been trained since, or None."""
        try:
            return json.loads(self.failure_path(cfg).read_text())
        except (OSError, ValueError):
            return None

    def failures(self, sweep: str | None = None) -> list[dict[str, Any]]:
        base = self.root / FAILED / (sweep or "")
        return [json.loads(p.read_text()) for p in sorted(base.rglob("*.json")) if not p.name.startswith(".")]

    def paths(self, sweep: str | None = None) -> list[Path]:
        """The records' files (not temporary files, not failures: nothing under a name that starts with '.';
        nothing under the folders of `NOT_RUNS`)."""
        base = self.root / sweep if sweep else self.root
        return sorted(p for p in base.rglob("*.json")
                      if not any(part.startswith(".") for part in p.relative_to(base).parts)
                      and (sweep or p.relative_to(base).parts[0] not in NOT_RUNS))

    def records(self, sweep: str | None = None) -> list[dict[str, Any]]:
        return [load_record(p) for p in self.paths(sweep)]

    def table(self, sweep: str | None = None, *, budgets: bool = False, mixed_eval: bool = False) -> pd.DataFrame:
        """One row per run (or per run and token budget), with the columns the chapters fit."""
        return runs_table(self.records(sweep), budgets=budgets, mixed_eval=mixed_eval)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, flushed and synced, then renamed
    over the target (atomic on a local disk and on NFS alike: no reader sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the name points at it (a node may crash)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable run record: {e}") from e
    if "config" not in rec or "key" not in rec:
        raise ValueError(f"{path} is not a run record (no config or key)")
    rec["path"] = str(path)
    return rec


_CONFIG_COLUMNS = ("arch", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "tokenizer", "batch_size", "lr",
                   "schedule", "seed", "device", "dtype", "data_tokens", "early_stop", "eval_version")


class MixedEvaluation(ValueError):
    """Runs evaluated in different ways (config.EVAL_VERSION) would be fitted together."""


def eval_version(record: dict[str, Any]) -> int:
    return int(record["config"].get("eval_version", INTRODUCED["eval_version"]))


def runs_table(records: Iterable[dict[str, Any]], *, budgets: bool = False, mixed_eval: bool = False) -> pd.DataFrame:
    """Flatten records: config columns, N, tokens, compute and losses (per budget when asked).

    Every fit of the book reads such a table, so no table mixes evaluation versions unless asked
    (`mixed_eval=True`, for a comparison that keeps them apart by the `eval_version` column).
    """
    records = list(records)
    versions = sorted({eval_version(r) for r in records})
    if len(versions) > 1 and not mixed_eval:
        raise MixedEvaluation(f"these runs were evaluated in {len(versions)} ways (eval_version {versions}): "
                              "fit them apart, or pass mixed_eval=True and keep them apart by 'eval_version'")
    rows = []
    for r in records:
        c = r["config"]
        base = {k: c.get(k) for k in _CONFIG_COLUMNS}
        base["eval_version"] = eval_version(r)
        base["n_recur"] = c.get("n_recur", INTRODUCED["n_recur"])
        base["dropout"] = c.get("dropout", INTRODUCED["dropout"])
        base.update(
            schema=r.get("schema", 1), path=r.get("path"), key=r["key"], name=r["name"], sweep=r["sweep"],
            status=r["status"], N=r["N"],
            N_total=r["N_total"], vocab=vocab_size(c["tokenizer"]), data_tokens=r["data_tokens"],
            flops_per_token=_forward_flops(c),
            wall_time_s=r["provenance"].get("wall_time_s"), device_name=r["provenance"].get("device"),
            finished=r["provenance"].get("finished"), test_loss=r["final"].get("test_loss"), best_val_loss=r["final"].get("best_val_loss"),
            val_loss_se=r["final"].get("val_loss_se", math.nan),
            **{f"loss_{k}": v for k, v in r["final"].get("other", {}).items()},
            **_early_stopped(r["curve"]),
        )
        if budgets:
            last = r["curve"][-1] if r["curve"] else {}
            for b in r["budgets"]:
                loss = b["val_loss"]
                if base["eval_version"] == 1 and b["tokens"] == r["tokens"] and last.get("step") == r["steps"]:
                    # Evaluation 1 scored the cooldown branches on the curve's eval_tokens windows and
                    # the longest budget on the final windows: its longest budget is read off the
                    # curve, on the branches' windows. Evaluation 2 scores them all on one set.
                    loss = last["val_loss"]
                rows.append({**base, "tokens": b["tokens"], "steps": b["steps"], "epochs": b["epochs"], "C": b["C"],
                             "C_exact": b["C_exact"], "final_val_loss": loss, "budget_status": b["status"],
                             "val_loss_se": b.get("val_loss_se", math.nan), "is_longest": b["tokens"] == r["tokens"]})
        else:
            rows.append({**base, "tokens": r["tokens"], "steps": r["steps"], "epochs": r["epochs"], "C": r["C"],
                         "C_exact": r["C_exact"], "final_val_loss": r["final"].get("val_loss")})
    return pd.DataFrame(rows)


def _forward_flops(config: dict[str, Any]) -> float:
    """Forward FLOPs per token of a stored config, embeddings and attention included (the registry's count)."""
    from . import arch

    return float(arch.get(config.get("arch", "gpt")).forward_flops(RunConfig.from_stored(config)))


def per_position_table(records: Iterable[dict[str, Any]], **labels: Any) -> pd.DataFrame:
    """The final evaluation's mean loss at each context position T (1 = the first predicted token),
    one row per (run, T), with the run's N and key and any `labels` (e.g. family="LSTM") as columns."""
    frames = []
    for r in records:
        loss = r["final"].get("per_position_loss")
        if loss:
            frames.append(pd.DataFrame(dict(T=range(1, len(loss) + 1), loss=loss, N=r["N"], key=r["key"], **labels)))
    if not frames:
        return pd.DataFrame(columns=["T", "loss", "N", "key", *labels])
    return pd.concat(frames, ignore_index=True)


def per_position_curves(records: Iterable[dict[str, Any]], **labels: Any) -> pd.DataFrame:
    """The loss at each context position T along training (Kaplan Fig. 20, right): one row per (run,
    curve evaluation, T), with step, tokens, T, loss, the run's N, n_ctx and key, and any `labels`.

    Only runs trained with `eval_per_position` have it; the others are left out. The last point of
    an evaluation-2 run is the final windows' score (as its val_loss is).
    """
    columns = ["step", "tokens", "T", "loss", "N", "n_ctx", "key", *labels]
    frames = []
    for r in records:
        for point in r["curve"]:
            loss = point.get("per_position_loss")
            if loss:
                frames.append(pd.DataFrame(dict(step=point["step"], tokens=point["tokens"], T=range(1, len(loss) + 1),
                                                loss=loss, N=r["N"], n_ctx=r["config"]["n_ctx"], key=r["key"],
                                                **labels)))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def prefer_cpu(table: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """A run trained on both machines (same `on` columns) counts once, the CPU's: the book stands on CPU runs."""
    order = (table["device"] != "cpu").to_numpy().argsort(kind="stable")
    return table.iloc[order].drop_duplicates(on, keep="first").reset_index(drop=True)


def machine_pairs(table: pd.DataFrame, *, near_best: float = 0.02) -> dict[str, Any]:
    """How far the final losses of the configurations (N, lr) trained on both machines differ: `pairs` (how
    many), the `median` and `max` of |cuda/cpu - 1|, and a `reading` sentence naming the largest difference and,
    where that rate's CPU loss lies more than `near_best` above its size's best paired one, the largest difference
    at each size's best paired rate. Without a pair: 0, None, None and ''."""
    none = dict(pairs=0, median=None, max=None, reading="")
    if not len(table) or not {"cpu", "cuda"} <= set(table["device"]):
        return none
    pairs = table.pivot_table(index=["N", "lr"], columns="device", values="final_val_loss")[["cpu", "cuda"]].dropna()
    if not len(pairs):
        return none
    diff = (pairs["cuda"] / pairs["cpu"] - 1).abs()
    worst = diff.idxmax()
    reading = f"The largest difference is at N = {worst[0]:,}, lr = {worst[1]:g}"
    if pairs.loc[worst, "cpu"] > (1 + near_best) * pairs.xs(worst[0], level="N")["cpu"].min():
        best = pairs.groupby(level="N")["cpu"].transform("min").eq(pairs["cpu"])  # each size's best paired rate
        reading += (f", a rate whose loss is more than {near_best:.0%} above that size's best; at each size's best "
                    f"rate the two machines differ by at most {diff[best].max():.2%}.")
    else:
        reading += "."
    return dict(pairs=len(pairs), median=float(diff.median()), max=float(diff.max()), reading=reading)


def _early_stopped(curve: list[dict[str, Any]]) -> dict[str, float]:
    """The lowest validation loss along a learning curve and where it was reached: the loss early
    stopping keeps (Kaplan §3.1.1's L(D)). Every point of a curve is scored on the same windows."""
    points = [p for p in curve if p.get("val_loss") is not None and math.isfinite(p["val_loss"])]
    if not points:
        return dict(early_stopped_loss=math.nan, early_stopped_tokens=math.nan)
    best = min(points, key=lambda p: p["val_loss"])
    return dict(early_stopped_loss=best["val_loss"], early_stopped_tokens=best["tokens"])


CURVE_RUN_COLUMNS = ("key", "name", "N", "n_layer", "d_model", "batch_size", "n_ctx", "peak_lr", "warmup_tokens",
                     "seed", "arch", "budget")


def curves_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Learning curves, one row per stored evaluation (step 0 and non-finite losses included): the
    point's fields after the run's CURVE_RUN_COLUMNS (batch_size in sequences, peak_lr the config's
    rate, budget its tokens). Without records, those columns and step, tokens, val_loss."""
    rows = []
    for r in records:
        c = r["config"]
        for point in r["curve"]:
            rows.append(dict(key=r["key"], name=r["name"], N=r["N"], n_layer=c["n_layer"], d_model=c["d_model"],
                             batch_size=c["batch_size"], n_ctx=c["n_ctx"], peak_lr=c["lr"],
                             warmup_tokens=c["warmup_tokens"], seed=c["seed"], arch=c["arch"], budget=r["tokens"],
                             **point))
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*CURVE_RUN_COLUMNS, "step", "tokens", "val_loss"])
