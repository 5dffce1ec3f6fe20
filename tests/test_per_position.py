"""The loss at every context position along training (Kaplan et al. 2020, Fig. 20 right): the
`eval_per_position` option, its tidy table, and the L(T) fit (Fig. 20 left, App. D.5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scaling_lib import laws, store as store_mod
from scaling_lib.config import INTRODUCED, RunConfig
from scaling_lib.plans import configs
from scaling_lib.store import Store
from scaling_lib.train import PER_POSITION_DIGITS, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def pair(tiny_corpus, tmp_path_factory):
    """One tiny wsd run with the option, and the same run without it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    base = RunConfig(corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=4, eval_tokens=1024, tokens=4096,
                     schedule="wsd", lr=1e-2)
    try:
        on = train(base.replace(eval_per_position=True), progress=False, checkpoint_dir=tmp_path_factory.mktemp("a"))
        off = train(base, progress=False, checkpoint_dir=tmp_path_factory.mktemp("b"))
    finally:
        torch.set_num_threads(n)
    return base, on, off


def test_the_option_is_off_by_default_and_out_of_the_key_there():
    cfg = RunConfig()
    assert cfg.eval_per_position is False and INTRODUCED["eval_per_position"] is False
    assert cfg.replace(eval_per_position=True).key != cfg.key
    d = cfg.to_dict()
    del d["eval_per_position"]  # a record filed before the field existed
    assert RunConfig.from_stored(d).key == cfg.key


def test_every_curve_point_holds_the_loss_at_each_position(pair):
    cfg, on, off = pair
    for point in on["curve"]:
        pos = point["per_position_loss"]
        assert len(pos) == cfg.n_ctx and all(round(x, PER_POSITION_DIGITS) == x for x in pos)
        # their mean is the point's loss, to the rounding
        assert np.mean(pos) == pytest.approx(point["val_loss"], abs=10 ** -PER_POSITION_DIGITS)
    last = on["curve"][-1]  # scored on the final windows, as its val_loss is
    assert np.allclose(last["per_position_loss"], on["final"]["per_position_loss"], atol=10 ** -PER_POSITION_DIGITS)
    assert len(last["per_position_loss_selection"]) == cfg.n_ctx
    assert all("per_position_loss" not in p for p in off["curve"])
    json.dumps(on, allow_nan=False)


def test_the_option_changes_what_is_stored_not_what_is_trained(pair):
    _, on, off = pair
    assert [p["val_loss"] for p in on["curve"]] == pytest.approx([p["val_loss"] for p in off["curve"]], rel=1e-6)
    assert on["final"]["val_loss"] == pytest.approx(off["final"]["val_loss"], rel=1e-6)


def test_the_tidy_table_has_a_row_per_evaluation_and_position(pair):
    cfg, on, off = pair
    t = store_mod.per_position_curves([on, off], family="Transformer")
    assert list(t.columns) == ["step", "tokens", "T", "loss", "N", "n_ctx", "key", "family"]
    assert len(t) == len(on["curve"]) * cfg.n_ctx and set(t["key"]) == {on["key"]}  # the run without is left out
    first = t[t["step"] == 0]
    assert list(first["T"]) == list(range(1, cfg.n_ctx + 1))
    assert first["loss"].tolist() == on["curve"][0]["per_position_loss"]
    assert (t["tokens"] == t["step"] * cfg.tokens_per_step).all()
    # training lowers the loss at every position
    end = t[t["step"] == on["steps"]].set_index("T")["loss"]
    assert (end < first.set_index("T")["loss"]).all()
    empty = store_mod.per_position_curves([off])
    assert empty.empty and list(empty.columns) == ["step", "tokens", "T", "loss", "N", "n_ctx", "key"]


def test_a_smoke_context_run_stores_its_positions(tiny_corpus, linked_cache, tmp_path):
    s = Store(tmp_path / "runs")
    short = min(configs("context", "smoke", s), key=lambda c: (c.n_ctx, c.N))
    assert short.eval_per_position and short.n_ctx == 16
    rec = train(short, progress=False, store=s)
    t = store_mod.per_position_curves(s.records("context"))
    assert len(t) == len(rec["curve"]) * 16 and t["n_ctx"].eq(16).all()
    assert t.groupby("step")["loss"].mean().iloc[-1] < t.groupby("step")["loss"].mean().iloc[0]


# --- L(T) = a + b T^-c -----------------------------------------------------------------------
def test_the_loss_by_position_fit_recovers_a_known_exponent():
    rng = np.random.default_rng(0)
    T = np.arange(1, 129)
    a, b, c = 3.2, 2.5, 0.45
    loss = (a + b * T**-c) * np.exp(rng.normal(0, 0.003, T.size))
    f = laws.fit_loss_by_position(T, loss, bootstrap=200, seed=0)
    assert f.form == "power-offset" and f.n_points == 128
    assert f.params["alpha"] == pytest.approx(c, abs=0.05) and f.params["E"] == pytest.approx(a, abs=0.1)
    assert f.contains("alpha", c) and f.contains("E", a)
    lo, hi = f.interval("alpha")
    assert hi - lo < 0.2
    # the first position left out: a fit on T >= 2 only
    assert laws.fit_loss_by_position(T, loss, T_min=2).n_points == 127


def test_the_loss_by_position_fit_resamples_whole_runs():
    rng = np.random.default_rng(1)
    T = np.tile(np.arange(1, 65), 3)
    run = np.repeat(["a", "b", "c"], 64)
    loss = (3.0 + 2.0 * T**-0.6) * np.exp(rng.normal(0, 0.005, T.size))
    f = laws.fit_loss_by_position(T, loss, bootstrap=50, seed=0, groups=run, T_min=4)
    assert f.resampling == "groups" and f.n_points == 3 * 61 and f.contains("alpha", 0.6)


def test_a_position_fit_with_its_offset_at_the_bound_or_a_tiny_exponent_is_degenerate():
    import pandas as pd

    fits = pd.DataFrame(dict(N=[768, 3072, 13824], a=[0.0, 2.1, 1.9], c=[0.003, 0.14, 0.03]))
    assert list(laws.degenerate_position_fits(fits)) == [True, False, True]
    assert list(laws.degenerate_position_fits(fits, c_min=0.01)) == [True, False, False]
