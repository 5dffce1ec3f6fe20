"""RunConfig: stable keys, resolved defaults, validation, replace/from_dict, profiles."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from scaling_lib.config import RunConfig, default_warmup, vocab_size
from scaling_lib.laws import lr_rule_kaplan
from scaling_lib.plans import LR_PILOT, PROFILES, lr_rule_pilot, profile


# --- the key ---------------------------------------------------------------------------------
def test_key_is_stable_and_ignores_the_sweep():
    a = RunConfig(n_layer=2, d_model=64, lr=3e-3)
    b = RunConfig(n_layer=2, d_model=64, lr=3e-3)
    assert a == b and a.key == b.key
    assert len(a.key) == 12 and all(c in "0123456789abcdef" for c in a.key)
    assert a.replace(sweep="elsewhere").key == a.key
    assert RunConfig(sweep="lr").key == RunConfig(sweep="ladder").key


@pytest.mark.parametrize("change", [dict(lr=1e-2), dict(seed=1), dict(n_layer=3), dict(tokens=1_000_000),
                                    dict(batch_size=16), dict(corpus="tiny"), dict(schedule="wsd"),
                                    dict(device="cuda"), dict(data_tokens=1000), dict(weight_decay=0.0)])
def test_key_changes_with_what_is_trained(change):
    base = RunConfig()
    assert base.replace(**change).key != base.key


def test_key_is_the_same_in_another_process():
    """The key is a hash of sorted JSON, not of Python's per-process salted hash()."""
    cfg = RunConfig(n_layer=3, d_model=48, lr=0.0111, budgets=(), tokens=123_456)
    code = ("from scaling_lib.config import RunConfig;"
            "print(RunConfig(n_layer=3, d_model=48, lr=0.0111, tokens=123456).key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout.strip()
    assert out == cfg.key


def test_key_is_a_hash_of_the_resolved_config_without_sweep():
    import hashlib

    from scaling_lib.config import INTRODUCED

    cfg = RunConfig(d_model=96)
    d = cfg.to_dict()
    del d["sweep"]
    for k, v in INTRODUCED.items():  # a field at the value it was introduced with stays out
        if d[k] == v:
            del d[k]
    assert "n_recur" not in d and "eval_per_position" not in d and "dropout" not in d and "noise_batches" not in d
    assert d["eval_version"] == 2
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert cfg.key == hashlib.sha256(blob.encode()).hexdigest()[:12]
    # the key names resolved values: spelling a default out gives the same run
    assert RunConfig(d_model=96, n_head=3, d_ff=384).key == cfg.key


# --- resolved defaults -----------------------------------------------------------------------
@pytest.mark.parametrize("d_model, n_head", [(8, 1), (16, 1), (24, 1), (48, 1), (64, 2), (96, 3), (128, 4),
                                             (160, 5), (46, 1), (61, 1), (112, 2)])
def test_default_heads_are_about_32_channels_and_divide_d_model(d_model, n_head):
    cfg = RunConfig(d_model=d_model)
    assert cfg.n_head == n_head
    assert d_model % cfg.n_head == 0


def test_default_d_ff_and_warmup_are_resolved():
    cfg = RunConfig(n_layer=2, d_model=64, tokens=2_000_000)
    assert cfg.d_ff == 256
    assert cfg.N == 12 * 2 * 64**2
    assert cfg.warmup_tokens == default_warmup(cfg.N, cfg.tokens) == 98_304  # N tokens, between 1% and 10%
    # warmup: at least 1% and at most 10% of the (shortest) budget
    assert RunConfig(n_layer=1, d_model=8, tokens=10_000_000).warmup_tokens == 100_000
    assert RunConfig(n_layer=4, d_model=128, tokens=1_000_000).warmup_tokens == 100_000
    wsd = RunConfig(n_layer=1, d_model=8, tokens=8_000_000, schedule="wsd", budgets=(2_000_000, 1_000_000))
    assert wsd.budgets == (1_000_000, 2_000_000)  # sorted
    assert wsd.shortest_budget == 1_000_000 and wsd.all_budgets == (1_000_000, 2_000_000, 8_000_000)
    assert wsd.warmup_tokens == 10_000  # 1% of the shortest budget
    assert RunConfig(warmup_tokens=5).warmup_tokens == 5  # an explicit value is kept


def test_derived_quantities():
    cfg = RunConfig(n_layer=3, d_model=64, d_ff=100, n_ctx=128, batch_size=32, tokens=1_000_000)
    assert cfg.N == 2 * 3 * 64 * (2 * 64 + 100)
    assert cfg.tokens_per_step == 4096 and cfg.steps == 1_000_000 // 4096
    assert RunConfig(arch="lstm", n_layer=2, d_model=32).N == 8 * 2 * 32**2
    assert RunConfig(tokenizer="byte").vocab == 256 and RunConfig(tokenizer="bpe50257").vocab == 50257
    assert RunConfig(tokens=10, batch_size=32, n_ctx=128).steps == 1  # at least one step


def test_name_shows_the_shape_and_run():
    assert RunConfig(n_layer=2, d_model=48, tokens=8_000_000, lr=0.0111).name == "gpt-L2-d48-T8M-lr0.0111-s0"
    assert "-ff96-" in RunConfig(n_layer=4, d_model=96, d_ff=96).name
    assert "-h12-" in RunConfig(n_layer=4, d_model=96, n_head=12).name
    assert "-D65.54k-" in RunConfig(data_tokens=65_536).name
    assert "-drop0.1-" in RunConfig(dropout=0.1).name and "drop" not in RunConfig().name
    assert "-b128-" in RunConfig(batch_size=128).name and "-b" not in RunConfig().name


# --- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words", [
    (dict(arch="rnn"), ["arch", "rnn"]),
    (dict(tokenizer="gpt2"), ["tokenizer", "gpt2"]),
    (dict(tokenizer="bpe100"), ["tokenizer", "257"]),
    (dict(tokenizer="bpe70000"), ["tokenizer", "65535"]),
    (dict(schedule="linear"), ["schedule", "linear"]),
    (dict(dtype="fp16"), ["dtype", "fp16"]),
    (dict(device="tpu"), ["device", "tpu"]),
    (dict(budgets=(1000,)), ["wsd"]),
    (dict(schedule="wsd", budgets=(5_000_000,), tokens=2_000_000), ["below tokens"]),
    (dict(schedule="wsd", budgets=(0,)), ["below tokens"]),
    (dict(d_model=64, n_head=3), ["not divisible", "64", "3"]),
    (dict(d_model=8, n_head=16), ["not divisible"]),
    (dict(n_layer=0), ["n_layer", "positive"]),
    (dict(d_model=-4), ["d_model", "positive"]),
    (dict(n_ctx=0), ["n_ctx"]),
    (dict(batch_size=0), ["batch_size"]),
    (dict(tokens=0), ["tokens"]),
    (dict(lr=0.0), ["lr"]),
    (dict(lr=math.nan), ["lr"]),
    (dict(lr=math.inf), ["lr"]),
])
def test_invalid_configs_raise_a_clear_value_error(kw, words):
    with pytest.raises(ValueError) as e:
        RunConfig(**kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("kw, words", [
    (dict(dropout=-0.1), ["dropout", "-0.1", "below 1"]),
    (dict(dropout=1.0), ["dropout", "1.0", "below 1"]),
    (dict(dropout=1.5), ["dropout", "1.5"]),
    (dict(dropout=math.nan), ["dropout", "nan"]),
    (dict(arch="lstm", dropout=0.1), ["dropout", "lstm", "gpt"]),
    (dict(noise_batches=-1), ["noise_batches", "-1", "at least 0"]),
    (dict(noise_batches=1.5), ["noise_batches", "1.5", "whole number"]),
    (dict(noise_batches=2.0), ["noise_batches", "2.0", "whole number"]),
    (dict(noise_batches="2"), ["noise_batches", "'2'"]),
    (dict(noise_batches=True), ["noise_batches", "True"]),
    (dict(noise_batches=2, batch_size=1), ["noise_batches", "batch_size 1", "at least 2"]),
])
def test_a_bad_dropout_or_noise_batches_is_a_clear_error_at_creation(kw, words):
    with pytest.raises(ValueError) as e:
        RunConfig(**kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_dropout_enters_the_key_only_when_set():
    base = RunConfig()
    assert RunConfig(dropout=0.0).key == RunConfig(dropout=0).key == base.key  # the value every stored run had
    assert base.replace(dropout=0.1).key != base.key != base.replace(dropout=0.2).key
    assert base.replace(dropout=0.1).key != base.replace(dropout=0.2).key
    assert RunConfig(dropout=0).dropout == 0.0 and isinstance(RunConfig(dropout=0).dropout, float)
    assert RunConfig(arch="ut", n_recur=2, dropout=0.1).dropout == 0.1  # the recurrent transformer takes it too
    d = base.replace(dropout=0.1).to_dict()
    assert RunConfig.from_stored(json.loads(json.dumps(d))) == base.replace(dropout=0.1)
    del d["dropout"]  # a record filed before the field existed ran without dropout
    assert RunConfig.from_stored(d).dropout == 0.0


def test_noise_batches_enters_the_key_only_when_set_and_leaves_the_name():
    """Measuring B_simple changes the record (not the training): a run of its own, under the same name."""
    base = RunConfig()
    assert base.noise_batches == 0 and RunConfig(noise_batches=0).key == base.key
    assert base.replace(noise_batches=2).key != base.key != base.replace(noise_batches=1).key
    assert base.replace(noise_batches=1).key != base.replace(noise_batches=2).key
    assert base.replace(noise_batches=2).name == base.name
    assert RunConfig(batch_size=1).noise_batches == 0  # off, a batch of one sequence is fine
    d = base.replace(noise_batches=2).to_dict()
    assert RunConfig.from_stored(json.loads(json.dumps(d))) == base.replace(noise_batches=2)
    del d["noise_batches"]  # a record filed before the field existed measured nothing
    assert RunConfig.from_stored(d).noise_batches == 0 and RunConfig.from_stored(d).key == base.key


@pytest.mark.parametrize("kw", [dict(n_head=-2), dict(d_ff=-8), dict(data_tokens=-5)])
def test_negative_shape_fields_are_rejected(kw):
    with pytest.raises(ValueError):
        RunConfig(**kw)


def test_vocab_size():
    assert vocab_size("byte") == 256 and vocab_size("bpe4096") == 4096 and vocab_size("bpe257") == 257
    for bad in ("bpe", "bpe256", "bpe65536", "bpeX", "BPE4096", "byte2"):
        with pytest.raises(ValueError, match="unknown tokenizer"):
            vocab_size(bad)


# --- replace / from_dict ---------------------------------------------------------------------
def test_replace_re_resolves_derived_defaults():
    cfg = RunConfig(n_layer=2, d_model=64, tokens=2_000_000)
    wider = cfg.replace(d_model=128)
    assert (wider.n_head, wider.d_ff) == (4, 512)
    assert wider.warmup_tokens == default_warmup(wider.N, wider.tokens)
    assert wider == RunConfig(n_layer=2, d_model=128, tokens=2_000_000)
    longer = cfg.replace(tokens=20_000_000)
    assert longer.warmup_tokens == default_warmup(cfg.N, 20_000_000) != cfg.warmup_tokens
    deeper = cfg.replace(n_layer=4)
    assert deeper.warmup_tokens == default_warmup(deeper.N, deeper.tokens)
    wsd = cfg.replace(schedule="wsd", budgets=[500_000])
    assert wsd.budgets == (500_000,) and wsd.warmup_tokens == default_warmup(cfg.N, 500_000)
    # explicit values given with the change win
    assert cfg.replace(d_model=96, n_head=2, d_ff=100).n_head == 2
    assert cfg.replace(d_model=96, d_ff=100).d_ff == 100
    assert cfg.replace(tokens=4_000_000, warmup_tokens=7).warmup_tokens == 7
    # a change that does not touch the shape or the budget keeps everything else
    other = cfg.replace(lr=0.01, seed=3)
    assert (other.lr, other.seed, other.warmup_tokens, other.d_ff) == (0.01, 3, cfg.warmup_tokens, cfg.d_ff)
    assert cfg.lr == 3e-3  # frozen: replace returns a new config


def test_replace_validates():
    with pytest.raises(ValueError, match="not divisible"):
        RunConfig(d_model=64).replace(n_head=5)
    with pytest.raises(ValueError, match="unknown config field"):
        RunConfig().replace(learning_rate=1.0)


def test_to_dict_from_dict_round_trip_through_json():
    cfg = RunConfig(sweep="ladder", n_layer=2, d_model=24, schedule="wsd", tokens=8_000_000,
                    budgets=(1_000_000, 2_000_000), lr=0.0244, corpus="tiny")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["budgets"] == [1_000_000, 2_000_000]
    back = RunConfig.from_dict(d)
    assert back == cfg and back.key == cfg.key and back.sweep == "ladder"


def test_from_dict_rejects_unknown_fields():
    d = RunConfig().to_dict()
    d.update(attn_pdrop=0.1, heads=4)
    with pytest.raises(ValueError, match="unknown config field.*attn_pdrop, heads"):
        RunConfig.from_dict(d)


def test_frozen():
    with pytest.raises(Exception):
        RunConfig().lr = 1.0  # type: ignore[misc]


# --- rules and profiles ----------------------------------------------------------------------
def test_lr_rules():
    assert lr_rule_kaplan(1e6) == pytest.approx(0.003239 - 0.0001395 * math.log(1e6))
    assert lr_rule_pilot(10.0) == 0.1  # capped
    assert lr_rule_pilot(1e5) == pytest.approx(5.6 * 1e5**-0.57)
    assert lr_rule_pilot(1e6) < lr_rule_pilot(1e5)
    # the numbers a chapter quotes are the rule's own: its exponent read off two sizes below the cap
    assert math.log(lr_rule_pilot(2e5) / lr_rule_pilot(1e5)) / math.log(2) == pytest.approx(LR_PILOT["exponent"])
    assert LR_PILOT == dict(A=5.6, exponent=-0.57, cap=0.1)


def test_profiles():
    assert set(PROFILES) >= {"smoke", "book", "cpu", "gpu"}
    assert profile("smoke") == PROFILES["smoke"]
    assert profile("book")["train_missing"] is False and profile("cpu")["train_missing"] is True
    assert profile("gpu")["device"] == "cuda" and profile("smoke")["corpus"] == "tiny"
    for name, p in PROFILES.items():
        # every profile builds valid configs for its grid
        for n_layer, d_model in p["ladder"]:
            RunConfig(corpus=p["corpus"], device=p["device"], n_layer=n_layer, d_model=d_model, n_ctx=p["n_ctx"],
                      batch_size=p["batch_size"], tokens=p["tokens"], budgets=p["budgets"], schedule="wsd")
        for shape in p["shapes"]:
            RunConfig(**shape)
        assert all(0 < b < p["tokens"] for b in p["budgets"]), name


def test_profile_overrides_replace_entries_of_a_copy():
    p = profile("book", {"long_max_N": 0})
    assert p["long_max_N"] == 0 and PROFILES["book"]["long_max_N"] > 0  # the profile itself is untouched
    assert {k: v for k, v in p.items() if k != "long_max_N"} == {k: v for k, v in PROFILES["book"].items()
                                                                 if k != "long_max_N"}
    with pytest.raises(ValueError, match="profile 'book' has no entry 'lots'"):
        profile("book", {"lots": 1})


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError) as e:
        profile("huge")
    assert "huge" in str(e.value)
    for name in PROFILES:
        assert name in str(e.value)


def test_fig5_shapes_hold_n_nearly_fixed():
    from scaling_lib.plans import SHAPES_FIG5

    cfgs = [RunConfig(**s) for s in SHAPES_FIG5]
    depth_and_ff = [c.N for c in cfgs if c.n_head == RunConfig(d_model=c.d_model).n_head]
    assert len(depth_and_ff) == 10 and max(depth_and_ff) / min(depth_and_ff) < 1.05  # N ~ 3e5
    heads = [c for c in cfgs if c.n_head != RunConfig(d_model=c.d_model).n_head]
    assert {c.N for c in heads} == {12 * 4 * 96**2}  # the head sweep changes nothing but the heads
    assert {c.n_head for c in heads} >= {1, 2, 6, 12}


# --- keys that survive new fields ------------------------------------------------------------
def _stored_records():
    from scaling_lib.store import DEFAULT_ROOT, Store

    return Store(DEFAULT_ROOT).records()


def test_every_stored_key_is_recomputed_from_its_config():
    records = _stored_records()
    assert len(records) >= 132
    assert all(RunConfig.from_stored(r["config"]).key == r["key"] for r in records)
    # the runs stored before the eval_version field existed (no schema entry) read as the first evaluation
    first = [r for r in records if "schema" not in r]
    assert len(first) == 132 and {RunConfig.from_stored(r["config"]).eval_version for r in first} == {1}
    assert all(r["schema"] == 2 and "eval_version" in r["config"] for r in records if "schema" in r)


def test_a_new_defaulted_field_leaves_every_stored_key_unchanged(monkeypatch):
    import dataclasses

    from scaling_lib import config as config_mod

    records = _stored_records()
    Extended = dataclasses.make_dataclass("Extended", [("recurrence", int, 1)], bases=(RunConfig,), frozen=True)
    # without being declared as introduced, the new field would re-key every run: the test can fail
    assert all(Extended.from_stored(r["config"]).key != r["key"] for r in records[:5])
    monkeypatch.setitem(config_mod.INTRODUCED, "recurrence", 1)
    assert all(Extended.from_stored(r["config"]).key == r["key"] for r in records)
    # a run that sets the new field to something else is a new run
    cfg = Extended.from_stored(records[0]["config"])
    assert cfg.replace(recurrence=2).key != cfg.key


def test_eval_version_enters_the_key_only_away_from_its_introduced_value():
    old, new = RunConfig(eval_version=1), RunConfig()
    assert new.eval_version == 2 and old.key != new.key
    assert RunConfig.from_stored(old.to_dict()).key == old.key
    d = old.to_dict()
    del d["eval_version"]  # a record filed before the field existed
    assert RunConfig.from_stored(d) == old and RunConfig.from_dict(d) == new
    with pytest.raises(ValueError, match="eval_version"):
        RunConfig(eval_version=3)
