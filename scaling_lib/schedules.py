"""Learning-rate schedules (Kaplan et al. 2020, App. D.6, Fig. 22): the final loss against the schedule.

Kaplan et al. find that, for schedules that warm up and then decay, the final loss depends mostly on
the area under the learning-rate curve, the summed rate, and little on the shape. `lr_curve` and
`summed_lr` give a run's schedule from its config (the training loop's own `train.lr_at`), and
`table` sets each run of the `schedule` sweep beside its summed rate and its final loss.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from .config import RunConfig
from .store import runs_table
from .train import lr_at

DEFAULTS = {"schedule": "cosine", "min_lr_ratio": 0.1, "cooldown_frac": 0.2}


def lr_curve(cfg: RunConfig) -> np.ndarray:
    """The peak-scaled rate at every step of a run, as training applies it."""
    return np.array([lr_at(cfg, step, cfg.steps) for step in range(cfg.steps)])


def summed_lr(cfg: RunConfig) -> float:
    """The area under the schedule: the rates of every step, summed (Kaplan et al. Fig. 22, right)."""
    return float(lr_curve(cfg).sum())


def label(cfg: RunConfig, peak: float | None = None) -> str:
    """A schedule in words: its name, the shape fields that differ from the defaults, and the peak rate
    as a multiple of `peak` where that is given and differs."""
    parts = [cfg.schedule]
    if cfg.schedule != "constant" and cfg.min_lr_ratio != DEFAULTS["min_lr_ratio"]:
        parts.append(f"to {cfg.min_lr_ratio:g} of the peak")
    if cfg.schedule == "wsd" and cfg.cooldown_frac != DEFAULTS["cooldown_frac"]:
        parts.append(f"cooling over {cfg.cooldown_frac:.0%}")
    default_warmup = RunConfig.from_dict({**cfg.to_dict(), "warmup_tokens": -1}).warmup_tokens
    if cfg.warmup_tokens != default_warmup:
        parts.append(f"warmup {cfg.warmup_tokens / 1e6:g}M tokens")
    if peak and not np.isclose(cfg.lr, peak, rtol=1e-3):
        parts.append(f"{cfg.lr / peak:.3g}x the rate")
    return ", ".join(parts)


def table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: its schedule in words, the peak rate, the summed rate and the final loss; the
    peak multiples are against the most common peak rate of the runs (the rule's)."""
    records = list(records)
    cols = ["label", "schedule", "lr", "summed_lr", "final_val_loss", "key"]
    if not records:
        return pd.DataFrame(columns=cols)
    cfgs = [RunConfig.from_stored(r["config"]) for r in records]
    peak = pd.Series([c.lr for c in cfgs]).mode().iloc[0]
    t = runs_table(records)
    out = pd.DataFrame({"label": [label(c, peak) for c in cfgs], "schedule": [c.schedule for c in cfgs],
                        "lr": [c.lr for c in cfgs], "summed_lr": [summed_lr(c) for c in cfgs],
                        "final_val_loss": t["final_val_loss"].to_numpy(), "key": t["key"].to_numpy()})
    return out[cols].sort_values("summed_lr").reset_index(drop=True)


def best_told_apart(runs: pd.DataFrame, seed_rel_sd: float | None) -> tuple[str, bool | None]:
    """Whether the best decaying schedule of `table`'s rows is told apart from the runner-up, each being one run:
    their gap against twice the spread of a difference of two single runs (sqrt(2) times the seed-to-seed
    relative standard deviation, measured elsewhere at about this size). Returns a sentence and the verdict
    (None where there is no runner-up or no spread to judge by)."""
    dec = runs[runs["schedule"] != "constant"].sort_values("final_val_loss")
    if len(dec) < 2:
        return "", None
    gap = dec["final_val_loss"].iloc[1] / dec["final_val_loss"].iloc[0] - 1
    said = f"The runner-up, {dec['label'].iloc[1]}, ends {gap:.2%} above the best"
    if seed_rel_sd is None or not np.isfinite(seed_rel_sd):
        return said + "; no seed spread is measured near this size, so whether that is resolved is not known.", None
    noise = 2 * np.sqrt(2) * seed_rel_sd
    apart = bool(gap > noise)
    return (said + f", {'more' if apart else 'less'} than twice the spread of a difference between two single "
            f"runs ({noise:.2%}): the best schedule is {'' if apart else 'not '}told apart from it."), apart
