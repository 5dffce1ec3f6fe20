"""The depth sweep ('Depth costs time'): shapes at a fixed size, every depth with every seed, at the rule's rate."""
from __future__ import annotations

import pytest

from scaling_lib import flops
from scaling_lib.config import EVAL_VERSION
from scaling_lib.plans import PROFILES, MissingRule, configs, cost, rule_lr
from scaling_lib.store import Store


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_every_depth_at_every_size_with_every_seed(tmp_path, name, save_rule):
    save_rule(a=-0.45, b=0.02)
    p, store = PROFILES[name], Store(tmp_path)
    cfgs = configs("depth", name, store)
    assert len(cfgs) == len(p["depth_sizes"]) * len(p["depth_layers"]) * len(p["depth_seeds"])
    assert len({c.key for c in cfgs}) == len(cfgs)
    for N in p["depth_sizes"]:
        shapes = flops.shapes_at_fixed_N(N, p["depth_layers"], head_size=p["depth_head_size"], n_ctx=p["n_ctx"])
        for s in shapes:
            runs = [c for c in cfgs if (c.n_layer, c.d_model) == (s["n_layer"], s["d_model"])]
            assert sorted(c.seed for c in runs) == sorted(p["depth_seeds"])
            assert len({c.lr for c in runs}) == 1  # the seeds differ in nothing else
            assert all(c.d_model // c.n_head == p["depth_head_size"] for c in runs)
            assert runs[0].lr == rule_lr(p, store, runs[0].N, p["depth_tokens"], "depth")
    assert all(c.sweep == "depth" and c.tokens == p["depth_tokens"] and c.eval_version == EVAL_VERSION
               and c.schedule == "wsd" for c in cfgs)
    first = len(cfgs) // len(p["depth_seeds"])
    assert {c.seed for c in cfgs[:first]} == {p["depth_seeds"][0]}  # a first seed of every shape before a second


def test_the_cpu_depths_stay_near_their_size_and_the_sweep_waits_for_the_rule(tmp_path, save_rule):
    with pytest.raises(MissingRule):
        configs("depth", "cpu", Store(tmp_path))
    save_rule(a=-0.45, b=0.02)
    cfgs = configs("depth", "cpu", Store(tmp_path))
    for target in PROFILES["cpu"]["depth_sizes"]:
        near = [c for c in cfgs if abs(c.N / target - 1) < 0.15]
        assert {c.n_layer for c in near} == set(PROFILES["cpu"]["depth_layers"]), target
    assert 5e8 < cost(cfgs) < 1.2e9  # about 5 worker-hours at the stored runs' 2.1e-5 s a unit
    assert "depth" not in {c.sweep for c in configs("all", "cpu", Store(tmp_path / "none"))}
