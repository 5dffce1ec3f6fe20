"""How the book orders its executions: the results page after every chapter, and where results go."""
from __future__ import annotations

import os
from pathlib import Path

from scaling_lib import book, results


def test_execution_order_puts_the_results_page_last():
    toc = ["00_results", "symbols", "01_counting", "02_learning_curves", "references"]
    assert book.execution_order(toc) == ["symbols", "01_counting", "02_learning_curves", "references", "00_results"]
    assert book.execution_order(["01_counting"]) == ["01_counting"]


def test_the_toc_lists_the_results_page_before_the_chapters():
    toc = book.toc_chapters()
    assert toc.index("00_results") < toc.index("01_counting")
    assert not book.is_plain_page("00_results") and book.is_plain_page("symbols")


def test_chapter_titles_are_the_notebooks_first_headings():
    titles = book.chapter_titles()
    assert titles["00_results"] == "Results at a glance"
    assert titles["04_model_size"] == "Performance with model size"


def test_kernel_env_points_results_at_the_output_folder_and_restores(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    with book._kernel_env(tmp_path, tmp_path / "out" / book.RESULTS_SUBDIR):
        assert os.environ[results.RESULTS_ENV] == str(tmp_path / "out" / "_results")
        assert results.results_dir() == tmp_path / "out" / "_results"
    assert results.RESULTS_ENV not in os.environ


def test_executing_one_chapter_executes_the_results_page_after_it(monkeypatch, tmp_path: Path):
    ran = []
    monkeypatch.setattr(book, "execute_notebook", lambda stem, *a, **k: ran.append(stem) or book._root(None) / "book" / f"{stem}.ipynb")
    monkeypatch.setattr(book, "ensure_mathjax", lambda base: None)
    monkeypatch.setattr(book, "_run_jupyter_book", lambda base: None)
    book.build("book", chapters=["04_model_size"])
    assert ran == ["04_model_size", "11_budget", "00_results"]  # 11_budget reads 04_model_size's fit


def test_a_chapter_that_reads_another_runs_after_it_and_again_with_it(monkeypatch):
    monkeypatch.setattr(book, "READS", {"14_overfitting": ("15_batch_size",)})
    toc = ["00_results", "14_overfitting", "15_batch_size", "16_allocation"]
    assert book.execution_order(toc) == ["15_batch_size", "14_overfitting", "16_allocation", "00_results"]
    assert book.execution_order(["14_overfitting"]) == ["14_overfitting"]  # its source not run: it stays
    assert book.execution_order(["14_overfitting", "16_allocation"]) == ["14_overfitting", "16_allocation"]
    assert book.execution_order(["15_batch_size", "16_allocation", "14_overfitting"]) == \
        ["15_batch_size", "16_allocation", "14_overfitting"]  # already after its source: not moved up
    assert book.with_readers(["15_batch_size"]) == {"15_batch_size", "14_overfitting"}
    assert book.with_readers(["16_allocation"]) == {"16_allocation"}


def test_every_chapter_that_reads_another_is_declared():
    """A chapter calling results.load on another chapter's results, or planner.get_law("book") (which reads
    the model-size chapter's stored fit), is listed in book.READS as reading that chapter."""
    import re

    from scaling_lib import planner

    found = set()
    for path in (book._root(None) / "notebooks").glob("*.md"):
        stem = path.stem
        if stem in book.EXECUTE_LAST:
            continue
        text = path.read_text(encoding="utf-8")
        read = set(re.findall(r'\.chapter == "(\w+)"', text))
        if re.search(r"""get_law\(\s*["']book["']\s*\)""", text):
            read.add(planner.BOOK_CHAPTER)
        assert read <= set(book.READS.get(stem, ())), (stem, read)
        found |= {(stem, s) for s in read}
    # the patterns find the overfitting chapter's read and the budget chapter's law
    assert found >= {("14_overfitting", "15_batch_size"), ("11_budget", "04_model_size")}
