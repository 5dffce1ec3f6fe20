"""What a chapter shows besides its analysis: tables without index, figures, the reproduce box."""
from __future__ import annotations

import pandas as pd
import pytest

from scaling_lib import book, pages


def test_table_html_has_no_plain_index_and_rounds():
    html = pages.table_html(pd.DataFrame(dict(alpha=[0.0763412, 0.1], name=["a", "b"])))
    assert "<th>alpha</th>" in html and "0.07634" in html and "0.0763412" not in html
    assert "<th></th>" not in html and ">0</th>" not in html
    labelled = pages.table_html(pd.DataFrame(dict(loss=[1.0]), index=pd.Index(["ten times N"], name="yardstick")))
    assert "<th>yardstick</th>" in labelled and "ten times N" in labelled


def test_table_styler_hides_a_plain_index_only():
    html = pages.table(pd.DataFrame(dict(x=[1.23456789]))).to_html()
    assert "1.235" in html and 'class="row_heading' not in html
    kept = pages.styler_html(pd.DataFrame(dict(x=[1.0]), index=pd.Index([7], name="N")).style)
    assert "row_heading" in kept


def test_figure_markdown_is_a_named_glue_figure():
    md = pages.figure_markdown("fig-x", "Loss against N,\n  cf. Kaplan et al. Fig. 1.")
    assert md.splitlines() == ["```{glue:figure} fig-x", ":name: fig-x", "", "Loss against N, cf. Kaplan et al. Fig. 1.",
                               "```"]
    with pytest.raises(ValueError):
        pages.figure_markdown("two words", "c")


def test_run_hours_sums_cpu_core_hours_and_gpu_hours_once_per_run():
    recs = [
        {"key": "a", "provenance": {"device": "cpu:x86_64", "threads": 2, "wall_time_s": 1800}},
        {"key": "a", "provenance": {"device": "cpu:x86_64", "threads": 2, "wall_time_s": 1800}},  # loaded twice
        {"key": "b", "provenance": {"device": "cpu:x86_64", "threads": 1, "wall_time_s": 3600}},
        {"key": "c", "provenance": {"device": "cuda:NVIDIA H200", "threads": 1, "wall_time_s": 360}},
        {"key": "d", "provenance": {"device": "cpu:x86_64"}},
    ]
    h = pages.run_hours(recs)
    assert h == {"cpu_hours": 2.0, "cpu_runs": 3, "gpu_hours": 0.1, "gpu_runs": 1, "no_wall_time": 1}


def test_reproduce_box_gives_commands_hours_and_downloads():
    md = pages.reproduce_markdown("04_model_size", ["ladder"],
                                  {"cpu_hours": 12.34, "cpu_runs": 5, "gpu_hours": 0, "gpu_runs": 0, "no_wall_time": 0})
    assert md.startswith("````{admonition} Reproduce this chapter") and md.endswith("````")
    assert "python -m scaling_lib sweep ladder --profile cpu --workers 2" in md
    assert "python -m scaling_lib book --profile book --chapter 04_model_size" in md
    assert "12.3 CPU hours" in md and "5 CPU runs" in md
    assert "<../notebooks/04_model_size.md>" in md and "<04_model_size.ipynb>" in md
    none = pages.reproduce_markdown("01_counting", [], pages.run_hours([]))
    assert "sweep" not in none and "trains nothing" in none


def test_every_notebook_chapter_lists_its_sweeps():
    chapters = [c for c in book.toc_chapters() if not book.is_plain_page(c) and c not in book.EXECUTE_LAST]
    assert chapters and set(chapters) <= set(pages.CHAPTER_SWEEPS)


def test_chapter_records_reads_the_stored_sweeps(monkeypatch, tmp_path):
    from scaling_lib import sweep

    seen = []

    def fake_load(name, profile, store=None, *, train=None, overrides=None):
        seen.append((name, profile, train, overrides))
        return [{"key": f"{name}-{profile}", "provenance": {"wall_time_s": 3600}}], []

    monkeypatch.setattr(sweep, "load_sweep", fake_load)
    recs = pages.chapter_records("09_lstm", "book")
    assert all(train is False for _, _, train, _ in seen)  # never trains
    assert ("ladder", "book", False, {"long_max_N": 0}) in seen and ("lstm", "gpu", False, None) in seen
    assert ("tune", "book", False, {"tune_long_sizes": ()}) in seen  # the tuned transformers
    assert pages.run_hours(recs)["cpu_runs"] == 8  # four sweeps, CPU and GPU profile each
    seen.clear()
    pages.chapter_records("06_transfer", "smoke")
    assert [p for _, p, _, _ in seen] == ["smoke"]  # no GPU runs under smoke
    with pytest.raises(KeyError):
        pages.chapter_records("99_nothing", "book")


def test_a_budget_is_named_as_the_profiles_plan_it():
    # a run trains whole steps of 4,096 tokens: its count falls just short of the planned budget
    assert [pages.budget_name(b // 4096 * 4096) for b in (250_000, 1_000_000, 2_000_000, 8_000_000, 16_000_000)] \
        == ["0.25M", "1M", "2M", "8M", "16M"]
    assert pages.budget_name(999_424) == "1M" and pages.budget_name(1_499_136) == "1.5M"
    assert pages.budget_name(124_928) == "0.125M"  # three digits where two miss by more than 1%
    assert pages.budget_name(9_040_030) == "9M" and pages.budget_name(12_951_552) == "13M"
    assert pages.budget_name(20_480) == "20,480"  # the smoke profile's budgets, in full
    assert pages.budget_name(float("nan")) == "n/a"


def test_glue_each_glues_every_named_value_and_na_for_the_absent(monkeypatch):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.update({name: value}))
    pages.glue_each("tr", "slope", {"email": 0.6}, ("email", "python-doc"))
    assert glued == {"tr_email_slope": 0.6, "tr_python_doc_slope": "n/a"}


@pytest.mark.parametrize("n, noun, plural, expected", [
    (0, "run", None, "0 runs"),
    (1, "run", None, "1 run"),
    (2, "run", None, "2 runs"),
    (1, "branch", "branches", "1 branch"),
    (12_000, "branch", "branches", "12,000 branches"),
])
def test_counted_puts_the_noun_in_the_count_s_number(n, noun, plural, expected):
    assert pages.counted(n, noun, plural) == expected
