"""The models: shapes, initial loss, the chunked cross-entropy, causality, LSTM, parameter counts."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scaling_lib import model as model_mod
from scaling_lib.config import RunConfig
from scaling_lib.arch import build_model
from scaling_lib.model import GPT, LSTMLM

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _gpt(**kw) -> tuple[RunConfig, GPT]:
    cfg = RunConfig(**{"n_layer": 2, "d_model": 32, "n_ctx": 64, "tokenizer": "bpe4096", **kw})
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _tokens(B, T, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g)


def test_gpt_output_shapes():
    cfg, m = _gpt()
    assert isinstance(m, GPT)
    idx = _tokens(3, 20, cfg.vocab)
    logits = m(idx)
    assert logits.shape == (3, 20, cfg.vocab)
    loss = m(idx, _tokens(3, 20, cfg.vocab, 1))
    assert loss.shape == () and torch.isfinite(loss)
    pos = m(idx, _tokens(3, 20, cfg.vocab, 1), per_position=True)
    assert pos.shape == (20,)
    assert torch.allclose(pos.mean(), loss, atol=1e-6)


def test_longer_than_n_ctx_raises():
    cfg, m = _gpt(n_ctx=16)
    with pytest.raises(ValueError, match="longer than n_ctx"):
        m(_tokens(1, 17, cfg.vocab))


@pytest.mark.parametrize("d_model, tokenizer", [(16, "bpe4096"), (64, "bpe4096"), (256, "bpe4096"), (32, "byte")])
def test_initial_loss_is_near_ln_vocab(d_model, tokenizer):
    cfg, m = _gpt(d_model=d_model, tokenizer=tokenizer, n_layer=2, n_ctx=32)
    with torch.no_grad():
        loss = float(m(_tokens(8, 32, cfg.vocab), _tokens(8, 32, cfg.vocab, 1)))
    assert abs(loss - math.log(cfg.vocab)) < 0.3, (loss, math.log(cfg.vocab))


def test_initialisation():
    cfg, m = _gpt(n_layer=4, d_model=64)
    assert m.wte.weight.std().item() == pytest.approx(model_mod.INIT_STD, rel=0.05)
    assert m.blocks[0].attn.qkv.weight.std().item() == pytest.approx(model_mod.INIT_STD, rel=0.05)
    scaled = model_mod.INIT_STD / math.sqrt(2 * cfg.n_layer)  # residual projections scaled by depth (GPT-2)
    assert m.blocks[0].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert m.blocks[0].ff[2].weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert float(m.blocks[0].ff[0].bias.detach().abs().max()) == 0.0
    # tied de-embedding: no separate output matrix
    assert sum(p.numel() for n, p in m.named_parameters() if p.dim() == 2 and p.shape[0] == cfg.vocab) == \
        cfg.vocab * cfg.d_model


@pytest.mark.parametrize("grad", [False, True])
def test_chunked_loss_equals_full_cross_entropy(grad):
    cfg, m = _gpt(n_ctx=128)
    B, T = 3, 128  # 384 tokens > CE_CHUNK: several chunks, the last a partial one
    assert B * T > model_mod.CE_CHUNK and (B * T) % model_mod.CE_CHUNK
    idx, tgt = _tokens(B, T, cfg.vocab), _tokens(B, T, cfg.vocab, 1)
    with torch.set_grad_enabled(grad):
        chunked = m(idx, tgt)
        per_pos = m(idx, tgt, per_position=True)
    full_logits = m(idx)
    full = F.cross_entropy(full_logits.reshape(-1, cfg.vocab), tgt.reshape(-1))
    assert abs(float(chunked.detach()) - float(full.detach())) < 1e-5
    full_pos = F.cross_entropy(full_logits.reshape(-1, cfg.vocab), tgt.reshape(-1), reduction="none").view(B, T).mean(0)
    assert torch.allclose(per_pos.detach(), full_pos.detach(), atol=1e-5)
    if grad:  # the checkpointed chunks give the same gradients as the whole logits
        g_chunked = torch.autograd.grad(chunked, list(m.parameters()))
        g_full = torch.autograd.grad(full, list(m.parameters()))
        for a, b in zip(g_chunked, g_full):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_gpt_is_causal():
    cfg, m = _gpt(n_ctx=32)
    m.eval()
    idx = _tokens(2, 32, cfg.vocab)
    changed = idx.clone()
    changed[:, 20] = (changed[:, 20] + 1) % cfg.vocab
    with torch.no_grad():
        a, b = m(idx), m(changed)
    assert torch.equal(a[:, :20], b[:, :20]) or torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
    assert not torch.allclose(a[:, 20:], b[:, 20:], atol=1e-6)


def test_lstm_works_and_is_causal():
    cfg = RunConfig(arch="lstm", n_layer=2, d_model=16, tokenizer="bpe4096")
    torch.manual_seed(0)
    m = build_model(cfg)
    assert isinstance(m, LSTMLM)
    idx, tgt = _tokens(2, 40, cfg.vocab), _tokens(2, 40, cfg.vocab, 1)
    assert m(idx).shape == (2, 40, cfg.vocab)
    loss = m(idx, tgt)
    assert abs(float(loss.detach()) - math.log(cfg.vocab)) < 0.3
    assert m(idx, tgt, per_position=True).shape == (40,)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    changed = idx.clone()
    changed[:, 30] = (changed[:, 30] + 1) % cfg.vocab
    with torch.no_grad():
        a, b = m(idx), m(changed)
    assert torch.allclose(a[:, :30], b[:, :30], atol=1e-6) and not torch.allclose(a[:, 30:], b[:, 30:])


@pytest.mark.parametrize("kw", [
    dict(n_layer=1, d_model=8), dict(n_layer=2, d_model=24), dict(n_layer=3, d_model=64, d_ff=100),
    dict(n_layer=4, d_model=96, n_head=12), dict(n_layer=2, d_model=61, d_ff=488),
    dict(arch="lstm", n_layer=1, d_model=16), dict(arch="lstm", n_layer=2, d_model=32),
])
def test_n_params_non_embedding_equals_config_N(kw):
    cfg = RunConfig(n_ctx=64, **kw)
    m = build_model(cfg)
    assert m.n_params(non_embedding=True) == cfg.N
    assert m.n_params(non_embedding=False) > cfg.N + cfg.vocab * cfg.d_model - 1


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    cfg, m = _gpt(n_ctx=32)
    idx, tgt = _tokens(4, 32, cfg.vocab), _tokens(4, 32, cfg.vocab, 1)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    before = float(m(idx, tgt).detach())
    for _ in range(5):
        opt.zero_grad()
        m(idx, tgt).backward()
        opt.step()
    assert float(m(idx, tgt).detach()) < before - 0.5


# --- dropout (Kaplan §4: 10%) ----------------------------------------------------------------
@pytest.mark.parametrize("arch_kw", [dict(), dict(arch="ut", n_recur=2)])
def test_without_dropout_training_mode_computes_what_evaluation_does_and_draws_nothing(arch_kw):
    """At dropout 0 (every stored run) the model is the one before dropout existed: the training
    mode is the evaluation mode bit for bit, and no random numbers are drawn (the run's trajectory
    depends on torch's random state through nothing else)."""
    cfg, m = _gpt(n_ctx=32, **arch_kw)
    idx, tgt = _tokens(2, 32, cfg.vocab), _tokens(2, 32, cfg.vocab, 1)
    rng = torch.get_rng_state()
    m.train()
    loss_train = m(idx, tgt)
    g_train = torch.autograd.grad(loss_train, list(m.parameters()))
    assert torch.equal(torch.get_rng_state(), rng)
    m.eval()
    loss_eval = m(idx, tgt)
    g_eval = torch.autograd.grad(loss_eval, list(m.parameters()))
    assert torch.equal(loss_train, loss_eval) and all(torch.equal(a, b) for a, b in zip(g_train, g_eval))


@pytest.mark.parametrize("arch_kw", [dict(), dict(arch="ut", n_recur=2)])
def test_dropout_acts_in_training_mode_only(arch_kw):
    cfg0, m0 = _gpt(n_ctx=32, **arch_kw)
    cfg, m = _gpt(n_ctx=32, dropout=0.1, **arch_kw)
    # the same parameters under the same seed, with the same names: dropout adds no weights
    assert list(m.state_dict()) == list(m0.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m0.state_dict().values()))
    assert m.n_params() == m0.n_params() == cfg.N
    idx, tgt = _tokens(2, 32, cfg.vocab), _tokens(2, 32, cfg.vocab, 1)
    m.train()
    a, b = m(idx, tgt), m(idx, tgt)
    assert not torch.equal(a, b)  # a new mask at every call
    torch.manual_seed(5)
    c = m(idx, tgt)
    torch.manual_seed(5)
    assert torch.equal(c, m(idx, tgt))  # drawn from torch's random state: a seed repeats it
    m.eval()
    m0.eval()
    with torch.no_grad():
        e1, e2, e0 = m(idx, tgt), m(idx, tgt), m0(idx, tgt)
        logits, logits0 = m(idx), m0(idx)
    assert torch.equal(e1, e2) and torch.equal(e1, e0) and torch.equal(logits, logits0)
