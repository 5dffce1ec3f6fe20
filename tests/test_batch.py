"""The critical batch (Kaplan et al. 2020, §5.1) and the gradient noise scale (McCandlish et al. 2018)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_lib.batch import (
    IDENTIFIED_FACTOR,
    bcrit_of_loss,
    fit_bcrit_loss,
    fit_critical_batch,
    NOISE_CURVE_COLUMNS,
    measure_noise_scale,
    min_compute,
    min_steps,
    noise_scale,
    noise_scale_curve,
    steps_at_batch,
    steps_to_reach,
)
from scaling_lib.cli import main
from scaling_lib.fit import FitError

REPO = Path(__file__).resolve().parents[1]
S_MIN, B_CRIT = 1000.0, 800.0
BATCHES = np.repeat(2.0 ** np.arange(5, 14), 2)  # 32 to 8192, two runs each


def _noisy_steps(seed: int, sigma: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return steps_at_batch(BATCHES, S_MIN, B_CRIT) * np.exp(rng.normal(0, sigma, len(BATCHES)))


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --- S = S_min (1 + B_crit/B) ------------------------------------------------------------------
def test_exact_points_give_the_parameters_back():
    res = fit_critical_batch(BATCHES, steps_at_batch(BATCHES, S_MIN, B_CRIT))
    assert res.params["S_min"] == pytest.approx(S_MIN, rel=1e-6)
    assert res.params["B_crit"] == pytest.approx(B_CRIT, rel=1e-6)
    assert res.params["E_min"] == pytest.approx(S_MIN * B_CRIT, rel=1e-6)
    assert res.rmse_log < 1e-8 and res.ci_missing == "no bootstrap"
    # (S/S_min - 1)(E/E_min - 1) = 1 at every point, Kaplan et al. Eq. 5.1
    S = res.predict(BATCHES)
    assert np.allclose((S / S_MIN - 1) * (BATCHES * S / (S_MIN * B_CRIT) - 1), 1.0)


def test_noisy_points_are_recovered_within_their_intervals():
    res = fit_critical_batch(BATCHES, _noisy_steps(1), bootstrap=400, seed=0)
    assert res.params["S_min"] == pytest.approx(S_MIN, rel=0.05)
    assert res.params["B_crit"] == pytest.approx(B_CRIT, rel=0.1)
    assert res.n_boot_ok == 400
    for name, truth in (("S_min", S_MIN), ("B_crit", B_CRIT), ("E_min", S_MIN * B_CRIT)):
        lo, hi = res.interval(name)
        assert lo < res.params[name] < hi and res.contains(name, truth), (name, lo, hi)
        assert hi / lo < 1.5  # an interval that says something
    # seeded: the same seed gives the same intervals, another seed others
    again = fit_critical_batch(BATCHES, _noisy_steps(1), bootstrap=400, seed=0)
    other = fit_critical_batch(BATCHES, _noisy_steps(1), bootstrap=400, seed=1)
    assert again.ci == res.ci and other.ci != res.ci


def test_the_intervals_cover_the_truth_most_of_the_time():
    covered = [fit_critical_batch(BATCHES, _noisy_steps(seed, 0.1), bootstrap=100, seed=seed).contains("B_crit", B_CRIT)
               for seed in range(10)]
    assert sum(covered) >= 7, covered  # nominal 95%; a percentile bootstrap of 18 points covers a little less


def test_steps_that_do_not_bend_are_refused():
    B = np.array([1.0, 2.0, 4.0])
    with pytest.raises(FitError, match=f"more than {IDENTIFIED_FACTOR:g}x above the largest"):
        fit_critical_batch(B, 10.0 / B)  # perfect scaling: B_crit far above every B
    with pytest.raises(FitError, match="below the smallest"):
        fit_critical_batch(B * 1e6, [10.0, 10.0, 10.0])  # no gain from the batch: B_crit far below


@pytest.mark.parametrize("B, S, match", [
    ([32, 64, 32, 64], [10, 6, 11, 6], "2 batch size\\(s\\) \\(32, 64\\).*at least 3"),
    ([32, 64, 128], [10, 0, 5], "S must be positive.*first 0 at index 1"),
    ([32, -64, 128], [10, 6, 5], "B must be positive"),
    ([32, 64, 128], [10, np.nan, 5], "NaN"),
    ([32, 64, 128], [10, 6], "different lengths"),
])
def test_bad_points_are_refused(B, S, match):
    with pytest.raises(FitError, match=match):
        fit_critical_batch(B, S)


def test_steps_to_reach_a_target():
    steps = np.array([100.0, 200.0, 400.0, 800.0])
    loss = np.array([4.0, 3.0, 2.0, 1.5])
    assert steps_to_reach(steps, loss, 3.0) == pytest.approx(200.0)
    assert steps_to_reach(steps, loss, 2.5) == pytest.approx(math.sqrt(200 * 400))  # halfway in log step
    assert steps_to_reach(steps[::-1], loss[::-1], 2.5) == pytest.approx(math.sqrt(200 * 400))
    assert steps_to_reach(steps, loss, 5.0) == 100.0
    assert math.isnan(steps_to_reach(steps, loss, 1.0))


def test_min_steps_and_compute_invert_the_hyperbola():
    B, B_crit, S_min = np.array([64.0, 256.0, 1024.0]), 256.0, 1000.0
    S = steps_at_batch(B, S_min, B_crit)
    assert min_steps(S, B, B_crit) == pytest.approx(np.full(3, S_min))
    E = B * S  # examples; C ∝ E at a fixed size, so C_min ∝ E_min = S_min B_crit at every batch size
    assert min_compute(E, B, B_crit) == pytest.approx(np.full(3, S_min * B_crit))
    assert min_steps(S[1], B[1], B_crit) == pytest.approx(S[1] / 2)  # at B = B_crit, half the steps


def test_bcrit_of_loss_recovers_kaplans_constants():
    B_star, alpha_B = 2.1e8, 0.21  # Kaplan et al. Eq. 1.4
    L = np.linspace(2.5, 5.0, 12)
    rng = np.random.default_rng(3)
    B = bcrit_of_loss(L, B_star, alpha_B) * np.exp(rng.normal(0, 0.05, len(L)))
    res = fit_bcrit_loss(L, B, bootstrap=400, seed=0)
    assert res.params["alpha_B"] == pytest.approx(alpha_B, rel=0.05)
    assert res.params["B_star"] == pytest.approx(B_star, rel=0.5)
    assert res.contains("alpha_B", alpha_B) and res.contains("B_star", B_star)
    exact = fit_bcrit_loss(L, bcrit_of_loss(L, B_star, alpha_B))
    assert exact.params["alpha_B"] == pytest.approx(alpha_B, rel=1e-9)
    assert exact.params["B_star"] == pytest.approx(B_star, rel=1e-6)
    assert exact.predict([3.0])[0] == pytest.approx(B_star / 3.0 ** (1 / alpha_B))
    with pytest.raises(FitError, match="does not fall"):
        fit_bcrit_loss(L, 1e3 * L)
    with pytest.raises(FitError, match="at least 3"):
        fit_bcrit_loss([3.0, 4.0], [1e3, 1e2])


# --- the gradient noise scale --------------------------------------------------------------------
def test_noise_scale_from_exact_expectations():
    G2, trace = 0.5, 40.0
    est = noise_scale(G2 + trace / 8, G2 + trace / 64, 8, 64)  # E|G_B|^2 = |G|^2 + tr(Sigma)/B
    assert est.G2 == pytest.approx(G2) and est.trace_sigma == pytest.approx(trace)
    assert est.B_simple == pytest.approx(trace / G2) and est.n == 1
    many = noise_scale([G2 + trace / 8 + 1, G2 + trace / 8 - 1], [G2 + trace / 64] * 2, 8, 64)
    assert many.B_simple == pytest.approx(trace / G2) and many.n == 2  # means first, then the ratio
    assert math.isnan(noise_scale(10.0, 1.0, 8, 64).B_simple)  # |G|^2 estimated < 0
    assert math.isnan(noise_scale(1.0, 2.0, 8, 64).B_simple)  # tr(Sigma) estimated < 0
    with pytest.raises(ValueError, match="B_small < B_big"):
        noise_scale(1.0, 1.0, 64, 8)


def test_measured_noise_scale_of_linear_regression():
    """Least squares at w = w* + delta with x ~ N(0, I_d), y = x.w* + eps: G = delta and
    tr(Sigma) = (d + 1)|delta|^2 + d sigma^2, so B_simple = d + 1 + d sigma^2/|delta|^2."""
    torch.manual_seed(0)
    d, sigma = 8, 0.5
    w_star, delta = torch.randn(d), 0.3 * torch.randn(d)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    before = model.weight.detach().clone()

    def batches(n, B):
        for _ in range(n):
            x = torch.randn(B, d)
            yield x, x @ w_star + sigma * torch.randn(B)

    def loss(m, x, y):
        return 0.5 * ((m(x).squeeze(-1) - y) ** 2).mean()

    est = measure_noise_scale(model, loss, batches(800, 64), chunks=8)
    D2 = float(delta @ delta)
    assert (est.B_small, est.B_big, est.n) == (8, 64, 800)
    assert est.G2 == pytest.approx(D2, rel=0.1)
    assert est.trace_sigma == pytest.approx((d + 1) * D2 + d * sigma**2, rel=0.05)
    assert est.B_simple == pytest.approx(d + 1 + d * sigma**2 / D2, rel=0.1)
    assert torch.equal(model.weight, before) and model.weight.grad is None
    tokens = measure_noise_scale(model, loss, batches(4, 64), chunks=8, examples_per_item=128)
    assert (tokens.B_small, tokens.B_big) == (8 * 128, 64 * 128)
    with pytest.raises(ValueError, match="equal chunks"):
        measure_noise_scale(model, loss, batches(1, 60), chunks=8)


def _noise_record(key, N, B, points, lr=0.01):
    return dict(key=key, N=N, config=dict(n_layer=1, d_model=16, batch_size=B, n_ctx=128, lr=lr, seed=0),
                curve=points)


def test_noise_scale_curve_reads_b_simple_back_from_the_curves():
    measured = _noise_record("a", 3072, 8, [
        dict(step=0, tokens=0, val_loss=8.3, B_simple=None, G2=-0.1, trace_sigma=50.0),  # G2 <= 0: no B_simple
        dict(step=10, tokens=10_240, val_loss=6.0, B_simple=2000.0, G2=0.01, trace_sigma=20.0),
        dict(step=20, tokens=20_480, val_loss=5.5, B_simple=4000.0, G2=0.005, trace_sigma=20.0)])
    other = _noise_record("b", 12_288, 32, [dict(step=5, tokens=20_480, val_loss=5.0, B_simple=9000.0, G2=0.002,
                                                 trace_sigma=18.0)], lr=0.02)
    plain = _noise_record("c", 3072, 8, [dict(step=0, tokens=0, val_loss=8.3),
                                         dict(step=10, tokens=10_240, val_loss=6.0)])
    t = noise_scale_curve([measured, plain, other])
    assert list(t.columns) == NOISE_CURVE_COLUMNS
    assert {"N", "batch_size", "tokens", "val_loss", "B_simple"} <= set(t.columns)
    assert list(t["key"]) == ["a", "a", "a", "b"]  # a run that measured nothing is left out
    assert list(t["batch_size"]) == [8, 8, 8, 32] and list(t["N"]) == [3072] * 3 + [12_288]
    assert list(t["tokens"]) == [0, 10_240, 20_480, 20_480] and list(t["val_loss"]) == [8.3, 6.0, 5.5, 5.0]
    assert math.isnan(t["B_simple"].iloc[0]) and list(t["B_simple"].iloc[1:]) == [2000.0, 4000.0, 9000.0]
    assert t["G2"].iloc[0] == -0.1 and list(t["lr"]) == [0.01] * 3 + [0.02]
    assert all(t[c].dtype == float for c in ("val_loss", "B_simple", "G2", "trace_sigma"))
    empty = noise_scale_curve([plain])
    assert empty.empty and list(empty.columns) == NOISE_CURVE_COLUMNS


# --- python -m scaling_lib bcrit -----------------------------------------------------------------
@pytest.fixture
def points_csv(tmp_path) -> Path:
    """Two loss targets with known (S_min, B_crit), and a target measured at two batch sizes only."""
    rows = ["L,B,S"]
    for L, S_min, B_crit in ((3.5, 500.0, 300.0), (3.0, 2000.0, 1200.0)):
        for B, S in zip(BATCHES, steps_at_batch(BATCHES, S_min, B_crit) * np.exp(np.tile([0.02, -0.02], 9))):
            rows.append(f"{L},{B:g},{S:.6g}")
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "two.csv").write_text("\n".join(rows + ["2.5,64,9000", "2.5,128,5000"]) + "\n")
    (tmp_path / "zero.csv").write_text("\n".join(rows + ["3.0,64,0"]) + "\n")
    (tmp_path / "text.csv").write_text("\n".join(rows + ["3.0,sixty-four,100"]) + "\n")
    return tmp_path / "points.csv"


def test_bcrit_cli_prints_every_group_with_intervals(points_csv, capsys):
    assert main(["bcrit", "--csv", str(points_csv), "--batch", "B", "--steps", "S", "--group", "L",
                 "--bootstrap", "200", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["group"], out["bootstrap"], out["seed"]) == ("L", 200, 3)
    assert set(out["groups"]) == {"3.0", "3.5"}
    for key, (S_min, B_crit) in (("3.5", (500.0, 300.0)), ("3.0", (2000.0, 1200.0))):
        g = out["groups"][key]
        assert g["S_min"] == pytest.approx(S_min, rel=0.03) and g["B_crit"] == pytest.approx(B_crit, rel=0.05)
        assert g["E_min"] == pytest.approx(g["S_min"] * g["B_crit"])
        for name in ("S_min", "E_min", "B_crit"):
            lo, hi = g["ci"][name]
            assert lo <= g[name] <= hi
        assert g["n_points"] == 18 and g["batch_sizes"] == 9 and g["n_boot_ok"] == 200
    # without --group every row is one group
    assert main(["bcrit", "--csv", str(points_csv), "--batch", "B", "--steps", "S", "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["groups"]) == ["all"] and out["groups"]["all"]["ci"] == {}


@pytest.mark.parametrize("args, words", [
    (["--csv", "two.csv", "--group", "L"], ["group L=2.5", "2 batch size(s)", "at least 3"]),
    (["--csv", "zero.csv", "--group", "L"], ["column S", "not positive", "row 36"]),
    (["--csv", "text.csv"], ["column B", "non-numeric", "'sixty-four' at row 36"]),
    (["--csv", "points.csv", "--group", "target"], ["target not in", "has L, B, S"]),
    (["--csv", "missing.csv"], ["cannot read", "missing.csv"]),
    (["--csv", "points.csv", "--bootstrap", "-1"], ["--bootstrap must be >= 0"]),
])
def test_bcrit_cli_bad_input_exits_2_with_one_line(points_csv, capsys, args, words):
    args = [a if not a.endswith(".csv") else str(points_csv.parent / a) for a in args]
    assert main(["bcrit", "--batch", "B", "--steps", "S", *args]) == 2
    captured = capsys.readouterr()
    err = _one_error_line(captured.err)
    assert captured.out == "" and all(w in err for w in words), err


def test_bcrit_subprocess(points_csv):
    r = subprocess.run([sys.executable, "-m", "scaling_lib", "bcrit", "--csv", str(points_csv), "--batch", "B",
                        "--steps", "S", "--group", "L", "--bootstrap", "50"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups"]["3.5"]["B_crit"] == pytest.approx(300.0, rel=0.05)
    r = subprocess.run([sys.executable, "-m", "scaling_lib", "bcrit", "--csv", str(points_csv), "--batch", "batch",
                        "--steps", "S"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "batch not in" in _one_error_line(r.stderr)
