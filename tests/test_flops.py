"""Counting (Kaplan et al. 2020, Table 1) against the instantiated model and torch's FLOP counter."""
from __future__ import annotations

import pytest

from scaling_lib import flops
from scaling_lib.arch import measured_forward_flops, params_counted
from scaling_lib.config import RunConfig
from scaling_lib.flops import (
    C_forward,
    C_forward_counted,
    C_forward_exact,
    C_forward_table,
    C_train,
    N,
    N_embedding,
    N_total,
    Shape,
    count,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SHAPES = [
    dict(n_layer=1, d_model=8, n_ctx=32),
    dict(n_layer=2, d_model=24, n_ctx=64),
    dict(n_layer=3, d_model=64, n_ctx=16, d_ff=100),  # d_ff != 4 d_model
    dict(n_layer=4, d_model=61, n_ctx=16, d_ff=488),
    dict(n_layer=2, d_model=48, n_ctx=32, d_ff=48, n_head=4),
    dict(n_layer=1, d_model=32, n_ctx=8, tokenizer="byte"),
]


def _cfg(kw) -> RunConfig:
    return RunConfig(**{"tokenizer": "bpe4096", **kw})


@pytest.mark.parametrize("kw", SHAPES)
def test_N_matches_the_model_and_the_config(kw):
    cfg = _cfg(kw)
    s = Shape.of(cfg)
    assert s.d_ff == cfg.d_ff and s.d_attn == cfg.d_model and s.vocab == cfg.vocab
    counted, total = params_counted(cfg)
    assert N(s) == counted == cfg.N
    # the model's total differs from Table 1's N_total only by the biases and the layer norms
    L, d, f = cfg.n_layer, cfg.d_model, cfg.d_ff
    biases = L * (3 * d + d + f + d)  # qkv, attention projection, feed-forward in and out
    norms = L * 2 * (2 * d) + 2 * d  # two layer norms a block (weight and bias) and the final one
    assert total - N_total(s) == biases + norms


@pytest.mark.parametrize("kw", SHAPES)
def test_measured_forward_flops_equal_the_counted_rows_exactly(kw):
    cfg = _cfg(kw)
    s = Shape.of(cfg)
    assert measured_forward_flops(cfg) == C_forward_counted(s)
    assert measured_forward_flops(cfg, batch_size=2) == C_forward_counted(s)  # per token, whatever the batch


@pytest.mark.parametrize("kw", SHAPES)
def test_C_forward_is_2N_plus_the_attention_mask(kw):
    s = Shape.of(_cfg(kw))
    assert C_forward(s) == 2 * N(s) + 2 * s.n_layer * s.n_ctx * s.d_attn
    t = C_forward_table(s)
    assert C_forward_exact(s) == sum(t.values())
    assert C_forward_exact(s) == C_forward(s) + t["embed"] + t["de-embed"]
    assert C_forward_counted(s) == C_forward_exact(s) - t["embed"] - t["attention: mask"]
    assert C_forward_counted(s) == 2 * N(s) + 2 * s.d_model * s.vocab


def test_table1_by_hand():
    s = Shape(n_layer=2, d_model=64, n_ctx=128, vocab=4096)
    assert (s.d_ff, s.d_attn) == (256, 64)
    assert N(s) == 12 * 2 * 64**2 == 98_304
    assert N_embedding(s) == (4096 + 128) * 64
    assert N_total(s) == N(s) + N_embedding(s)
    t = C_forward_table(s)
    assert t == {"embed": 256, "attention: QKV": 2 * 2 * 64 * 192, "attention: mask": 2 * 2 * 128 * 64,
                 "attention: project": 2 * 2 * 64 * 64, "feed-forward": 2 * 2 * 2 * 64 * 256, "de-embed": 2 * 64 * 4096}
    assert C_forward(s) == 2 * 98_304 + 2 * 2 * 128 * 64
    assert C_train(98_304, 1e6) == 6 * 98_304 * 1e6
    c = count(s)
    assert c["N"] == N(s) and c["C_forward_exact"] == C_forward_exact(s) and c["d_ff"] == 256
    assert c["share_missed_by_2N"] == pytest.approx(1 - 2 * N(s) / C_forward_exact(s))
    assert 0 < c["share_missed_by_2N"] < 1
    # explicit d_attn enters N and the attention rows
    s2 = Shape(n_layer=1, d_model=64, n_ctx=16, vocab=256, d_attn=32)
    assert N(s2) == 2 * 64 * (2 * 32 + 256)


@pytest.mark.parametrize("kw", [dict(n_layer=0), dict(d_model=0), dict(n_ctx=-1), dict(vocab=0), dict(d_ff=-1),
                                dict(d_attn=-2)])
def test_invalid_shapes_raise(kw):
    with pytest.raises(ValueError):
        Shape(**{"n_layer": 1, "d_model": 8, "n_ctx": 8, "vocab": 256, **kw})


def test_pf_day():
    assert flops.PF_DAY == 1e15 * 86400
