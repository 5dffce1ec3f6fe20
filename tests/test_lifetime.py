"""Training plus serving (scaling_lib.lifetime): the cheapest model for a target loss against the
compute-optimal one, units, the latency bound, and the plan command's options."""
from __future__ import annotations

import json
import math

import pytest

from scaling_lib import lifetime as lt
from scaling_lib import planner
from scaling_lib.cli import main
from scaling_lib.fit import chinchilla

CHIN = planner.get_law("chinchilla")
C = 5.76e23  # Chinchilla's own budget (Hoffmann et al. 2022, §4)


def _target() -> float:
    return planner.plan(CHIN, C).allocation["L"]


def test_tokens_for_loss_inverts_the_law():
    N, target = 1e9, 2.2
    D = lt.tokens_for_loss(CHIN, N, target)
    assert float(chinchilla(N, D, **CHIN.params)) == pytest.approx(target, rel=1e-10)
    assert lt.tokens_for_loss(CHIN, 1e6, 2.0) == math.inf  # E + A/N^alpha > 2.0 at a million parameters


def test_without_serving_the_cheapest_model_is_the_compute_optimal_one():
    p = planner.plan(CHIN, C).allocation
    best = lt.cheapest(CHIN, p["L"])
    assert best["N"] == pytest.approx(p["N_opt"], rel=1e-4)
    assert best["D"] == pytest.approx(p["D_opt"], rel=1e-4)
    assert best["train_flops"] == pytest.approx(C, rel=1e-6) and best["inference_flops"] == 0


def test_more_serving_buys_a_smaller_model_trained_longer():
    # Sardana et al. 2024, Fig. 1: as inference demand grows, N_opt falls and tokens per parameter rise
    rows = [lt.cheapest(CHIN, _target(), T) for T in (0.0, 1e11, 1e12, 1e13, 1e14)]
    Ns, ratios = [r["N"] for r in rows], [r["tokens_per_parameter"] for r in rows]
    assert Ns == sorted(Ns, reverse=True) and Ns[-1] < 0.5 * Ns[0]
    assert ratios == sorted(ratios)
    for r in rows[1:]:  # and it is cheaper than the compute-optimal model over the same life
        plan = lt.lifetime_plan(CHIN, _target(), r["inference_flops"] / (2 * r["N"]))
        assert plan["saving_over_compute_optimal"] >= -1e-9


def test_the_optimum_is_a_minimum_of_the_total():
    target, T = _target(), 1e13
    best = lt.cheapest(CHIN, target, T)
    for f in (0.9, 1.1):
        N = best["N"] * f
        other = 6 * N * lt.tokens_for_loss(CHIN, N, target) + 2 * N * T
        assert other > best["total_flops"]


def test_hours_and_dollars_follow_the_flops_and_the_spot_discount():
    prices = lt.Prices(throughput=4e14, price_per_hour=2.0, spot_discount=0.25)
    plan = lt.lifetime_plan(CHIN, _target(), 1e12, prices)
    best = plan["lifetime_optimal"]
    assert plan["minimised"] == "dollars"
    assert best["train_device_hours"] == pytest.approx(best["train_flops"] / 4e14 / 3600)
    assert best["dollars"] == pytest.approx(2.0 * (0.75 * best["train_device_hours"] + best["inference_device_hours"]))
    # a discount on training makes training cheaper against serving: a smaller model trained longer
    flops_only = lt.lifetime_plan(CHIN, _target(), 1e12)["lifetime_optimal"]
    assert flops_only["dollars"] is None and flops_only["total_device_hours"] is None
    assert best["N"] < flops_only["N"]


def test_a_latency_bound_caps_the_size_and_says_what_it_costs():
    free = lt.cheapest(CHIN, _target(), 1e12)
    lat = lt.Latency(max_ms=20.0, ms_per_layer=0.5, aspect=128.0)
    assert lat.max_n_layer == 40 and lat.max_N == pytest.approx(12 * 128**2 * 40**3)
    assert lat.ms(lat.max_N) == pytest.approx(20.0)
    assert free["N"] > lat.max_N  # binding here
    plan = lt.lifetime_plan(CHIN, _target(), 1e12, latency=lat)
    best, info = plan["lifetime_optimal"], plan["latency"]
    assert best["at_bound"] and best["N"] == pytest.approx(lat.max_N, rel=1e-6)
    assert info["binding"] and info["extra_cost_of_bound"] > 0
    assert info["ms_of_plan"] == pytest.approx(20.0) and info["ms_without_bound"] > 20.0
    loose = lt.lifetime_plan(CHIN, _target(), 1e12, latency=lt.Latency(max_ms=1e4, ms_per_layer=0.5))
    assert not loose["latency"]["binding"] and loose["latency"]["extra_cost_of_bound"] == pytest.approx(0, abs=1e-6)


def test_an_unreachable_target_is_refused():
    with pytest.raises(lt.Unreachable, match="no model size"):
        lt.cheapest(CHIN, CHIN.params["E"] - 0.1)
    with pytest.raises(lt.Unreachable, match="latency bound"):
        lt.lifetime_plan(CHIN, 1.9, latency=lt.Latency(max_ms=1.0, ms_per_layer=0.5))


@pytest.mark.parametrize("make, match", [
    (lambda: lt.Prices(throughput=-1.0), "throughput"),
    (lambda: lt.Prices(throughput=1e12, spot_discount=1.0), "spot discount"),
    (lambda: lt.Prices(price_per_hour=2.0), "needs a throughput"),
    (lambda: lt.Latency(max_ms=5.0, ms_per_layer=0.0), "per layer"),
    (lambda: lt.Latency(max_ms=5.0, ms_per_layer=1.0, ms_base=6.0), "no time"),
])
def test_bad_assumptions_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_kaplan_law_says_its_loss_is_an_early_stopped_one():
    plan = lt.lifetime_plan(planner.get_law("kaplan"), 2.7, 1e12)
    assert any("early-stopped" in w for w in plan["warnings"])
    assert lt.lifetime_plan(CHIN, _target())["warnings"] == []


def _plan(capsys, *args):
    rc = main(["plan", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_cli_adds_a_lifetime_plan_with_its_units(capsys):
    rc, out, err = _plan(capsys, "--compute", "5.76e23", "--law", "chinchilla", "--inference-tokens", "1e13",
                         "--throughput", "4e14", "--price-per-hour", "2", "--spot-discount", "0.3",
                         "--max-latency-ms", "20", "--latency-ms-per-layer", "0.5", "--aspect-ratio", "128")
    assert rc == 0
    d = json.loads(out)
    assert d["N_opt"] == pytest.approx(planner.plan(CHIN, C).allocation["N_opt"])  # the old answer is still there
    life = d["lifetime"]
    assert life["target_loss"] == pytest.approx(d["L"]) and "compute-optimal plan" in life["target_from"]
    assert life["minimised"] == "dollars" and life["lifetime_optimal"]["dollars"] > 0
    assert life["latency"]["binding"] and life["assumptions"]["throughput_flops_per_s"] == 4e14
    assert life["saving_over_compute_optimal"] > 0


def test_plan_cli_without_lifetime_options_answers_as_before(capsys):
    rc, out, _ = _plan(capsys, "--compute", "1e20", "--law", "chinchilla")
    assert rc == 0 and "lifetime" not in json.loads(out)


@pytest.mark.parametrize("args, words", [
    (["--max-latency-ms", "20"], "--latency-ms-per-layer"),
    (["--latency-ms-per-layer", "0.5"], "--max-latency-ms"),
    (["--price-per-hour", "2"], "throughput"),
    (["--inference-tokens", "-5"], "inference tokens"),
    (["--target-loss", "0.5"], "no model size"),
])
def test_plan_cli_bad_lifetime_input_is_one_line(capsys, args, words):
    rc, out, err = _plan(capsys, "--compute", "1e20", "--law", "chinchilla", *args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and out == "" and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


def test_plan_cli_takes_the_latency_line_from_a_filed_timing(capsys, tmp_path):
    timing = dict(device="cpu:x86_64", fixed_N=300000.0, threads=1, head_size=8, shapes=[],
                  fits={"generate_batch_1_s_per_token": dict(slope=0.0005, intercept=0.002, r2=0.999, ratio=3.0,
                                                             residuals=[])})
    path = tmp_path / "t.json"
    path.write_text(json.dumps(timing))
    common = ["--compute", "5.76e23", "--law", "chinchilla", "--inference-tokens", "1e13", "--max-latency-ms", "60"]
    rc, out, err = _plan(capsys, *common, "--latency-fit", str(path))
    assert rc == 0, err
    life = json.loads(out)["lifetime"]
    assert life["latency"]["ms_per_layer"] == pytest.approx(0.5) and life["latency"]["ms_base"] == pytest.approx(2.0)
    assert life["latency_from"]["fixed_N"] == 300000.0 and life["latency_from"]["r2"] == 0.999
    rc, _, err = _plan(capsys, *common, "--latency-fit", str(path), "--latency-ms-per-layer", "0.5")
    assert rc == 2 and "not both" in err
    (tmp_path / "bad.json").write_text("{}")
    rc, _, err = _plan(capsys, *common, "--latency-fit", str(tmp_path / "bad.json"))
    assert rc == 2 and "no batch-1 generation fit" in err and "Traceback" not in err
