"""Transfer statistics: the line across models, and the spread at equal loss along training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling_lib import transfer


def runs(slope=1.0, offset=1.5, noise=0.0, sizes=(1e3, 4e3, 16e3, 64e3, 256e3), seeds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = []
    for N in sizes:
        for s in seeds:
            val = 20 * N**-0.1 + 0.01 * s
            rows.append(dict(N=N, seed=s, final_val_loss=val,
                             loss_email=offset + slope * val + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_a_constant_offset_gives_slope_one_and_equal_end_offsets():
    st = transfer.across_models(runs(), "loss_email", bootstrap=200)
    assert st.loc["slope", "value"] == pytest.approx(1.0)
    assert st.loc["offset_small", "value"] == pytest.approx(1.5) == st.loc["offset_large", "value"]
    assert np.isnan(st.loc["offset_small", "lo"])
    lo, hi = st.loc["slope", ["lo", "hi"]]
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_a_slope_below_one_is_found_and_its_interval_excludes_one():
    st = transfer.across_models(runs(slope=0.6, noise=0.005), "loss_email", bootstrap=300)
    assert st.loc["slope", "value"] == pytest.approx(0.6, abs=0.05)
    assert st.loc["slope", "hi"] < 1 and st.loc["slope", "lo"] < st.loc["slope", "value"] < st.loc["slope", "hi"]
    # a slope below one makes the offset grow as the loss falls: larger at the largest size
    assert st.loc["offset_large", "value"] > st.loc["offset_small", "value"]
    assert st.loc["offset_mean", "lo"] < st.loc["offset_mean", "value"] < st.loc["offset_mean", "hi"]


def test_too_few_runs_raise_and_two_sizes_give_no_interval():
    with pytest.raises(ValueError, match="a line needs 3"):
        transfer.across_models(runs(sizes=(1e3,), seeds=(0, 1)), "loss_email")
    st = transfer.across_models(runs(sizes=(1e3, 4e3)), "loss_email")
    assert st[["lo", "hi"]].isna().all(axis=None)


def curves(depends_on_size: float):
    rows = []
    for i, N in enumerate((1e3, 1e4, 1e5)):
        for step, val in enumerate(np.linspace(8, 4 - 0.3 * i, 30)):
            rows.append(dict(key=f"r{i}", N=N, step=step + 1, val_loss=val,
                             val_loss_email=1.2 * val + 1 + depends_on_size * i))
    return pd.DataFrame(rows)


def test_along_training_spread_is_zero_when_only_the_loss_matters():
    same = transfer.along_training(curves(0.0), "val_loss_email")
    assert len(same) == 20 and (same["runs"] >= 2).all()
    assert same["spread"].max() == pytest.approx(0.0, abs=1e-9)
    apart = transfer.along_training(curves(0.2), "val_loss_email")
    assert apart["spread"].max() == pytest.approx(0.4, rel=1e-6)  # three runs, 0.2 nats apart each
    assert transfer.along_training(curves(0.0).query("key == 'r0'"), "val_loss_email").empty
