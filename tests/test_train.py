"""Training real tiny runs on the tiny corpus: the record, determinism, divergence, resume, schedules."""
from __future__ import annotations

import copy
import fcntl
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lib import train as train_mod
from scaling_lib.batch import noise_scale_curve
from scaling_lib.config import RunConfig
from scaling_lib.data import read_progress
from scaling_lib.store import Store, runs_table
from scaling_lib.train import cooldown_start, eval_steps, lr_at, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=4, eval_tokens=1024)


@pytest.fixture(scope="module")
def wsd_run(tiny_corpus, tmp_path_factory):
    """One tiny wsd run (~20k tokens, two shorter budgets), trained once for the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = RunConfig(**TINY, tokens=20_480, schedule="wsd", budgets=(5_120, 10_240), lr=1e-2)
    ckpt = tmp_path_factory.mktemp("ckpt")
    try:
        rec = train(cfg, progress=False, checkpoint_dir=ckpt)
    finally:
        torch.set_num_threads(n)
    return cfg, rec, ckpt


# --- schedules -------------------------------------------------------------------------------
def test_eval_steps_are_log_spaced_from_0_to_the_last():
    s = eval_steps(1000, 8)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 1000
    assert s == sorted(set(s))
    assert 20 <= len(s) <= 27  # about 8 a decade over 3 decades
    big = [x for x in s if x >= 100]
    ratios = np.diff(np.log10(big))
    assert np.allclose(ratios[:-1], 1 / 8, atol=0.02)
    assert eval_steps(1, 8) == [0, 1]
    assert eval_steps(5, 2) == [0, 1, 3, 5]


def test_lr_schedules():
    cfg = RunConfig(n_ctx=32, batch_size=4, tokens=128 * 1000, warmup_tokens=128 * 100, lr=1.0, min_lr_ratio=0.1)
    S = cfg.steps
    assert S == 1000
    assert lr_at(cfg, 0, S) == pytest.approx(0.01) and lr_at(cfg, 49, S) == pytest.approx(0.5)
    assert lr_at(cfg, 99, S) == pytest.approx(1.0) and lr_at(cfg, 100, S) == pytest.approx(1.0)
    assert lr_at(cfg, 550, S) == pytest.approx(0.55)  # half-way down the cosine: (1 + 0.1) / 2
    assert lr_at(cfg, 1000, S) == pytest.approx(0.1)
    lrs = [lr_at(cfg, s, S) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    wsd = cfg.replace(schedule="wsd", warmup_tokens=128 * 100)
    start = cooldown_start(wsd, S)
    assert start == 800
    assert lr_at(wsd, 799, S) == 1.0 and lr_at(wsd, 900, S) == pytest.approx(0.55)
    assert lr_at(wsd, 1000, S) == pytest.approx(0.1)
    # a cooldown branch off the stable phase
    assert lr_at(wsd, 300, 400, decay_start=320) == 1.0
    assert lr_at(wsd, 360, 400, decay_start=320) == pytest.approx(0.55)
    const = cfg.replace(schedule="constant", warmup_tokens=128 * 100)
    assert lr_at(const, 999, S) == 1.0 and lr_at(const, 0, S) == pytest.approx(0.01)


# --- the record of a run ---------------------------------------------------------------------
def test_a_tiny_run_returns_a_complete_record(wsd_run, tiny_corpus):
    cfg, rec, ckpt = wsd_run
    assert rec["status"] == "ok" and rec["diverged_at_step"] is None
    assert rec["key"] == cfg.key and rec["name"] == cfg.name and rec["sweep"] == "adhoc"
    assert RunConfig.from_dict(rec["config"]) == cfg
    S = cfg.steps
    assert rec["steps"] == S == 160 and rec["tokens"] == S * cfg.tokens_per_step == 20_480
    assert rec["N"] == rec["params_counted"] == cfg.N
    assert rec["N_total"] > cfg.N + cfg.vocab * cfg.d_model
    data_tokens = tiny_corpus.tokens("train").size
    assert rec["data_tokens"] == data_tokens and rec["epochs"] == pytest.approx(rec["tokens"] / data_tokens)
    assert rec["C"] == 6 * cfg.N * rec["tokens"]
    assert rec["C_exact"] > rec["C"]  # the embedding and de-embedding dominate at this size

    # the curve: log-spaced evaluations, from step 0 to the last, the loss falling from about ln(vocab)
    curve = rec["curve"]
    assert [p["step"] for p in curve] == eval_steps(S, cfg.evals_per_decade)
    assert curve[0]["step"] == 0 and curve[-1]["step"] == S
    assert curve[0]["train_loss"] is None and all(p["train_loss"] is not None for p in curve[1:])
    assert abs(curve[0]["val_loss"] - math.log(cfg.vocab)) < 0.3
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] - 1.0
    assert all(p["tokens"] == p["step"] * cfg.tokens_per_step for p in curve)
    assert all(math.isfinite(p["val_loss"]) for p in curve)

    # every wsd budget, then the longest, with its epochs and compute
    budgets = rec["budgets"]
    assert [b["tokens"] for b in budgets] == [5_120, 10_240, 20_480]
    assert [b["steps"] for b in budgets] == [40, 80, 160]
    assert [b["cooldown_from_step"] for b in budgets] == [32, 64, None]
    assert all(b["status"] == "ok" and math.isfinite(b["val_loss"]) for b in budgets)
    assert budgets[0]["val_loss"] > budgets[-1]["val_loss"]
    assert budgets[-1]["val_loss"] == rec["final"]["val_loss"]
    assert all(b["epochs"] == pytest.approx(b["tokens"] / data_tokens) for b in budgets)
    assert all(b["C"] == 6 * cfg.N * b["tokens"] for b in budgets)

    # final metrics: the whole val split, per position, the test split, no other distributions
    final = rec["final"]
    assert len(final["per_position_loss"]) == cfg.n_ctx
    assert np.mean(final["per_position_loss"]) == pytest.approx(final["val_loss"], abs=1e-9)
    assert math.isfinite(final["test_loss"]) and abs(final["test_loss"] - final["val_loss"]) < 0.5
    assert set(final["other"]) == {"brown"} and final["other"]["brown"] > 0  # the tiny corpus's other distribution
    assert final["best_val_loss"] <= final["val_loss"]

    prov = rec["provenance"]
    if (Path(train_mod.__file__).resolve().parents[1] / ".git").exists():
        assert isinstance(prov["git_commit"], str) and len(prov["git_commit"]) >= 40
    else:  # a copy of the tree without .git: the commit comes from SCALING_LIB_COMMIT, if set
        assert prov["git_commit"] == os.environ.get("SCALING_LIB_COMMIT")
    assert prov["device"].startswith("cpu") and prov["torch"] == torch.__version__
    assert prov["wall_time_s"] > 0 and prov["tokens_per_s"] > 0
    assert prov["numpy"] == np.__version__ and prov["threads"] == 1
    assert set(prov["corpus_files"]) == {"train", "val", "test", "brown"}
    assert not list(ckpt.iterdir())  # the checkpoint is removed once the record exists


def test_the_record_is_json_ready_and_stores(wsd_run, tmp_path):
    import json

    cfg, rec, _ = wsd_run
    json.dumps(rec, allow_nan=False)
    p = Store(tmp_path).save(rec)
    assert Store(tmp_path).load(cfg)["final"] == rec["final"]
    assert p.name == f"{cfg.name}-{cfg.key}.json"


def test_every_budget_is_measured_on_the_same_validation_windows(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(tokens=8_192, schedule="wsd", budgets=(4_096,))
    assert cfg.eval_version == 2
    scored = []
    real_score = train_mod.score

    def spy_score(model, windows, cfg, device):
        out = real_score(model, windows, cfg, device)
        scored.append((windows.copy(), out["loss"]))
        return out

    monkeypatch.setattr(train_mod, "score", spy_score)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    by_loss = {loss: w for w, loss in scored}
    branch, longest = (by_loss[b["val_loss"]] for b in rec["budgets"])
    assert np.array_equal(branch, longest)
    assert rec["curve"][-1]["val_loss"] == rec["budgets"][-1]["val_loss"] == rec["final"]["val_loss"]
    assert all(b["eval_windows"] == rec["final"]["eval_windows"] for b in rec["budgets"])


def test_a_shorter_run_with_the_same_warmup_makes_the_same_cooldown_branches(tiny_cfg, tmp_path):
    # what lets the tuned grid train a rate added past an edge only as far as it must (plans._growth_run)
    full = tiny_cfg(tokens=8_192, schedule="wsd", budgets=(2_048, 4_096))
    short = full.replace(tokens=4_096, budgets=(2_048,), warmup_tokens=full.warmup_tokens)
    a = train(full, progress=False, checkpoint_dir=tmp_path / "a")
    b = train(short, progress=False, checkpoint_dir=tmp_path / "b")
    assert a["budgets"][0]["tokens"] == b["budgets"][0]["tokens"] == 2_048
    assert a["budgets"][0]["val_loss"] == b["budgets"][0]["val_loss"]  # bit for bit: the same stable phase and data
    # the shorter run's longest budget is its own cooldown, on the main run's data: close, not the same
    assert b["budgets"][1]["val_loss"] == pytest.approx(a["budgets"][1]["val_loss"], rel=0.05)


def test_the_final_evaluation_has_a_standard_error_and_covers_the_split(tiny_cfg, tiny_corpus, tmp_path):
    from scaling_lib.data import eval_windows

    cfg = tiny_cfg(tokens=4_096, schedule="wsd", budgets=(2_048,))
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    f = rec["final"]
    whole = eval_windows(tiny_corpus.tokens("val"), cfg.n_ctx, train_mod.FINAL_EVAL_TOKENS)
    assert f["eval_windows"] == len(whole) and f["eval_tokens"] >= min(1_048_576, tiny_corpus.tokens("val").size - cfg.n_ctx)
    assert 0 < f["val_loss_se"] < 0.1 * f["val_loss"] and 0 < f["test_loss_se"]
    assert all(b["val_loss_se"] > 0 for b in rec["budgets"]) and rec["schema"] == 2


def test_early_stopping_reports_the_test_loss_where_it_selected(tiny_cfg, tmp_path):
    # many epochs of a small subset: validation turns up and the run stops early
    cfg = tiny_cfg(tokens=80_000, data_tokens=4_096, early_stop=True, lr=3e-2, d_model=32, evals_per_decade=16)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    f = rec["final"]
    assert rec["status"] == "early_stopped"
    best = min(rec["curve"][:-1], key=lambda p: p["val_loss"])
    assert f["selected_step"] == best["step"] < rec["steps"]
    # the selected model is scored on the final windows: better than where the run ended
    assert f["val_loss"] < rec["budgets"][-1]["val_loss"] and math.isfinite(f["test_loss"])


def test_the_first_evaluation_is_kept_for_its_stored_runs(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tokens=4_096, schedule="wsd", budgets=(2_048,), eval_version=1)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert "val_loss_se" not in rec["final"] and "eval_windows" not in rec["budgets"][0]
    assert rec["budgets"][-1]["val_loss"] == rec["final"]["val_loss"] != rec["curve"][-1]["val_loss"]


# --- determinism -----------------------------------------------------------------------------
def test_the_same_config_trains_to_the_same_loss(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tokens=4_096, lr=1e-2)
    a = train(cfg, progress=False, checkpoint_dir=tmp_path / "a")
    b = train(cfg, progress=False, checkpoint_dir=tmp_path / "b")
    assert a["final"]["val_loss"] == pytest.approx(b["final"]["val_loss"], rel=1e-6, abs=0)
    assert [p["val_loss"] for p in a["curve"]] == pytest.approx([p["val_loss"] for p in b["curve"]], rel=1e-6)
    c = train(cfg.replace(seed=1), progress=False, checkpoint_dir=tmp_path / "c")
    assert c["final"]["val_loss"] != a["final"]["val_loss"]



def test_a_dropout_run_repeats_itself_and_evaluates_without_dropout(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tokens=2_048, lr=1e-2, dropout=0.1, early_stop=True, eval_version=2)
    a = train(cfg, progress=False, checkpoint_dir=tmp_path / "a")
    b = train(cfg, progress=False, checkpoint_dir=tmp_path / "b")
    assert [p["val_loss"] for p in a["curve"]] == [p["val_loss"] for p in b["curve"]]  # the same masks, by the seed
    plain = train(cfg.replace(dropout=0.0), progress=False, checkpoint_dir=tmp_path / "c")
    # the same model at step 0 scores the same: the evaluation drops nothing
    assert a["curve"][0]["val_loss"] == plain["curve"][0]["val_loss"]
    assert a["curve"][1]["train_loss"] != plain["curve"][1]["train_loss"]  # training does
    assert a["config"]["dropout"] == 0.1 and "-drop0.1-" in a["name"]
    assert list(runs_table([a, plain])["dropout"]) == [0.1, 0.0]


# --- the gradient noise scale along training (McCandlish et al. 2018) -------------------------
NOISE_KEYS = ("B_simple", "G2", "trace_sigma")


def _spy_training(monkeypatch):
    """What the loop hands each training step (torch's random state, the data order, the mode, the
    weights, the optimiser's state and .grad before it), and the optimiser, run by run."""
    runs = []
    real_step, real_opt = train_mod._train_step, train_mod._optimizer

    def make_opt(model, cfg, device):
        runs.append(dict(model=model, opt=real_opt(model, cfg, device), steps=[]))
        return runs[-1]["opt"]

    def step(model, opt, cfg, device, lr, train_tokens, rng, **kw):
        runs[-1]["steps"].append(dict(
            torch_rng=torch.get_rng_state().clone(), data_rng=rng.bit_generator.state, training=model.training,
            weights={k: v.clone() for k, v in model.state_dict().items()},
            grad=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
            opt=copy.deepcopy(opt.state_dict()["state"])))
        return real_step(model, opt, cfg, device, lr, train_tokens, rng, **kw)

    monkeypatch.setattr(train_mod, "_optimizer", make_opt)
    monkeypatch.setattr(train_mod, "_train_step", step)
    return runs


def _same(a, b) -> bool:
    """Bit for bit: tensors by torch.equal, containers element by element, the rest by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _without_noise(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("provenance", "key", "config")}
    out["curve"] = [{k: v for k, v in p.items() if k not in NOISE_KEYS} for p in rec["curve"]]
    return out


def test_measuring_the_noise_scale_leaves_training_bit_for_bit_unchanged(tiny_cfg, tmp_path, monkeypatch):
    """Dropout (torch's random state), a cooldown branch and early stopping: the run with B_simple
    measured at every evaluation trains exactly as the one without, step by step."""
    runs = _spy_training(monkeypatch)
    cfg = tiny_cfg(tokens=4_096, schedule="wsd", budgets=(2_048,), dropout=0.1, early_stop=True, lr=1e-2)
    plain = train(cfg, progress=False, checkpoint_dir=tmp_path / "a")
    measured = train(cfg.replace(noise_batches=2), progress=False, checkpoint_dir=tmp_path / "b")
    a, b = runs
    assert len(a["steps"]) == len(b["steps"]) > cfg.steps  # the main run and its cooldown branch
    for i, (x, y) in enumerate(zip(a["steps"], b["steps"])):
        assert _same(x, y), f"training step {i} differs"
    assert _same(a["model"].state_dict(), b["model"].state_dict())
    assert _same(a["opt"].state_dict(), b["opt"].state_dict())
    assert _same([p.grad for p in a["model"].parameters()], [p.grad for p in b["model"].parameters()])
    assert a["model"].training == b["model"].training
    assert _same(_without_noise(plain), _without_noise(measured))  # every loss, curve point and budget

    assert not any(k in p for p in plain["curve"] for k in NOISE_KEYS)  # off: the records as they were
    curve = measured["curve"]
    assert len(curve) == len(plain["curve"]) and all(set(NOISE_KEYS) <= set(p) for p in curve)
    for p in curve:  # B_simple in tokens: tr(Sigma)/|G|^2 where both estimates allow it, else null
        if p["B_simple"] is not None:
            assert p["B_simple"] > 0 and p["B_simple"] == pytest.approx(p["trace_sigma"] / p["G2"])
    assert sum(p["B_simple"] is not None for p in curve) >= len(curve) // 2
    import json
    json.dumps(measured["curve"], allow_nan=False)
    table = noise_scale_curve([plain, measured])  # read back for the chapters: the measured run's points
    assert list(table["step"]) == [p["step"] for p in curve] and set(table["key"]) == {measured["key"]}
    assert set(table["batch_size"]) == {cfg.batch_size}
    prov = measured["provenance"]
    assert prov["noise_scale_s"] > 0 and "noise_scale_s" not in plain["provenance"]
    # the measurement's seconds count in the wall time, not in the throughput
    assert prov["tokens_per_s"] >= measured["tokens"] / (prov["wall_time_s"] - prov["noise_scale_s"])


def test_the_noise_point_draws_its_own_batches_and_restores_what_training_relies_on(tiny_cfg, tiny_corpus):
    from scaling_lib.batch import measure_noise_scale
    from scaling_lib.data import sample_batch
    from scaling_lib.arch import build_model

    cfg = tiny_cfg(dropout=0.1, noise_batches=3)
    torch.manual_seed(0)
    model = build_model(cfg)
    tokens = tiny_corpus.tokens("train")
    before_rng = torch.get_rng_state().clone()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    first = train_mod.noise_point(model, cfg, torch.device("cpu"), tokens, step=7)
    assert torch.equal(torch.get_rng_state(), before_rng) and model.training
    assert _same(model.state_dict(), weights) and all(p.grad is None for p in model.parameters())
    assert train_mod.noise_point(model, cfg, torch.device("cpu"), tokens, step=7) == first  # by the seed and step
    assert train_mod.noise_point(model, cfg, torch.device("cpu"), tokens, step=8) != first
    assert train_mod.noise_point(model, cfg.replace(seed=1), torch.device("cpu"), tokens, step=7) != first
    # what it measures: noise_batches batches of the run's batch from the training split, in tokens
    rng = np.random.default_rng([cfg.seed, train_mod.NOISE_STREAM, 7])
    batches = [torch.from_numpy(sample_batch(tokens, cfg.batch_size, cfg.n_ctx, rng)) for _ in range(3)]
    with torch.random.fork_rng(devices=[]):
        est = measure_noise_scale(model, lambda m, x: m(x[:, :-1], x[:, 1:]), batches, chunks=4,
                                  examples_per_item=cfg.n_ctx)
    assert first == {k: est.to_dict()[k] for k in NOISE_KEYS} and est.B_big == cfg.batch_size * cfg.n_ctx


@pytest.mark.parametrize("batch, chunks", [(2, 2), (3, 3), (4, 4), (6, 3), (8, 4), (12, 4), (256, 4), (5, 5),
                                           (10, 2), (14, 2), (35, 5), (49, 7)])
def test_noise_chunks_is_a_divisor_of_the_batch(batch, chunks):
    assert train_mod.noise_chunks(batch) == chunks
    with pytest.raises(ValueError, match="does not split"):
        train_mod.noise_chunks(1)


# --- divergence ------------------------------------------------------------------------------
def test_a_huge_learning_rate_diverges_into_a_record(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tokens=4_096, lr=1e4, grad_clip=1e12, warmup_tokens=0)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "diverged"
    assert isinstance(rec["diverged_at_step"], int) and 0 < rec["diverged_at_step"] < cfg.steps
    assert rec["final"] == {}
    assert rec["budgets"][-1]["status"] == "diverged" and math.isnan(rec["budgets"][-1]["val_loss"])
    assert rec["steps"] <= rec["diverged_at_step"]
    # a diverged record is stored and tabulated like any other
    store = Store(tmp_path / "runs")
    store.save(rec)
    row = store.table().iloc[0]
    assert row["status"] == "diverged" and (row["final_val_loss"] is None or math.isnan(row["final_val_loss"]))


def test_a_nan_loss_ends_the_run_with_status_diverged(tiny_cfg, tmp_path, monkeypatch):
    real = train_mod._train_step
    n = [0]

    def nan_at_5(*a, **kw):
        n[0] += 1
        return float("nan") if n[0] == 6 else real(*a, **kw)  # the sixth step, step 5

    monkeypatch.setattr(train_mod, "_train_step", nan_at_5)
    cfg = tiny_cfg(tokens=4_096)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "diverged" and rec["diverged_at_step"] == 5
    assert rec["steps"] == 5 and rec["tokens"] == 5 * cfg.tokens_per_step
    assert [p["step"] for p in rec["curve"]] == [s for s in eval_steps(cfg.steps, cfg.evals_per_decade) if s <= 5]
    assert not list(tmp_path.iterdir())


def test_a_nan_in_a_cooldown_branch_marks_only_that_budget(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(tokens=4_096, schedule="wsd", budgets=(2_048,))  # 32 steps; branch of 16 from step 13
    assert cooldown_start(cfg, 16) == 13
    real = train_mod._train_step
    n = [0]

    def nan_in_branch(*a, **kw):
        n[0] += 1
        return float("nan") if n[0] == 14 else real(*a, **kw)  # 13 main steps, then the branch's first

    monkeypatch.setattr(train_mod, "_train_step", nan_in_branch)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "ok" and rec["steps"] == 32
    b = rec["budgets"]
    assert b[0]["tokens"] == 2_048 and b[0]["status"] == "diverged" and math.isnan(b[0]["val_loss"])
    assert b[1]["status"] == "ok" and math.isfinite(b[1]["val_loss"])


# --- checkpoint and resume -------------------------------------------------------------------
class Interrupted(Exception):
    pass


# with dropout, the checkpoint carries torch's random state; the noise scale's batches follow from the step
@pytest.mark.parametrize("dropout, noise_batches", [(0.0, 0), (0.1, 0), (0.1, 2)])
def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_cfg, tmp_path, monkeypatch, capsys, dropout,
                                                        noise_batches):
    monkeypatch.setattr(train_mod, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every step
    cfg = tiny_cfg(tokens=5_120, schedule="wsd", budgets=(2_560,), dropout=dropout,  # 40 steps; branch of 20 from 16
                   noise_batches=noise_batches)
    reference = train(cfg, progress=False, checkpoint_dir=tmp_path / "ref")

    real = train_mod._train_step
    calls = [0]
    interrupt_at = [25]  # 16 main steps, 4 in the branch, then main steps 16..20: the 25th is step 20

    def flaky(*a, **kw):
        calls[0] += 1
        if calls[0] == interrupt_at[0]:
            raise Interrupted
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "_train_step", flaky)
    ckpt_dir = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        train(cfg, progress=False, checkpoint_dir=ckpt_dir)
    ckpt = ckpt_dir / f"{cfg.key}.pt"
    assert ckpt.exists()
    assert torch.load(ckpt, weights_only=False)["state"]["step"] == 20
    # beside it, how far the run got, readable without torch (what a sweep logs)
    progress = read_progress(cfg.key, ckpt_dir)
    assert (progress["step"], progress["steps"], progress["name"]) == (20, cfg.steps, cfg.name)
    assert progress["pids"] == [os.getpid(), os.getppid()]  # whose run it is: a sweep lists only its own
    last_eval = [p for p in reference["curve"] if p["step"] < 20][-1]  # step 20 is evaluated after resuming
    assert progress["val_loss"] == pytest.approx(last_eval["val_loss"], rel=1e-6)

    calls[0], interrupt_at[0] = 0, -1
    capsys.readouterr()
    rec = train(cfg, progress=True, checkpoint_dir=ckpt_dir)
    assert f"resuming {cfg.name} from step 20" in capsys.readouterr().out
    assert calls[0] == cfg.steps - 20  # the rest of the main run only: the branch was done before
    assert not ckpt.exists() and read_progress(cfg.key, ckpt_dir) is None
    assert rec["status"] == "ok" and rec["steps"] == cfg.steps
    assert rec["final"]["val_loss"] == pytest.approx(reference["final"]["val_loss"], rel=1e-6, abs=0)
    assert [p["step"] for p in rec["curve"]] == [p["step"] for p in reference["curve"]]
    assert [p["val_loss"] for p in rec["curve"]] == pytest.approx([p["val_loss"] for p in reference["curve"]],
                                                                  rel=1e-6)
    assert [b["val_loss"] for b in rec["budgets"]] == pytest.approx([b["val_loss"] for b in reference["budgets"]],
                                                                     rel=1e-6)
    for key in NOISE_KEYS:  # measured after the resume (step 20 on) as in the uninterrupted run
        assert [p.get(key) for p in rec["curve"]] == pytest.approx([p.get(key) for p in reference["curve"]], rel=1e-6)
    assert all(key in p for p in rec["curve"] for key in NOISE_KEYS) == bool(noise_batches)


# --- options ---------------------------------------------------------------------------------
def test_data_tokens_limits_the_training_split(tiny_cfg, tmp_path, tiny_corpus):
    cfg = tiny_cfg(tokens=2_048, data_tokens=1_024)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["data_tokens"] == 1_024 and rec["epochs"] == pytest.approx(2.0)
    too_many = tiny_cfg(tokens=2_048, data_tokens=tiny_corpus.tokens("train").size + 1)
    with pytest.raises(ValueError, match="exceeds the training split"):
        train(too_many, progress=False, checkpoint_dir=tmp_path)


def test_early_stop_stops_once_the_loss_is_well_past_its_best(tiny_cfg, tmp_path, monkeypatch):
    vals = iter([5.0, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 6.0, 6.1, 6.2, 6.3])

    def fake_eval(model, windows, cfg, device, per_position=False):
        return (5.1, [5.1] * cfg.n_ctx) if per_position else next(vals)

    monkeypatch.setattr(train_mod, "evaluate", fake_eval)
    cfg = tiny_cfg(tokens=4_096, early_stop=True, eval_version=1)  # evaluation 1 reports the curve's best
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "early_stopped" and rec["steps"] == 3
    assert rec["final"]["best_val_loss"] == 5.0
    assert rec["budgets"][-1]["status"] == "early_stopped"
    vals = iter([5.0, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 6.0, 6.1, 6.2, 6.3])
    rec = train(cfg.replace(eval_version=2), progress=False, checkpoint_dir=tmp_path)  # evaluation 2: the model there
    assert rec["status"] == "early_stopped" and rec["final"]["selected_step"] == rec["curve"][0]["step"] == 0


@pytest.mark.parametrize("kw", [dict(arch="lstm"), dict(dtype="bf16"), dict(schedule="constant")])
def test_other_architectures_and_options_train(tiny_cfg, tmp_path, kw):
    cfg = tiny_cfg(tokens=2_048, lr=1e-2, **kw)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)
    assert rec["status"] == "ok"
    assert rec["N"] == rec["params_counted"] == cfg.N
    assert rec["curve"][-1]["val_loss"] < rec["curve"][0]["val_loss"]


@pytest.mark.allowed_skip(match="this machine has CUDA")  # a check for CPU-only machines
def test_a_cuda_run_without_cuda_is_a_clear_error(tiny_cfg, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        train(tiny_cfg(device="cuda"), progress=False, checkpoint_dir=tmp_path)


def test_runs_table_of_a_real_record(wsd_run):
    cfg, rec, _ = wsd_run
    df = runs_table([rec], budgets=True)
    assert list(df["tokens"]) == [5_120, 10_240, 20_480]
    assert list(df["is_longest"]) == [False, False, True]


def test_a_run_being_trained_elsewhere_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tokens=1_024)
    lock = train_mod._checkpoint_path(cfg, tmp_path).with_suffix(".lock")
    with open(lock, "w") as held:  # another process training the same run holds this lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(train_mod.RunLocked, match=f"{cfg.key}.*another process"):
            train(cfg, progress=False, checkpoint_dir=tmp_path)
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path)  # released: it trains
    assert rec["status"] == "ok" and not list(tmp_path.iterdir())  # and leaves no lock behind


def test_a_run_filed_while_waiting_for_its_lock_is_not_trained_again(tiny_cfg, tmp_path):
    from scaling_lib.store import Store

    cfg = tiny_cfg(tokens=1_024)
    s = Store(tmp_path / "runs")
    rec = train(cfg, progress=False, checkpoint_dir=tmp_path / "ck", store=s)
    assert s.has(cfg) and rec["path"] == str(s.find(cfg))  # filed under the run's lock
    with pytest.raises(train_mod.AlreadyStored):
        train(cfg, progress=False, checkpoint_dir=tmp_path / "ck", store=s)
