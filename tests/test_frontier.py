"""The compute-efficient frontier (Kaplan App. B): consistency, the paper's own numbers, the contradiction."""
import math

import numpy as np
import pytest

from scaling_lib import fit
from scaling_lib.frontier import Frontier, contradiction
from scaling_lib.laws import KAPLAN

K = Frontier(alpha_N=KAPLAN["L(N,S)"]["alpha_N"], N_c=KAPLAN["L(N,S)"]["N_c"], alpha_S=KAPLAN["L(N,S)"]["alpha_S"],
             S_c=KAPLAN["L(N,S)"]["S_c"], alpha_B=KAPLAN["B_crit(L)"]["alpha_B"], B_star=KAPLAN["B_crit(L)"]["B_star"])
PF_DAY = 8.64e19


def test_the_optimum_is_consistent_with_its_defining_equations():
    C = np.geomspace(1e15, 1e24, 7)
    N, S, B = K.N_opt(C), K.S_opt(C), K.B_opt(C)
    assert np.allclose(6 * N * B * S, C, rtol=1e-9)  # the budget is spent
    assert np.allclose(fit.kaplan_ns(N, S, K.alpha_N, K.N_c, K.alpha_S, K.S_c), K.loss(C), rtol=1e-9)  # on Eq. 1.6
    assert np.allclose(K.loss(C), (1 + K.r) * (K.N_c / N) ** K.alpha_N)  # B.5
    # and no other size does better with the same compute
    for c in C[[0, 3, 6]]:
        for k in (0.5, 2.0):
            n = k * K.N_opt(c)
            L = brute_loss(n, c)
            assert L > K.loss(c)


def brute_loss(N, C):
    """L at size N and compute C, solving L = (N_c/N)^α_N + (S_c/S)^α_S with S = C/(6 N B_crit(L))."""
    def g(L):
        S = C / (6 * N * K.B_star / L ** (1 / K.alpha_B))
        return (K.N_c / N) ** K.alpha_N + (K.S_c / S) ** K.alpha_S - L
    from scipy.optimize import brentq
    return brentq(g, 1e-3, 100.0)


def test_kaplans_exponents_give_kaplans_numbers():
    assert K.alpha_C == pytest.approx(0.052, abs=0.002)  # §6.2: 0.054 with their rounded exponents
    assert K.N_exponent == pytest.approx(0.70, abs=0.02)  # §6.2: C^0.71
    v = K.versus_converged(0.02)
    assert v["parameters"] == pytest.approx(2.7, abs=0.05)  # B.3
    assert v["steps"] == pytest.approx(0.13, abs=0.01)
    assert v["compute"] == pytest.approx(0.35, abs=0.02)
    c, s = K.off_optimum([0.6, 1.0, 2.2])
    assert c[1] == pytest.approx(1.0) and s[1] == pytest.approx(1.0)
    assert 1.1 < c[0] < 1.3 and 1.1 < c[2] < 1.3  # B.4: 0.6x-2.2x costs about 20% more
    assert s[2] == pytest.approx(0.55, abs=0.05)  # a 2.2x larger model: 45% fewer steps
    assert np.isnan(K.off_optimum(0.01)[0])  # far too small never reaches the loss


def test_the_contradiction_lies_far_beyond_the_paper_with_its_constants():
    nd = KAPLAN["L(N,D)"]
    x = contradiction(K, nd["alpha_D"], nd["D_c"])
    # §6.3 puts it near 1e4 PF-days from the empirical trends of Figs. 13-14; from the App. B frontier of
    # Eq. 1.6 and Eq. 1.5's data term it falls near 1e7 ("highly sensitive to the precise exponents")
    assert 1e6 < x["C"] / PF_DAY < 1e8
    assert x["L"] == pytest.approx((nd["D_c"] / x["D"]) ** nd["alpha_D"], rel=1e-6)
    assert math.isnan(contradiction(K, nd["alpha_D"], nd["D_c"], C_range=(1.0, 10.0))["C"])
    # Kaplan's case: beyond C* the frontier promises less than its tokens allow
    assert x["beyond"]
    above = x["C"] * 10
    assert K.loss(above) < (nd["D_c"] / K.D_opt(above)) ** nd["alpha_D"]
    # a data exponent steep enough turns it round: the frontier lies below L(D) only short of C*
    steep = contradiction(K, 1.0, nd["D_c"])
    assert not steep["beyond"]
    for C, below in ((steep["C"] / 10, True), (steep["C"] * 10, False)):
        assert (K.loss(C) < nd["D_c"] / K.D_opt(C)) == below


def test_bad_constants_are_refused():
    with pytest.raises(ValueError, match="alpha_S"):
        Frontier(0.07, 1e13, 0.0, 2e3, 0.2, 2e8)
    with pytest.raises(ValueError):
        K.versus_converged(0.0)


def test_the_sizes_within_20_percent_and_the_split_of_a_growing_budget():
    lo, hi = K.sizes_within(0.2)
    assert 0.4 < lo < 0.8 and 1.8 < hi < 2.6  # B.4: 0.6x-2.2x
    assert K.off_optimum(lo)[0] == pytest.approx(1.2, rel=1e-6) and K.off_optimum(hi)[0] == pytest.approx(1.2, rel=1e-6)
    e = K.exponents()
    assert e["N"] + e["B"] + e["S"] == pytest.approx(1.0)
    assert e["N"] == pytest.approx(K.N_exponent) and 0.2 < e["B"] < 0.3 and e["S"] < 0.1  # Table 6: 0.73, 0.24, 0.03


def test_figs_12_and_15_draw():
    from scaling_lib import plots

    fig = plots.off_optimum(K)
    assert len(fig.axes[0].get_lines()) == 3
    nd = KAPLAN["L(N,D)"]
    x = contradiction(K, nd["alpha_D"], nd["D_c"])
    fig = plots.frontier_and_data(K, nd["alpha_D"], nd["D_c"], x)
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[0].collections) == 1
