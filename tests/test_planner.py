"""Compute-optimal allocation: Kaplan's Table 6, Chinchilla's closed form, the book's stored fit, the plan command."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from scaling_lib import planner, results
from scaling_lib.cli import main
from scaling_lib.laws import BESIROGLU, CHINCHILLA

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --- kaplan ----------------------------------------------------------------------------------------
def test_kaplan_at_one_pf_day_is_table_6s_prefactors():
    p = planner.plan(planner.get_law("kaplan"), planner.to_flops(1, "pf-days"))
    a = p.allocation
    assert p.C == 8.64e19 and p.warnings == ()
    assert a["N_opt"] == pytest.approx(1.3e9) and a["B"] == pytest.approx(2.0e6)
    assert a["S_min"] == pytest.approx(5.4e3) and a["S"] == pytest.approx(1.08e4)
    assert a["D_opt"] == pytest.approx(2e10)
    assert a["L"] == pytest.approx(2.658, abs=5e-4)  # (3.1e8)^0.05 = exp(0.05 ln 3.1e8) = exp(0.9776)
    assert a["B"] * a["S"] == pytest.approx(a["D_opt"], rel=0.1)  # one epoch at B_crit, S = 2 S_min


def test_kaplan_exponents_by_hand():
    law = planner.get_law("kaplan")
    ten = law.optimum(10 * planner.PF_DAY)
    assert ten["N_opt"] == pytest.approx(6.98e9, rel=1e-3)  # 1.3e9 x 10^0.73 = 1.3e9 x 5.370
    assert ten["B"] == pytest.approx(3.476e6, rel=1e-3)  # 2.0e6 x 10^0.24 = 2.0e6 x 1.738
    assert ten["S_min"] == pytest.approx(5.786e3, rel=1e-3)  # 5.4e3 x 10^0.03 = 5.4e3 x 1.0715
    assert ten["L"] == pytest.approx(2.658 / 10**0.05, rel=1e-3)
    # 10x the compute: 5.4x the parameters, 1.9x the data (Kaplan et al. §1; Hoffmann et al. quote 5.5x, 1.8x)
    one = law.optimum(planner.PF_DAY)
    assert ten["N_opt"] / one["N_opt"] == pytest.approx(5.37, rel=1e-3)
    assert ten["D_opt"] / one["D_opt"] == pytest.approx(1.86, rel=1e-2)
    assert planner.to_flops("8.64e20") == planner.to_flops(10, "pf-days")


# --- chinchilla and besiroglu ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["chinchilla", "besiroglu"])
@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e26])
def test_closed_form_matches_a_numerical_minimisation(name, C):
    law = planner.get_law(name)
    closed = law.optimum(C)
    assert 6 * closed["N_opt"] * closed["D_opt"] == pytest.approx(C)
    # independently of planner.numerical_optimum: Nelder-Mead on log N from a start a decade off
    r = minimize(lambda x: float(law.loss(math.exp(x[0]), C / (6 * math.exp(x[0])))),
                 [math.log(closed["N_opt"]) + 2.3], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-14})
    assert math.exp(r.x[0]) == pytest.approx(closed["N_opt"], rel=1e-4)
    num = planner.numerical_optimum(law, C)
    assert num["N_opt"] == pytest.approx(closed["N_opt"], rel=1e-5)
    assert num["L"] == pytest.approx(closed["L"], rel=1e-12) and num["L"] <= closed["L"] + 1e-12
    for f in (0.5, 2.0):  # any other split of the same budget is worse
        assert float(law.loss(f * closed["N_opt"], closed["D_opt"] / f)) > closed["L"]


def test_chinchilla_exponents_and_constants():
    ch, be = planner.get_law("chinchilla"), planner.get_law("besiroglu")
    assert ch.params == CHINCHILLA and be.params == BESIROGLU
    # N_opt ~ C^(beta/(alpha+beta)): 0.28/0.62 = 0.452 (Hoffmann's Approach 3: 0.46); Besiroglu's 0.513
    for law, a in ((ch, 0.28 / 0.62), (be, 0.366 / 0.714)):
        ratio = law.optimum(1e22)["N_opt"] / law.optimum(1e21)["N_opt"]
        assert math.log10(ratio) == pytest.approx(a, rel=1e-9)
    assert 0.366 / 0.714 == pytest.approx(0.513, abs=1e-3)
    # Besiroglu's fit: about 20 tokens per parameter near Chinchilla's budget
    b = be.optimum(5.76e23)
    assert 15 < b["D_opt"] / b["N_opt"] < 30


def test_a_budget_outside_the_fitted_range_warns():
    ch = planner.get_law("chinchilla")
    assert planner.plan(ch, 1e20).warnings == ()
    (w,) = planner.plan(ch, 1e23).warnings
    assert "above" in w and "6e+18 to 3e+21 FLOPs" in w and "extrapolation" in w
    (w,) = planner.plan(planner.get_law("kaplan"), 1e-10 * planner.PF_DAY).warnings
    assert "below" in w and "kaplan" in w
    assert planner.plan(planner.get_law("kaplan"), 1.0 * planner.PF_DAY).warnings == ()


@pytest.mark.parametrize("args, match", [
    ((0,), "positive"), ((-3,), "positive"), (("abc",), "must be a number"), ((float("inf"),), "positive"),
    ((1, "gigaflops"), "unknown unit 'gigaflops'"),
])
def test_bad_budgets_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        planner.to_flops(*args)


def test_unknown_law_is_refused():
    with pytest.raises(ValueError, match="unknown law 'gpt'; expected one of kaplan, chinchilla, besiroglu, book"):
        planner.get_law("gpt")


# --- book ------------------------------------------------------------------------------------------
BOOK = dict(E=2.0, A=30.0, B=900.0, alpha=0.24, beta=0.49)


@pytest.fixture
def book_results(tmp_path, monkeypatch):
    """A results folder holding what the model-size chapter must record for --law book."""
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    results.reset()
    for k, v in BOOK.items():
        results.record("04_model_size", f"ms_GPU_ch_{k}", v, (0.9 * v, 1.1 * v), glue=False)
    results.record("04_model_size", "ms_GPU_ch_C_lo", 1e12, glue=False)
    results.record("04_model_size", "ms_GPU_ch_C_hi", 2e16, glue=False)
    yield tmp_path
    results.reset()


def test_book_law_reads_the_chapters_stored_fit(book_results):
    law = planner.get_law("book")
    assert law.params == BOOK and law.C_range == (1e12, 2e16) and law.N_counts == "non-embedding parameters"
    got = law.optimum(1e14)
    assert got["N_opt"] == pytest.approx(planner.numerical_optimum(law, 1e14)["N_opt"], rel=1e-5)
    assert got["L"] == pytest.approx(2.0 + 30.0 / got["N_opt"] ** 0.24 + 900.0 / got["D_opt"] ** 0.49)
    assert planner.plan(law, 1e14).warnings == () and len(planner.plan(law, 1e18).warnings) == 1


def test_book_law_names_the_missing_records(book_results):
    data = json.loads((book_results / "04_model_size.json").read_text())
    data["results"] = [r for r in data["results"] if r["name"] not in ("ms_GPU_ch_A", "ms_GPU_ch_C_hi")]
    (book_results / "04_model_size.json").write_text(json.dumps(data))
    with pytest.raises(LookupError, match="to record ms_GPU_ch_A, ms_GPU_ch_C_hi in .*04_model_size.json"):
        planner.get_law("book")
    (book_results / "04_model_size.json").unlink()
    with pytest.raises(LookupError, match="04_model_size.json, which the 04_model_size chapter writes"):
        planner.get_law("book")


def test_book_law_from_the_checkout_works_or_names_what_is_missing(monkeypatch):
    """Read only: the repository's own book/_results."""
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    try:
        law = planner.get_law("book")
    except LookupError as e:
        assert "ms_GPU_ch_E" in str(e) and "04_model_size.json" in str(e)
    else:
        assert set(law.params) == set(planner.BOOK_PARAMS) and law.C_range[0] < law.C_range[1]


# --- python -m scaling_lib plan ----------------------------------------------------------------------
def test_plan_cli_prints_json(capsys):
    assert main(["plan", "--compute", "1", "--unit", "pf-days", "--law", "kaplan"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert captured.err == "" and out["warnings"] == []
    assert out["law"] == "kaplan" and out["C_flops"] == 8.64e19 and out["C_pf_days"] == 1.0
    assert out["N_opt"] == pytest.approx(1.3e9) and out["D_opt"] == pytest.approx(2e10)
    assert {"B", "S", "S_min", "L"} <= set(out) and out["N_counts"] == "non-embedding parameters"
    assert "Table 6" in out["sources"]["N_opt"]
    assert main(["plan", "--compute", "1e21", "--law", "chinchilla"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["N_opt"] == pytest.approx(planner.get_law("chinchilla").optimum(1e21)["N_opt"])
    assert "B" not in out and "S" not in out and "L" in out and out["params"] == CHINCHILLA


def test_plan_cli_warns_outside_the_range(capsys):
    assert main(["plan", "--compute", "1e24", "--law", "besiroglu"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["warnings"]) == 1 and "above the besiroglu law's fitted range" in out["warnings"][0]
    assert captured.err.strip() == f"warning: {out['warnings'][0]}"


@pytest.mark.parametrize("args, words", [
    (["--compute", "0", "--law", "kaplan"], ["positive"]),
    (["--compute=-1e20", "--law", "chinchilla"], ["positive"]),  # argparse takes a bare -1e20 for an option
    (["--compute", "lots", "--law", "chinchilla"], ["must be a number", "'lots'"]),
    (["--compute", "1e20", "--law", "gpt"], ["unknown law 'gpt'"]),
    (["--compute", "1e20", "--law", "kaplan", "--unit", "joules"], ["unknown unit 'joules'", "flops, pf-days"]),
])
def test_plan_cli_bad_input_exits_2_with_one_line(capsys, args, words):
    assert main(["plan", *args]) == 2
    captured = capsys.readouterr()
    err = _one_error_line(captured.err)
    assert captured.out == "" and all(w in err for w in words), err


def test_plan_cli_book_without_its_records_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    assert main(["plan", "--compute", "1e14", "--law", "book"]) == 2
    assert "--law book needs" in _one_error_line(capsys.readouterr().err)


def test_plan_subprocess():
    r = subprocess.run([sys.executable, "-m", "scaling_lib", "plan", "--compute", "5.76e23", "--law", "chinchilla"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "warning: " in r.stderr
    out = json.loads(r.stdout)
    assert np.isclose(6 * out["N_opt"] * out["D_opt"], 5.76e23)
    r = subprocess.run([sys.executable, "-m", "scaling_lib", "plan", "--compute", "-5", "--law", "chinchilla"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "positive" in _one_error_line(r.stderr)
