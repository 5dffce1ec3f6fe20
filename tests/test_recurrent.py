"""The recurrent transformer (Kaplan et al. 2020, App. D.2, Fig. 17): N counts the shared blocks
once, the compute counts every use; n_recur = 1 is the GPT; it trains."""
from __future__ import annotations

import math

import pytest
import torch

from scaling_lib import arch, flops
from scaling_lib.arch import build_model
from scaling_lib.config import RunConfig
from scaling_lib.model import GPT, RecurrentGPT
from scaling_lib.train import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SHAPES = [
    dict(n_layer=1, d_model=8, n_ctx=32),
    dict(n_layer=2, d_model=24, n_ctx=64),
    dict(n_layer=3, d_model=64, n_ctx=16, d_ff=100),
    dict(n_layer=2, d_model=48, n_ctx=32, d_ff=48, n_head=4),
]


def _ut(n_recur: int, **kw) -> RunConfig:
    return RunConfig(arch="ut", n_recur=n_recur, **{"tokenizer": "bpe4096", **kw})


@pytest.mark.parametrize("kw", SHAPES)
@pytest.mark.parametrize("n_recur", [1, 2, 4])
def test_N_counts_the_shared_blocks_once(kw, n_recur):
    cfg = _ut(n_recur, **kw)
    plain = RunConfig(**{"tokenizer": "bpe4096", **kw})
    counted, total = arch.params_counted(cfg)
    assert cfg.N == counted == flops.N(flops.Shape.of(cfg)) == plain.N  # 2 d_model n_layer (2 d_attn + d_ff)
    assert total == arch.params_counted(plain)[1]  # not one parameter more than the GPT of its shape
    assert arch.uses(cfg) == n_recur


@pytest.mark.parametrize("kw", SHAPES)
@pytest.mark.parametrize("n_recur", [2, 3])
def test_the_compute_counts_every_use(kw, n_recur):
    cfg, one = _ut(n_recur, **kw), _ut(1, **kw)
    s = flops.Shape.of(cfg)
    table = flops.C_forward_table(s)
    blocks = sum(v for k, v in table.items() if k.startswith(("attention", "feed-forward")))
    exact = arch.get("ut").forward_flops(cfg)
    assert exact == table["embed"] + table["de-embed"] + n_recur * blocks
    assert exact == flops.C_forward_exact(arch.unrolled_shape(cfg))
    # Kaplan's C_forward ~ 2N + 2 n_layer n_ctx d_attn, with every reuse
    assert flops.C_forward(arch.unrolled_shape(cfg)) == n_recur * (2 * cfg.N + 2 * s.n_layer * s.n_ctx * s.d_attn)
    assert arch.train_flops_per_token(cfg) == 3 * exact
    assert arch.train_flops_per_token(cfg) - arch.train_flops_per_token(one) == 3 * (n_recur - 1) * blocks
    assert arch.C_train(cfg, 1e6) == 6 * cfg.N * n_recur * 1e6 and arch.C_train(one, 1e6) == 6 * cfg.N * 1e6


@pytest.mark.parametrize("kw", SHAPES[:3])
@pytest.mark.parametrize("n_recur", [1, 3])
def test_measured_forward_flops_count_every_use(kw, n_recur):
    cfg = _ut(n_recur, **kw)
    measured = arch.measured_forward_flops(cfg)
    assert measured == flops.C_forward_counted(arch.unrolled_shape(cfg))
    # the reused blocks n_recur times, the de-embedding once
    plain = arch.measured_forward_flops(RunConfig(**{"tokenizer": "bpe4096", **kw}))
    deembed = 2 * cfg.d_model * cfg.vocab
    assert measured - deembed == pytest.approx(n_recur * (plain - deembed))


def test_one_recurrence_is_the_gpt_parameter_for_parameter():
    kw = dict(n_layer=2, d_model=32, n_ctx=32)
    torch.manual_seed(0)
    ut = build_model(_ut(1, **kw))
    torch.manual_seed(0)
    gpt = build_model(RunConfig(tokenizer="bpe4096", **kw))
    assert isinstance(ut, RecurrentGPT) and isinstance(gpt, GPT)
    a, b = dict(ut.named_parameters()), dict(gpt.named_parameters())
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert all(torch.equal(a[k], b[k]) for k in a)
    idx = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ut(idx), gpt(idx))


def test_the_residual_projections_are_scaled_by_the_unrolled_depth():
    torch.manual_seed(0)
    m = build_model(_ut(4, n_layer=2, d_model=64, n_ctx=32))
    scaled = 0.02 / math.sqrt(2 * 2 * 4)
    assert m.blocks[0].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert m.blocks[1].ff[2].weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert m.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_the_reused_blocks_are_applied_n_recur_times_and_stay_causal():
    cfg = _ut(3, n_layer=2, d_model=16, n_ctx=32)
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    calls = []
    for i, block in enumerate(m.blocks):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    idx = torch.randint(0, cfg.vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 20] = (changed[:, 20] + 1) % cfg.vocab
    with torch.no_grad():
        a, b = m(idx), m(changed)
    assert calls == [0, 1] * 3 * 2  # the stack, three times, for each of the two calls
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6) and not torch.allclose(a[:, 20:], b[:, 20:], atol=1e-6)


def test_the_config_of_a_recurrent_run():
    cfg = _ut(4, n_layer=2, d_model=48, tokens=8_000_000, lr=0.0111)
    assert cfg.name == "ut-L2-d48-r4-T8M-lr0.0111-s0"
    assert cfg.key != cfg.replace(n_recur=2).key != _ut(1, n_layer=2, d_model=48).key
    assert _ut(1, n_layer=2, d_model=48).key != RunConfig(n_layer=2, d_model=48).key  # another architecture
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="n_recur must be 1.*'ut'"):
        RunConfig(n_recur=2)  # the gpt reuses nothing
    with pytest.raises(ValueError, match="n_recur must be 1"):
        RunConfig(arch="lstm", n_recur=2)
    with pytest.raises(ValueError, match="at least 1"):
        _ut(0)


def test_a_recurrent_transformer_trains_on_the_tiny_corpus(tiny_cfg, tmp_path):
    cfg = tiny_cfg(arch="ut", n_recur=2, n_layer=1, tokens=4_096, lr=1e-2)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "ok" and rec["name"].startswith("ut-L1-d16-r2-")
    assert rec["N"] == rec["params_counted"] == cfg.N == RunConfig(d_model=16, n_layer=1).N
    curve = rec["curve"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] - 0.5
    assert rec["C"] == 6 * cfg.N * 2 * rec["tokens"]  # every use of the shared blocks
    assert rec["C_exact"] == pytest.approx(arch.train_flops_per_token(cfg) * rec["tokens"])
    assert all(p["C"] == 6 * cfg.N * 2 * p["tokens"] for p in curve)
