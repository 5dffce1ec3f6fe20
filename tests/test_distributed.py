"""Data-parallel training under torchrun: two CPU processes with gloo train one tiny run, and its
curve is the single-process curve of the same global batch.

The two ranks draw their halves of each step's batch from streams of their own (seed, ranks, rank).
A single process that draws the same two halves and trains on their concatenation takes the same
steps (the mean of the ranks' gradients is the gradient of the global batch), so its curve matches to
float tolerance: REL_SAME_DATA. A plain single-process run of the same config draws other batches;
its curve matches to the noise of a tiny model's data order: ABS_OTHER_DATA nats.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling_lib import train as train_mod
from scaling_lib.config import RunConfig
from scaling_lib.store import Store, load_record

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

REPO = Path(__file__).resolve().parents[1]
TINY = dict(corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=8, eval_tokens=1024, lr=1e-2)
REL_SAME_DATA = 1e-4  # summation order of the gradient all-reduce, over 64 AdamW steps
ABS_OTHER_DATA = 0.15  # nats, at every evaluation after the first steps (seeds differ by about this much)


def torchrun(args: list[str], env: dict, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def two_rank_batches(cfg: RunConfig, ranks: int = 2):
    """A sample_batch that draws what the ranks would, each its share, and stacks them."""
    streams = [np.random.default_rng([cfg.seed, ranks, r]) for r in range(ranks)]
    real = train_mod.sample_batch

    def sample(tokens, batch_size, n_ctx, rng):
        return np.concatenate([real(tokens, batch_size // ranks, n_ctx, g) for g in streams])

    return sample


@pytest.fixture
def ddp_env(linked_cache):
    env = dict(os.environ, SCALING_LIB_CACHE=str(linked_cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_two_gloo_ranks_train_the_single_process_curve_of_the_same_global_batch(tmp_path, ddp_env, tiny_corpus,
                                                                               monkeypatch):
    cfg = RunConfig(**TINY, tokens=16_384)  # 64 steps of 8 sequences, 4 a rank
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    store = tmp_path / "runs"
    r = torchrun(["-m", "scaling_lib", "train", "--config", str(cfg_file), "--store", str(store), "--quiet"], ddp_env)
    assert r.returncode == 0, r.stderr[-3000:]
    paths = Store(store).paths()
    assert len(paths) == 1, f"not one record but {paths}"  # rank 0 files it, rank 1 nothing
    rec = load_record(paths[0])
    assert rec["key"] == cfg.key and rec["config"]["batch_size"] == 8  # the key: the global batch, not the split
    prov = rec["provenance"]
    assert (prov["ranks"], prov["backend"], prov["batch_per_rank"]) == (2, "gloo", 4)
    checkpoints = Path(ddp_env["SCALING_LIB_CACHE"]) / "checkpoints"
    assert not list(checkpoints.iterdir()), "a checkpoint, lock or progress file was left behind"

    # the same two halves, drawn and stacked in one process: the same steps
    monkeypatch.setattr(train_mod, "sample_batch", two_rank_batches(cfg))
    same = train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path / "same")
    for key in ("val_loss", "train_loss"):
        ddp, one = ([p[key] for p in r["curve"][1:]] for r in (rec, same))
        assert ddp == pytest.approx(one, rel=REL_SAME_DATA), key
    assert rec["final"]["val_loss"] == pytest.approx(same["final"]["val_loss"], rel=REL_SAME_DATA)
    assert same["provenance"]["ranks"] == 1 and same["provenance"]["backend"] is None

    # a plain single-process run of the config: other batches, the same curve to the data order's noise
    monkeypatch.undo()
    plain = train_mod.train(cfg, progress=False, checkpoint_dir=tmp_path / "plain")
    late = [(p["val_loss"], q["val_loss"]) for p, q in zip(rec["curve"], plain["curve"]) if p["step"] >= 8]
    assert len(late) >= 5 and max(abs(a - b) for a, b in late) < ABS_OTHER_DATA, late
    assert plain["final"]["val_loss"] != rec["final"]["val_loss"]  # not the same batches: the ranks drew their own


def test_a_global_batch_that_does_not_split_over_the_ranks_is_a_clear_error(tmp_path, ddp_env, tiny_corpus):
    cfg = RunConfig(**{**TINY, "batch_size": 3}, tokens=1_024)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    r = torchrun(["-m", "scaling_lib", "train", "--config", str(cfg_file), "--store", str(tmp_path / "runs"),
                  "--quiet"], ddp_env)
    assert r.returncode != 0 and "does not split evenly over 2 ranks" in r.stderr
