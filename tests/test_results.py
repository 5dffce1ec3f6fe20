"""The results record: what a chapter measured, beside the paper's value, stored deterministically."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scaling_lib import fit, results


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    results.reset()
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "_results"))
    yield tmp_path / "_results"
    results.reset()


def test_verdict_reads_the_interval():
    assert results.verdict(0.07, 0.06, 0.08, 0.076) == "agrees"
    assert results.verdict(0.05, 0.04, 0.06, 0.076) == "differs"
    assert results.verdict(0.05, None, None, 0.076) == "no interval"
    assert results.verdict(0.05, 0.04, 0.06, None) == "no paper value"
    assert results.verdict(2e8, 1e8, 3e8, 2.1e8, scale=True) == "other units"  # a scale is compared in the table only
    r = results.record("x", "bs_B_star", 2e8, (1e8, 3e8), paper="B_star")
    assert r.verdict == "other units" and results.counts([r])["other units"] == 1


def test_record_writes_the_chapters_results_in_order_and_reads_back(fresh):
    results.record("04_model_size", "a", 0.0712345678, (0.07, 0.08), paper="alpha_N", label="α_N")
    results.record("04_model_size", "b", 0.2, (0.15, 0.25), paper="alpha_N", why="small models")
    results.record("05_data_compute", "c", 0.1, None, paper="alpha_D")
    data = json.loads((fresh / "04_model_size.json").read_text())
    assert [r["name"] for r in data["results"]] == ["a", "b"]
    a = data["results"][0]
    assert a["value"] == 0.0712346  # six significant digits: stable across reruns
    assert a["paper_value"] == results.PAPER["alpha_N"].value and "Eq. 1.1" in a["paper_source"]
    assert a["verdict"] == "agrees"
    loaded = results.load(fresh, ["05_data_compute", "04_model_size"])
    assert [r.name for r in loaded] == ["c", "a", "b"]
    assert loaded[0].verdict == "no interval" and loaded[0].ci_text.startswith("n/a")
    assert loaded[2].verdict == "differs"


def test_recording_the_same_results_again_writes_the_same_bytes(fresh):
    results.record("x", "a", 1 / 3, (0.3, 0.4), paper="alpha_N")
    first = (fresh / "x.json").read_bytes()
    results.reset()
    results.record("x", "a", 1 / 3 + 1e-12, (0.3, 0.4), paper="alpha_N")
    assert (fresh / "x.json").read_bytes() == first


def test_record_from_a_fit_with_and_without_intervals(fresh):
    N = np.geomspace(1e3, 1e6, 8)
    L = (1e9 / N) ** 0.07 * np.exp(np.random.default_rng(0).normal(0, 0.003, 8))
    with_ci = fit.fit("power", N, L, bootstrap=30, seed=0)
    r = results.record("x", "a", None, fit=with_ci, param="alpha", paper="alpha_N")
    assert r.lo is not None and r.lo <= r.value <= r.hi
    no_ci = fit.fit("power", N, L)
    r = results.record("x", "b", None, fit=no_ci, param="alpha", paper="alpha_N")
    assert r.lo is None and r.verdict == "no interval" and r.ci_text == "n/a (no bootstrap)"
    with pytest.raises(ValueError):
        results.record("x", "c", None, fit=no_ci)


def test_a_fit_whose_interval_reaches_the_cap_records_a_lower_end_only(fresh):
    import dataclasses

    N = np.geomspace(1e3, 1e6, 8)
    L = (1e9 / N) ** 0.07 * np.exp(np.random.default_rng(0).normal(0, 0.003, 8))
    r = fit.fit("power-offset", N, L, bootstrap=10, seed=0)
    boot = r.boot_params.copy()
    boot.loc[boot.index[:2], "alpha"] = fit.EXPONENT_CAP
    capped = dataclasses.replace(r, ci={**r.ci, "alpha": (0.034, fit.EXPONENT_CAP)}, boot_params=boot)
    res = results.record("x", "a", None, fit=capped, param="alpha", paper="alpha_D")
    assert res.lo == 0.034 and res.hi is None and res.verdict == "no interval"
    assert res.ci_text == f"≥ 0.034 ({capped.cap_text('alpha')})" and "2 of 10 resamples" in res.ci_text
    loaded = results.load(fresh, ["x"])[0]
    assert loaded.ci_text == res.ci_text


def test_unknown_paper_value_is_an_error():
    with pytest.raises(KeyError):
        results.record("x", "a", 1.0, paper="alpha_Q")


def test_without_a_results_dir_nothing_is_written(monkeypatch, tmp_path):
    monkeypatch.delenv(results.RESULTS_ENV)
    monkeypatch.chdir(tmp_path)
    results.record("x", "a", 1.0)
    assert results.results_dir() is None and not list(tmp_path.rglob("*.json"))


def test_glance_table_links_chapters_and_counts_verdicts(fresh):
    results.record("04_model_size", "a", 0.07, (0.06, 0.08), paper="alpha_N", label="α_N at 16M")
    results.record("04_model_size", "b", 0.2, (0.15, 0.25), paper="nd_alpha_D", why="budgets short of convergence")
    stored = results.load(fresh)
    table = results.glance_table(stored, {"04_model_size": "Performance with model size"})
    assert list(table.columns) == ["quantity", "chapter", "book (95% interval)", "paper", "verdict"]
    assert table.loc[0, "chapter"] == "[Performance with model size](04_model_size.ipynb)"
    assert table.loc[0, "book (95% interval)"] == "0.070 (0.060–0.080)"
    assert table.loc[1, "verdict"] == "differs: budgets short of convergence"
    assert "Table 2" in table.loc[1, "paper"]
    md = results.markdown_table(table)
    assert md.splitlines()[0].startswith("| quantity |") and len(md.splitlines()) == 4
    assert results.counts(stored) == {"agrees": 1, "differs": 1, "no interval": 0, "no paper value": 0,
                                      "other units": 0}


def test_every_paper_value_names_its_source():
    for key, pv in results.PAPER.items():
        assert pv.source and ("Eq." in pv.source or "Table" in pv.source or "Fig." in pv.source or "§" in pv.source), key
        assert np.isfinite(pv.value)


def test_a_laws_scale_is_told_apart_from_an_exponent(fresh):
    scale = results.record("15_batch_size", "bs_B_star", 2.5e12, paper="B_star", glue=False)
    exponent = results.record("15_batch_size", "bs_alpha_B", 0.09, paper="alpha_B", glue=False)
    unpaired = results.record("15_batch_size", "bs_other", 1.0, glue=False)
    assert [results.is_scale(r) for r in (scale, exponent, unpaired)] == [True, False, False]
    assert {k for k, pv in results.PAPER.items() if pv.scale} == {"B_star", "ns_S_c"}
