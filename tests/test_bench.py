"""The benchmark on one tiny shape: the JSON it returns, and the CLI's `bench` command."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_lib.bench import PlainGPT, bench, bench_shapes
from scaling_lib.model import HEADS

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab=512, n_ctx=32, batch_size=4, steps=2, threads=1, peak_sizes=(256,), peak_reps=2, progress=False)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def result():
    return bench_shapes([(1, 32)], dtypes="both", **TINY)


def test_structure_and_values(result):
    json.loads(json.dumps(result))  # JSON-ready: no numpy or torch types
    assert result["threads"] == 1 and result["dtypes"] == ["fp32", "bf16"]
    assert set(result["peak"]) == {"fp32_flops", "bf16_flops"}
    assert all(_positive(v) for v in result["peak"].values())
    assert _positive(result["max_rss_mb"])
    (row,) = result["shapes"]
    assert (row["n_layer"], row["d_model"], row["N"]) == (1, 32, 12 * 32**2)
    assert row["tokens_per_step"] == 4 * 32
    # 3x the exact forward counts the de-embedding, so it is well above 6N at this width
    assert row["train_flops_per_token"] > row["train_flops_per_token_6N"] == 6 * row["N"]
    for d in ("fp32", "bf16"):
        m = row[d]
        for k in ("tokens_per_s", "s_per_step", "flops", "flops_6N", "speedup_vs_baseline"):
            assert _positive(m[k]), (d, k, m[k])
        assert m["share_of_peak"] > 0
        if d == "fp32":  # a bf16 step runs partly in fp32, faster than a bf16 peak that no AMX or AVX512-BF16 backs
            assert m["share_of_peak"] < 1.5, (d, m["share_of_peak"])
        assert m["flops"] == pytest.approx(m["tokens_per_s"] * row["train_flops_per_token"])
        assert m["share_of_peak"] == pytest.approx(m["flops"] / result["peak"][f"{d}_flops"])
    assert _positive(row["baseline_fp32"]["tokens_per_s"])
    ratio = row["fp32"]["tokens_per_s"] / row["baseline_fp32"]["tokens_per_s"]
    assert row["speedup_vs_baseline"] == pytest.approx(ratio)


def test_every_head_is_timed_and_the_chosen_one_reported(result):
    (row,) = result["shapes"]
    for d in ("fp32", "bf16"):
        m = row[d]
        assert set(m["heads"]) == set(HEADS) and m["head"] in HEADS and m["fastest_head"] in HEADS
        assert m["head_choice"]["strategy"] == m["head"]
        for h, t in m["heads"].items():
            assert _positive(t["s_per_step"]) and t["s_per_step_min"] <= t["s_per_step"] <= t["s_per_step_max"]
            assert t["speedup_vs_baseline"] == pytest.approx(t["tokens_per_s"] / row["baseline_fp32"]["tokens_per_s"])
        # the headline figures are the chosen head's
        assert m["s_per_step"] == m["heads"][m["head"]]["s_per_step"]
        assert m["auto_over_fastest"] == pytest.approx(m["s_per_step"] / m["heads"][m["fastest_head"]]["s_per_step"])
        assert m["auto_over_fastest"] >= 1.0


def test_the_chooser_measures_in_the_bench(monkeypatch):
    monkeypatch.delenv("SCALING_LIB_HEAD", raising=False)
    r = bench_shapes([(1, 16)], dtypes="fp32", baseline=False, **dict(TINY, vocab=256))
    (row,) = r["shapes"]
    choice = row["fp32"]["head_choice"]
    assert choice["source"] == "measured" and set(choice["s_per_pass"]) == set(HEADS)
    assert set(r["peak"]) == {"fp32_flops"}  # only the dtypes asked for


def test_one_dtype_without_baseline():
    r = bench_shapes([(1, 16)], dtypes=["bf16"], baseline=False, **dict(TINY, vocab=256))
    (row,) = r["shapes"]
    assert "fp32" not in row and "baseline_fp32" not in row and _positive(row["bf16"]["tokens_per_s"])


def test_baseline_has_our_parameter_count():
    """The plain model has the same shape as ours: same parameters (tied de-embedding)."""
    from scaling_lib.config import RunConfig
    from scaling_lib.arch import build_model

    cfg = RunConfig(n_layer=2, d_model=64, n_ctx=32, tokenizer="bpe512")
    plain = PlainGPT(cfg.vocab, cfg.n_ctx, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff)
    ours = build_model(cfg)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in ours.parameters())


def test_bad_arguments():
    args = argparse.Namespace(n_layer=1, d_model=None, vocab=512, n_ctx=32, batch_size=4, steps=2, threads=1,
                              dtype="fp32")
    with pytest.raises(ValueError, match="both"):
        bench(args)
    with pytest.raises(ValueError, match="dtype"):
        bench_shapes([(1, 16)], dtypes="fp16", **TINY)


def test_cli():
    cmd = [sys.executable, "-m", "scaling_lib", "bench", "--n-layer", "1", "--d-model", "32", "--steps", "2",
           "--batch-size", "4", "--n-ctx", "32", "--dtype", "fp32"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # stdout is pure JSON; progress goes to stderr
    (row,) = out["shapes"]
    assert (row["n_layer"], row["d_model"]) == (1, 32) and out["dtypes"] == ["fp32"]
    assert _positive(row["fp32"]["tokens_per_s"]) and _positive(row["speedup_vs_baseline"])
    assert "bench:" in p.stderr
