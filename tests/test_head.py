"""The output layer's strategies (model.HEADS) and the chooser (head.choose_head).

The strategies must be the same math: equal losses and gradients to float tolerance. The chooser
must return a valid strategy, honour SCALING_LIB_HEAD, cache what it measured, leave the model and
the run's identity untouched, and a run's record must say which strategy trained it.
No timing is asserted here (how fast each strategy is belongs to the bench report).
"""
from __future__ import annotations

import json

import pytest
import torch

from scaling_lib import head as head_mod
from scaling_lib import model as model_mod
from scaling_lib.config import RunConfig
from scaling_lib.head import choose_head, time_heads
from scaling_lib.arch import build_model
from scaling_lib.model import HEADS

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _model(**kw):
    cfg = RunConfig(**{"n_layer": 2, "d_model": 32, "n_ctx": 64, "batch_size": 3, "tokenizer": "bpe4096", **kw})
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.n_ctx + 1), generator=g)
    return b[:, :-1], b[:, 1:]


def _loss_and_grads(m, x, y, head, **kw):
    m.head = head
    m.zero_grad(set_to_none=True)
    loss = m(x, y, **kw)
    grads = torch.autograd.grad(loss.sum(), list(m.parameters()))
    return loss.detach(), grads


@pytest.fixture
def head_cache(tmp_path, monkeypatch):
    """An empty cache directory and SCALING_LIB_HEAD unset (auto)."""
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCALING_LIB_HEAD", raising=False)
    return tmp_path / "cache"


# --- the strategies are the same math ----------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt", "lstm"])
@pytest.mark.parametrize("per_position", [False, True])
def test_every_head_gives_the_same_loss_and_gradients(arch, per_position):
    cfg, m = _model(arch=arch, n_ctx=100)  # 300 tokens: more than one chunk, the last a partial one
    assert cfg.batch_size * cfg.n_ctx > model_mod.CE_CHUNK and (cfg.batch_size * cfg.n_ctx) % model_mod.CE_CHUNK
    x, y = _batch(cfg)
    ref_loss, ref_grads = _loss_and_grads(m, x, y, "plain", per_position=per_position)
    for head in HEADS:
        loss, grads = _loss_and_grads(m, x, y, head, per_position=per_position)
        assert torch.allclose(loss, ref_loss, atol=1e-6, rtol=1e-6), head
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), head
    # and they are the whole-logits cross-entropy a plain loop computes
    full = torch.nn.functional.cross_entropy(m(x).reshape(-1, cfg.vocab), y.reshape(-1), reduction="none")
    expect = full.view(y.shape).mean(0) if per_position else full.mean()
    assert torch.allclose(ref_loss, expect.detach(), atol=1e-6)


def test_the_heads_agree_under_bf16_autocast():
    cfg, m = _model()
    x, y = _batch(cfg)
    losses = {}
    for head in HEADS:
        m.head = head
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses[head] = float(m(x, y).detach())
    assert max(losses.values()) - min(losses.values()) < 1e-2, losses


def test_without_gradients_the_head_changes_nothing():
    """Evaluation computes the loss in chunks whatever the head: bit for bit the same."""
    cfg, m = _model()
    x, y = _batch(cfg)
    with torch.no_grad():
        out = {}
        for head in HEADS:
            m.head = head
            out[head] = m(x, y, per_position=True)
    assert all(torch.equal(out[h], out["chunked"]) for h in HEADS)


def test_an_unknown_head_raises():
    cfg, m = _model()
    m.head = "fused"
    with pytest.raises(ValueError, match="head must be one of"):
        m(*_batch(cfg))
    with pytest.raises(ValueError, match="head must be one of"):
        head_mod.set_head(m, "fused")


# --- the chooser -------------------------------------------------------------------------------
def test_timing_leaves_the_model_as_it_was():
    cfg, m = _model()
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    times = time_heads(m, cfg, min_rounds=2, max_rounds=2)
    assert set(times) == set(HEADS) and all(len(t) == 2 and min(t) > 0 for t in times.values())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())
    assert m.head == model_mod.DEFAULT_HEAD and not m.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_auto_measures_then_caches(head_cache, monkeypatch):
    cfg, m = _model()
    info = choose_head(m, cfg)
    assert info["source"] == "measured" and info["strategy"] in HEADS and m.head == info["strategy"]
    assert set(info["s_per_pass"]) == set(HEADS) and info["strategy"] == min(info["s_per_pass"],
                                                                             key=info["s_per_pass"].get)
    json.dumps(info)  # JSON-ready, for the record's provenance
    stored = json.loads((head_cache / head_mod.CACHE_FILE).read_text())
    assert stored["version"] == head_mod.CACHE_VERSION
    (entry,) = stored["choices"].values()
    assert entry["strategy"] == info["strategy"] and entry["shape"] == head_mod.shape_key(cfg)

    def no_timing(*a, **kw):
        raise AssertionError("timed again")

    monkeypatch.setattr(head_mod, "time_heads", no_timing)
    _, m2 = _model()
    again = choose_head(m2, cfg)
    assert again["source"] == "cached" and again["strategy"] == info["strategy"] == m2.head
    assert again["s_per_pass"] == info["s_per_pass"]
    # another shape, or another machine, is measured afresh
    with pytest.raises(AssertionError, match="timed again"):
        choose_head(m2, cfg.replace(batch_size=2))
    monkeypatch.setattr(head_mod, "machine_key", lambda: "another machine")
    with pytest.raises(AssertionError, match="timed again"):
        choose_head(m2, cfg)


@pytest.mark.parametrize("fastest", HEADS)
def test_auto_takes_the_fastest_median(head_cache, monkeypatch, fastest):
    def fake(model, cfg, device, heads):
        # the fastest by median, though not in every round (one slow outlier)
        return {h: ([1.0, 1.0, 9.0] if h == fastest else [2.0, 0.5, 2.0]) for h in heads}

    monkeypatch.setattr(head_mod, "time_heads", fake)
    cfg, m = _model()
    info = choose_head(m, cfg, use_cache=False)
    assert info["strategy"] == fastest == m.head and info["s_per_pass"][fastest] == 1.0
    assert not (head_cache / head_mod.CACHE_FILE).exists()  # use_cache=False writes nothing


@pytest.mark.parametrize("pinned", HEADS)
def test_the_environment_pins_the_head(head_cache, monkeypatch, pinned):
    monkeypatch.setenv("SCALING_LIB_HEAD", pinned)
    monkeypatch.setattr(head_mod, "time_heads", lambda *a, **kw: pytest.fail("timed despite the pin"))
    cfg, m = _model()
    info = choose_head(m, cfg)
    assert info == dict(strategy=pinned, source="env", requested=pinned) and m.head == pinned
    assert not (head_cache / head_mod.CACHE_FILE).exists()


def test_a_bad_environment_value_raises(head_cache, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_HEAD", "fastest")
    cfg, m = _model()
    with pytest.raises(ValueError, match="SCALING_LIB_HEAD"):
        choose_head(m, cfg)


def test_off_the_cpu_nothing_is_timed(head_cache, monkeypatch):
    monkeypatch.setattr(head_mod, "time_heads", lambda *a, **kw: pytest.fail("timed off the CPU"))
    cfg, m = _model()
    info = choose_head(m, cfg, torch.device("cuda"))  # the device is only named, never used
    assert info["strategy"] == model_mod.DEFAULT_HEAD and info["source"] == "default"


def test_a_corrupt_cache_is_re_measured(head_cache):
    head_cache.mkdir(parents=True)
    (head_cache / head_mod.CACHE_FILE).write_text("{not json")
    cfg, m = _model()
    assert choose_head(m, cfg)["source"] == "measured"
    assert json.loads((head_cache / head_mod.CACHE_FILE).read_text())["choices"]


def test_the_choice_is_not_the_run_identity(head_cache, monkeypatch):
    cfg, m = _model()
    key, as_dict = cfg.key, cfg.to_dict()
    for pinned in HEADS:
        monkeypatch.setenv("SCALING_LIB_HEAD", pinned)
        choose_head(m, cfg)
        assert cfg.key == key and cfg.to_dict() == as_dict
    assert "head" not in as_dict


# --- a run records its strategy ------------------------------------------------------------------
def test_a_run_records_its_head(tiny_cfg, linked_cache, monkeypatch, tmp_path):
    from scaling_lib.train import train

    monkeypatch.delenv("SCALING_LIB_HEAD", raising=False)
    cfg = tiny_cfg(tokens=2_048, lr=1e-2)
    auto = train(cfg, progress=False, checkpoint_dir=tmp_path / "a")
    prov = auto["provenance"]["head"]
    assert prov["source"] == "measured" and prov["strategy"] in HEADS and set(prov["s_per_pass"]) == set(HEADS)
    assert (linked_cache / head_mod.CACHE_FILE).exists()
    # pinned to each strategy: the same run (same key), the same losses to float tolerance
    for pinned in HEADS:
        monkeypatch.setenv("SCALING_LIB_HEAD", pinned)
        rec = train(cfg, progress=False, checkpoint_dir=tmp_path / pinned)
        assert rec["provenance"]["head"] == dict(strategy=pinned, source="env", requested=pinned)
        assert rec["key"] == auto["key"] and rec["config"] == auto["config"]
        assert rec["final"]["val_loss"] == pytest.approx(auto["final"]["val_loss"], rel=1e-4)


class Interrupted(Exception):
    pass


def test_a_resumed_run_keeps_its_head(tiny_cfg, linked_cache, monkeypatch, tmp_path):
    from scaling_lib import train as train_mod

    monkeypatch.setattr(train_mod, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every step
    cfg = tiny_cfg(tokens=2_048)  # 16 steps
    real, calls = train_mod._train_step, [0]

    def flaky(*a, **kw):
        calls[0] += 1
        if calls[0] == 10:
            raise Interrupted
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "_train_step", flaky)
    monkeypatch.setenv("SCALING_LIB_HEAD", "plain")
    with pytest.raises(Interrupted):
        train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path)
    monkeypatch.setenv("SCALING_LIB_HEAD", "chunked")
    rec = train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["provenance"]["head"]["strategy"] == "plain"  # the strategy it began with
