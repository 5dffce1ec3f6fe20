"""Latency against depth at a fixed N (bench.py): the shapes, the linear fit, and the timing's structure.

The timing tests check structure and positivity only, never speed: the machine is shared.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling_lib import flops
from scaling_lib.bench import (LatencyFit, depth_latency, fit_latency, latency, shapes_at_fixed_N)
from scaling_lib.cli import main
from scaling_lib.config import RunConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab=256, n_ctx=16, batch_size=2, threads=1, repeats=2, warmup=1, gen_tokens=3, gen_batches=(1, 2),
            prompt=4, progress=False)
SPREAD = {"median", "q25", "q75", "min", "max", "n"}


# --- shapes at a fixed N -------------------------------------------------------------------------
def test_shapes_at_fixed_N_are_the_nearest_multiples_of_the_head_size():
    shapes = shapes_at_fixed_N(300_000, [1, 2, 4, 8, 16])
    assert [s["n_layer"] for s in shapes] == [1, 2, 4, 8, 16]
    for s in shapes:
        L, d = s["n_layer"], s["d_model"]
        assert d % 32 == 0 and s["n_head"] * 32 == d and s["head_size"] == 32
        assert s["N"] == 12 * L * d**2 == flops.N(flops.Shape(L, d, 128, 4096))
        assert s["N_total"] == s["N"] + (4096 + 128) * d
        assert s["rel_error"] == pytest.approx(s["N"] / 300_000 - 1)
        for other in (d - 32, d + 32):  # no neighbouring width is closer
            if other > 0:
                assert abs(12 * L * other**2 - 300_000) >= abs(s["N"] - 300_000)
        # the config the bench builds from it has the same N and head count
        cfg = RunConfig(n_layer=L, d_model=d, n_head=s["n_head"], n_ctx=128)
        assert cfg.N == s["N"] and cfg.n_head == RunConfig(n_layer=L, d_model=d).n_head
    assert shapes[0]["d_model"] == 160 and shapes[0]["N"] == 307_200


def test_a_finer_head_size_holds_N_closer():
    coarse = shapes_at_fixed_N(300_000, [1, 2, 4, 8, 16], head_size=32)
    fine = shapes_at_fixed_N(300_000, [1, 2, 4, 8, 16], head_size=8)
    assert max(abs(s["rel_error"]) for s in coarse) > 0.25
    assert max(abs(s["rel_error"]) for s in fine) < 0.1
    assert all(s["d_model"] % 8 == 0 and s["n_head"] == s["d_model"] // 8 for s in fine)


def test_shapes_at_a_fixed_total_count():
    shapes = shapes_at_fixed_N(2_000_000, [2, 4, 8], count="N_total", vocab=4096, n_ctx=128, head_size=16)
    for s in shapes:
        assert s["count"] == "N_total" and s["rel_error"] == pytest.approx(s["N_total"] / 2e6 - 1)
        assert abs(s["rel_error"]) < 0.1 and s["N"] < s["N_total"]


@pytest.mark.parametrize("args, kwargs, match", [
    ((300_000, [0, 2]), {}, "positive integers"),
    ((300_000, [1.5]), {}, "positive integers"),
    ((0, [1]), {}, "positive"),
    ((300_000, []), {}, "no depths"),
    ((300_000, [1]), dict(count="params"), "count"),
    ((300_000, [1]), dict(head_size=0), "head_size"),
])
def test_shapes_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes_at_fixed_N(*args, **kwargs)


# --- the fit of latency against depth ------------------------------------------------------------
def test_fit_latency_recovers_a_line():
    L = np.array([1, 2, 4, 8, 16, 32])
    f = fit_latency(L, 0.01 + 0.002 * L)
    assert isinstance(f, LatencyFit)
    assert f.slope == pytest.approx(0.002) and f.intercept == pytest.approx(0.01) and f.r2 == pytest.approx(1.0)
    assert np.allclose(f.residuals, 0, atol=1e-12) and f.residuals.shape == (6,)
    assert f.ratio == pytest.approx((0.01 + 0.064) / 0.012)
    d = f.to_dict()
    json.dumps(d)
    assert set(d) == {"slope", "intercept", "r2", "ratio", "residuals"}


def test_fit_latency_with_noise():
    rng = np.random.default_rng(0)
    L = np.repeat([4, 8, 16, 32], 3)
    y = 0.05 + 0.01 * L + rng.normal(0, 0.005, L.size)
    f = fit_latency(L, y)
    assert f.slope == pytest.approx(0.01, rel=0.1) and 0.95 < f.r2 < 1.0
    assert np.allclose(f.residuals, y - f.predict(L)) and abs(f.residuals.sum()) < 1e-12


def test_fit_latency_edge_cases():
    assert math.isnan(fit_latency([1, 2, 3], [0.1, 0.1, 0.1]).r2)  # nothing to explain
    assert fit_latency([1, 2], [0.1, 0.3]).r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct depths"):
        fit_latency([4, 4, 4], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one length"):
        fit_latency([1, 2, 3], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        fit_latency([1, 2, 3], [0.1, math.nan, 0.3])


# --- timing: structure and positivity only --------------------------------------------------------
def _check_spread(s, n):
    assert set(s) == SPREAD and s["n"] == n
    assert 0 < s["min"] <= s["q25"] <= s["median"] <= s["q75"] <= s["max"]


def test_latency_structure():
    r = latency([(1, 16), (2, 16, 2)], head="chunked", **TINY)
    json.loads(json.dumps(r))
    assert r["device"].startswith("cpu:") and r["threads"] == 1 and r["dtype"] == "fp32"
    assert r["repeats"] == 2 and len(r["shapes"]) == 2
    one, two = r["shapes"]
    assert (one["n_layer"], one["d_model"], two["n_layer"], two["n_head"]) == (1, 16, 2, 2)
    for row in r["shapes"]:
        assert row["N"] == 12 * row["n_layer"] * 16**2 and row["head"] == "chunked"
        _check_spread(row["train_s_per_step"], 2)
        assert [g["batch"] for g in row["generate"]] == [1, 2]
        for g in row["generate"]:
            assert g["tokens"] == 3 and g["prompt"] == 4
            _check_spread(g["s_per_token"], 2)


def test_depth_latency_has_the_fits():
    r = depth_latency(20_000, [1, 2, 4], head_size=8, head="auto", **TINY)
    assert r["fixed_N"] == 20_000 and r["count"] == "N" and r["head_size"] == 8
    assert [s["n_layer"] for s in r["shapes"]] == [1, 2, 4]
    assert all(abs(s["N"] / 20_000 - 1) == pytest.approx(abs(s["rel_error"])) for s in r["shapes"])
    assert set(r["fits"]) == {"train_s_per_step", "generate_batch_1_s_per_token", "generate_batch_2_s_per_token"}
    for f in r["fits"].values():
        assert math.isfinite(f["slope"]) and len(f["residuals"]) == 3
    assert isinstance(r["warnings"], list)


def test_latency_bad_arguments():
    with pytest.raises(ValueError, match="one dtype"):
        latency([(1, 16)], dtype="both", **TINY)
    with pytest.raises(ValueError, match="positive"):
        latency([(1, 16)], **dict(TINY, repeats=0))
    with pytest.raises(ValueError, match="no shapes"):
        latency([], **TINY)


# --- the command line -----------------------------------------------------------------------------
def _bench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scaling_lib", "bench", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_depths_smoke():
    p = _bench("--depths", "1,2", "--fixed-n", "20000", "--head-size", "8", "--vocab", "256", "--n-ctx", "16",
               "--batch-size", "2", "--steps", "2", "--gen-tokens", "2", "--gen-batches", "1,2", "--prompt", "2",
               "--threads", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # pure JSON; progress on stderr
    assert [s["n_layer"] for s in out["shapes"]] == [1, 2] and out["dtype"] == "fp32" and out["threads"] == 1
    assert out["shapes"][0]["train_s_per_step"]["median"] > 0 and "train_s_per_step" in out["fits"]
    assert "bench:" in p.stderr


@pytest.mark.parametrize("args, words", [
    (["--depths", "1,2"], "together"),
    (["--fixed-n", "1000"], "together"),
    (["--depths", "1,2", "--fixed-n", "1000", "--n-layer", "2", "--d-model", "16"], "leave out --n-layer"),
    (["--depths", "a,b", "--fixed-n", "1000"], "integers joined by commas"),
    (["--depths", "0,2", "--fixed-n", "1000"], "positive integers"),
])
def test_cli_depths_errors(capsys, args, words):
    assert main(["bench", *args]) == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
