"""The batch sweep's curves to the critical batch: steps to targets, the rate re-tuned per batch, B_crit."""
import numpy as np
import pandas as pd
import pytest

from scaling_lib import batch_scan
from scaling_lib.config import RunConfig

BC = 24.0  # the true critical batch, in sequences
N_CTX = 16


def _loss(step, B, slow=1.0):
    """A curve whose steps to any loss follow S = S0(L) (1 + BC/B) exactly."""
    s = np.asarray(step, float) / ((1 + BC / B) * slow)
    return 3.0 + 5.0 / (1 + s / 50.0) ** 0.5


def _record(B: int, lr: float, slow: float, d_model=16):
    cfg = RunConfig(sweep="batch", corpus="tiny", n_layer=1, d_model=d_model, n_ctx=N_CTX, batch_size=B,
                    tokens=200_000 * B * N_CTX // 64, lr=lr, schedule="constant")
    steps = np.unique(np.geomspace(1, 400_000, 400).astype(int))
    curve = [dict(step=0, tokens=0, val_loss=8.3)] + [
        dict(step=int(s), tokens=int(s) * B * N_CTX, val_loss=float(_loss(s, B, slow))) for s in steps]
    return dict(key=f"{B}-{lr}-{d_model}", name="x", sweep="batch", config=cfg.to_dict(), N=cfg.N, tokens=cfg.tokens,
                curve=curve)


def _records(d_model=16):
    return [_record(B, lr, slow, d_model) for B in (4, 8, 16, 32, 64, 128) for lr, slow in ((1e-3, 1.0), (3e-3, 1.5))]


def test_the_best_rate_is_chosen_per_batch_and_flagged_at_an_edge():
    recs = _records()
    targets = {recs[0]["N"]: [4.0, 3.5]}
    best = batch_scan.best_rate_steps(batch_scan.steps_table(recs, targets))
    assert len(best) == 12 and set(best["lr"]) == {1e-3}
    assert best["lr_at_edge"].all()  # the winner is the lowest rate of a two-rate grid


def test_the_critical_batch_is_recovered_in_tokens_at_every_target():
    recs = _records()
    N = recs[0]["N"]
    best = batch_scan.best_rate_steps(batch_scan.steps_table(recs, {N: [4.5, 4.0, 3.6]}))
    crit = batch_scan.critical_by_target(best, bootstrap=30)
    assert len(crit) == 3 and (crit["why"] == "").all()
    assert np.allclose(crit["B_crit"], BC * N_CTX, rtol=0.03)
    assert (crit["B_crit_lo"] <= crit["B_crit"]).all() and (crit["B_crit"] <= crit["B_crit_hi"]).all()
    # S_min grows as the target falls
    assert crit.sort_values("target", ascending=False)["S_min"].is_monotonic_increasing


def test_targets_run_from_what_early_curves_passed_to_what_every_batch_reaches():
    recs = _records()
    targets = batch_scan.loss_targets(recs, n=4)
    (N, t), = targets.items()
    assert len(t) == 4 and t[0] > t[-1]
    best_by_batch = {}
    for r in recs:  # each batch size at its best rate
        B = r["config"]["batch_size"]
        best_by_batch[B] = min(best_by_batch.get(B, np.inf), min(p["val_loss"] for p in r["curve"]))
    third_best = sorted(best_by_batch.values())[2]  # at least three batch sizes reach every target
    assert t[-1] == pytest.approx(third_best + batch_scan.MARGIN)
    with pytest.raises(ValueError):
        batch_scan.loss_targets(recs, n=1)


def test_a_target_reached_by_too_few_batch_sizes_says_why():
    recs = [r for r in _records() if r["config"]["batch_size"] in (4, 8)]
    best = batch_scan.best_rate_steps(batch_scan.steps_table(recs, {recs[0]["N"]: [4.0]}))
    crit = batch_scan.critical_by_target(best, bootstrap=0)
    assert np.isnan(crit["B_crit"].iloc[0]) and "at least 3" in crit["why"].iloc[0]


def test_figs_10_and_18_draw():
    from scaling_lib import batch, plots

    recs = _records() + _records(d_model=24)
    targets = {r["N"]: [4.5, 4.0, 3.6] for r in recs}
    best = batch_scan.best_rate_steps(batch_scan.steps_table(recs, targets))
    crit = batch_scan.critical_by_target(best, bootstrap=10)
    one = best[best["N"] == best["N"].min()]
    fig = plots.steps_against_examples(one, crit[crit["N"] == best["N"].min()])
    assert len(fig.axes[0].get_lines()) == 6  # points and a hyperbola per target
    law = batch.fit_bcrit_loss(crit["target"], crit["B_crit"] * np.array([1.2, 1.1, 1.0] * 2))  # falls with L
    fig = plots.critical_batch_by_loss(crit, law)
    assert len(fig.axes[0].containers) == 2 and fig.axes[0].get_yscale() == "log"


def test_the_noise_scale_is_a_ratio_of_pooled_means_near_each_target():
    rows = [dict(N=768, val_loss=4.0 + d, G2=g, trace_sigma=s)
            for d, g, s in ((0.01, 1.0, 100.0), (-0.01, 3.0, 100.0), (0.5, 1.0, 10.0), (0.52, float("nan"), 1.0))]
    pooled = batch_scan.pooled_noise_scale(pd.DataFrame(rows), {768: [4.0, 4.5]})
    at4 = pooled[pooled["val_loss"] == 4.0].iloc[0]
    assert at4["points"] == 2 and at4["B_simple"] == pytest.approx(100.0 / 2.0)  # not the mean of 100 and 33
    assert pooled[pooled["val_loss"] == 4.5]["B_simple"].iloc[0] == pytest.approx(10.0)  # the NaN point left out


def _record_law(B: int, alpha_B=0.25, b_star=24.0 * 4.0**4):
    """A run whose steps to loss L are S0(L) (1 + B_crit(L)/B), B_crit(L) = b*/L^(1/α_B) sequences."""
    cfg = RunConfig(sweep="batch", corpus="tiny", n_layer=1, d_model=16, n_ctx=N_CTX, batch_size=B,
                    tokens=1_000_000, lr=1e-3, schedule="constant")
    L = np.linspace(7.9, 3.2, 300)
    S0 = 50.0 * ((5.0 / (L - 3.0)) ** 2 - 1)
    S = np.maximum(S0, 1e-3) * (1 + b_star / L ** (1 / alpha_B) / B)
    curve = [dict(step=float(s), tokens=float(s) * B * N_CTX, val_loss=float(l)) for s, l in zip(S, L) if s > 0.5]
    return dict(key=f"law-{B}", name="x", sweep="batch", config=cfg.to_dict(), N=cfg.N, tokens=cfg.tokens, curve=curve)


def test_analyse_fits_the_critical_batch_law_or_says_why_not():
    scan = batch_scan.analyse([_record_law(B) for B in (4, 8, 16, 32, 64, 128)], bootstrap=10)
    assert scan.law is not None and scan.why == ""
    assert scan.law.params["alpha_B"] == pytest.approx(0.25, rel=0.05)
    flat = batch_scan.analyse(_records(), bootstrap=0)  # B_crit the same at every loss
    assert flat.law is None and "does not fall" in flat.why
    none = batch_scan.analyse([], bootstrap=0)
    assert none.law is None and "at least 3" in none.why and none.crit.empty


def test_each_sizes_offset_from_the_shared_law_is_its_median_ratio_to_it():
    from scaling_lib.batch import fit_bcrit_loss

    L = np.array([4.0, 4.5, 5.0])
    law = fit_bcrit_loss(L, 1e8 / L ** 4)  # B_crit = 1e8 / L^4 exactly
    crit = pd.DataFrame(dict(N=[1] * 3 + [2] * 3, target=[*L, *L],
                             B_crit=[*(2e8 / L ** 4), *(0.5e8 / L ** 4)]))
    off = batch_scan.offset_by_size(pd.concat([crit, pd.DataFrame([dict(N=2, target=4.2, B_crit=np.nan)])]), law)
    assert list(off.index) == [1, 2] and off.to_numpy() == pytest.approx([2.0, 0.5])


def test_fig_10_draws_an_interval_that_misses_its_point():
    from scaling_lib import plots

    crit = pd.DataFrame([dict(N=768, target=4.0, B_crit=100.0, B_crit_lo=120.0, B_crit_hi=300.0),
                         dict(N=768, target=4.5, B_crit=80.0, B_crit_lo=50.0, B_crit_hi=90.0)])
    fig = plots.critical_batch_by_loss(crit)  # a percentile interval above its point estimate
    assert len(fig.axes[0].containers) == 1


def test_one_size_gives_b_crit_of_l_without_an_interval():
    scan = batch_scan.analyse([_record_law(B) for B in (4, 8, 16, 32, 64, 128)], bootstrap=20)
    assert scan.law is not None and scan.law.ci == {} and scan.law.n_boot == 0
