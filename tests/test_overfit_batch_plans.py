"""The overfitting grid (Kaplan §4) and the batch-size scans (§5.1): their plans under each profile."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scaling_lib import plans
from scaling_lib.config import EVAL_VERSION
from scaling_lib.data import DATA_BLOCK_TOKENS, data_subset
from scaling_lib.plans import PROFILES, configs, cost
from scaling_lib.store import Store
from scaling_lib.tuning import RULE_FILE, LRRule


def _on_the_lattice(lr: float) -> bool:
    k = 4 * math.log2(lr / plans.LR_LATTICE)
    return k == pytest.approx(round(k), abs=1e-4)


# --- overfitting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_the_overfit_grid_is_every_size_on_every_nested_subset(tmp_path, name, save_rule):
    save_rule()
    p = PROFILES[name]
    cfgs = configs("overfit", name, Store(tmp_path))
    assert len(cfgs) == len(p["overfit_ladder"]) * len(p["overfit_data_sizes"])
    assert len({c.key for c in cfgs}) == len(cfgs)
    assert {(c.n_layer, c.d_model, c.data_tokens) for c in cfgs} == \
        {(L, d, D) for L, d in p["overfit_ladder"] for D in p["overfit_data_sizes"]}
    assert all(c.dropout == 0.1 and c.early_stop and c.eval_version == EVAL_VERSION for c in cfgs)
    assert all(c.sweep == "overfit" and c.arch == "gpt" and c.tokens == p["overfit_tokens"] for c in cfgs)
    for N in {c.N for c in cfgs}:  # a size at one rate on every subset: D is the data, not the budget
        assert len({c.lr for c in cfgs if c.N == N}) == 1
    assert [c.data_tokens for c in cfgs][0] == 0  # the whole split (the longest runs) first


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_the_overfit_subsets_are_nested_and_reach_the_whole_split(name):
    sizes = PROFILES[name]["overfit_data_sizes"]
    assert 0 in sizes  # the whole split
    parts = sorted(d for d in sizes if d)
    # what keeps data_subset's subsets nested: whole blocks, or a part of the first block (the smoke grid's 4k)
    assert all(d % DATA_BLOCK_TOKENS == 0 or d < DATA_BLOCK_TOKENS for d in parts)
    split = np.arange(4 * parts[-1])
    subsets = [set(data_subset(split, d).tolist()) for d in parts]
    assert all(a < b for a, b in zip(subsets, subsets[1:]))
    assert [len(s) for s in subsets] == parts


def test_the_cpu_overfit_grid_is_the_papers_shape_on_the_tuned_ladder(tmp_path, save_rule):
    save_rule()
    cfgs = configs("overfit", "cpu", Store(tmp_path))
    sizes = {(c.n_layer, c.d_model) for c in cfgs}
    assert len(sizes) >= 4 and sizes <= set(plans.LADDER_TUNED)
    parts = sorted(c.data_tokens for c in cfgs if c.data_tokens)
    assert len(set(parts)) + 1 >= 5 and 2e5 <= parts[0] <= 3e5  # from about 0.25M tokens to the whole split
    rule = LRRule.load(tmp_path / RULE_FILE)
    for c in cfgs:  # the rule's rate at the budget, on its lattice of quarter octaves
        assert _on_the_lattice(c.lr) and abs(math.log2(c.lr / float(rule(c.N, c.tokens)))) <= 1 / 8 + 1e-9


# --- batch size -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_the_batch_scan_is_every_size_at_every_batch_at_a_grid_of_rates(tmp_path, name, save_rule):
    save_rule()
    p = PROFILES[name]
    cfgs = configs("batch", name, Store(tmp_path))
    Bs = sorted(p["batch_sizes"])
    assert all(b / a == 2 for a, b in zip(Bs, Bs[1:]))  # x2 steps
    assert len(cfgs) == len(p["batch_ladder"]) * len(Bs) * len(p["batch_lr_factors"])
    assert len({c.key for c in cfgs}) == len(cfgs)
    assert {(c.n_layer, c.d_model, c.batch_size) for c in cfgs} == \
        {(L, d, B) for L, d in p["batch_ladder"] for B in Bs}
    assert {c.tokens for c in cfgs} == {p["batch_tokens"]}  # one token budget: fewer steps at larger batches
    assert all(c.schedule == "constant" and c.eval_version == EVAL_VERSION and c.sweep == "batch" for c in cfgs)
    assert all(c.evals_per_decade == p["batch_evals_per_decade"] and c.dropout == 0 and not c.early_stop
               for c in cfgs)
    # B_simple at every evaluation, on batches of the run's own (McCandlish et al. 2018)
    assert p["batch_noise_batches"] >= 1 and {c.noise_batches for c in cfgs} == {p["batch_noise_batches"]}
    for L, d in p["batch_ladder"]:
        for B in Bs:
            rates = sorted(c.lr for c in cfgs if (c.n_layer, c.d_model, c.batch_size) == (L, d, B))
            assert [r / rates[1] for r in rates] == pytest.approx(sorted(p["batch_lr_factors"]), rel=1e-5)  # 6 digits
        # a warmup of the same tokens at every batch: the schedule is the same in tokens
        assert len({c.warmup_tokens for c in cfgs if (c.n_layer, c.d_model) == (L, d)}) == 1


def test_the_batch_rates_follow_the_square_root_of_the_batch_from_the_rule(tmp_path, save_rule):
    rule = LRRule.load(save_rule())
    p = PROFILES["cpu"]
    cfgs = configs("batch", "cpu", Store(tmp_path))
    assert len({c.N for c in cfgs}) >= 3 and len(p["batch_sizes"]) >= 6
    B0 = p["batch_size"]
    assert min(p["batch_sizes"]) < B0 < max(p["batch_sizes"])  # the rule's batch lies inside the scan
    for c in cfgs:
        assert _on_the_lattice(c.lr)
    for N in {c.N for c in cfgs}:
        for B in p["batch_sizes"]:
            mid = sorted(c.lr for c in cfgs if c.N == N and c.batch_size == B)[1]
            assert abs(math.log2(mid / (float(rule(N, p["batch_tokens"])) * math.sqrt(B / B0)))) <= 1 / 8 + 1e-9
        # a batch four times another's is one octave above it: the grids share two rates
        lo = {c.lr for c in cfgs if c.N == N and c.batch_size == p["batch_sizes"][0]}
        hi = {c.lr for c in cfgs if c.N == N and c.batch_size == 4 * p["batch_sizes"][0]}
        assert len(lo & hi) == 2


def test_a_batch_rate_that_wins_at_an_edge_grows_the_grid(tmp_path):
    s = Store(tmp_path)
    first = configs("batch", "smoke", s)
    one = sorted((c for c in first if c.d_model == 8 and c.batch_size == 2), key=lambda c: c.lr)
    for c in one:  # the largest rate wins: a larger one is added
        s.save(dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok",
                    final=dict(val_loss=-c.lr)))
    grown = sorted(c.lr for c in configs("batch", "smoke", s) if c.d_model == 8 and c.batch_size == 2)
    assert grown == [*(c.lr for c in one), pytest.approx(3 * one[-1].lr)]


# --- the rule, 'all', keys and cost --------------------------------------------------------------
@pytest.mark.parametrize("name", ["cpu", "book", "gpu"])
@pytest.mark.parametrize("sweep_name", ["overfit", "batch"])
def test_without_a_stored_rule_the_new_sweeps_name_the_missing_file(tmp_path, name, sweep_name):
    with pytest.raises(plans.MissingRule) as e:
        configs(sweep_name, name, Store(tmp_path))
    assert str(tmp_path / RULE_FILE) in str(e.value) and repr(sweep_name) in str(e.value)


def test_all_leaves_the_new_sweeps_out_without_the_rule_and_takes_them_with_it(tmp_path, save_rule):
    without = configs("all", "cpu", Store(tmp_path))
    assert without and not {"overfit", "batch"} & {c.sweep for c in without}
    save_rule()
    with_rule = configs("all", "cpu", Store(tmp_path))
    assert {"overfit", "batch", "context", "recur"} <= {c.sweep for c in with_rule}
    assert len({c.key for c in with_rule}) == len(with_rule)


def test_the_keys_of_the_new_runs_are_stable(tmp_path, save_rule):
    """Pinned: a change to the plans or to the config that re-keys these runs strands their records."""
    save_rule(A=0.02, a=0.0, b=0.0)  # LR* = 0.02 everywhere
    overfit = configs("overfit", "cpu", Store(tmp_path))
    batch = configs("batch", "cpu", Store(tmp_path))
    assert configs("overfit", "cpu", Store(tmp_path)) == overfit  # planned twice, the same runs
    pinned = {c.name: c.key for c in overfit + batch if c.d_model == 16 and c.data_tokens in (0, 2**18)
              and c.batch_size in (8, 32) and c.lr <= 0.03}
    assert pinned == {
        "gpt-L1-d16-drop0.1-T8M-lr0.02-s0": "9a01304d205b",
        "gpt-L1-d16-D262.1k-drop0.1-T8M-lr0.02-s0": "d48f53ee5885",
        # the batch runs measure B_simple (noise_batches 1): re-keyed from those below, of which none was stored
        "gpt-L1-d16-b8-T4M-lr0.005-s0": "f8c2fee20481",  # sqrt(8/32): the centre half the rule's rate
        "gpt-L1-d16-b8-T4M-lr0.01-s0": "4bfa06bbb5d8",
        "gpt-L1-d16-b8-T4M-lr0.02-s0": "57045d22703f",
        "gpt-L1-d16-T4M-lr0.01-s0": "d1d1f60f343f",
        "gpt-L1-d16-T4M-lr0.02-s0": "7361d4d0c295",
    }
    # without the noise scale, the runs the sweep planned before it (the batch sweep's first keys)
    quiet = configs("batch", "cpu", Store(tmp_path), overrides={"batch_noise_batches": 0})
    assert {c.name: c.key for c in quiet if c.d_model == 16 and c.batch_size in (8, 32) and c.lr <= 0.03} == {
        "gpt-L1-d16-b8-T4M-lr0.005-s0": "721bf06221df",
        "gpt-L1-d16-b8-T4M-lr0.01-s0": "cee26dde17cb",
        "gpt-L1-d16-b8-T4M-lr0.02-s0": "955442924d24",
        "gpt-L1-d16-T4M-lr0.01-s0": "1cb01eace602",
        "gpt-L1-d16-T4M-lr0.02-s0": "7971918df3bc",
    }


def test_the_new_sweeps_cost_a_few_worker_hours(tmp_path, save_rule):
    save_rule()
    overfit, batch = configs("overfit", "cpu", Store(tmp_path)), configs("batch", "cpu", Store(tmp_path))
    tune = configs("tune", "cpu", Store(tmp_path))
    # each below the tuned ladder's first grid (itself about 20 worker-hours): a few hours, not a day
    assert cost(overfit) < 0.5 * cost(tune) and cost(batch) < 0.5 * cost(tune)
