"""Smoke execution of every chapter notebook: profile `smoke`, into a temporary folder.

Proves each chapter's code path runs end to end and draws at least one figure; the science is
the `book` profile's business. A chapter listed in `_toc.yml` whose notebook is missing fails;
a notebook under `notebooks/` that the toc does not list is skipped, saying so.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from scaling_lib.book import execute_notebook, is_plain_page, toc_chapters

ROOT = Path(os.environ.get("BOOK_ROOT", Path(__file__).resolve().parents[1])).resolve()
TOC = toc_chapters(ROOT)
NOT_IN_TOC = sorted(p.stem for p in (ROOT / "notebooks").glob("*.md") if p.stem not in TOC)
SMOKE_TIMEOUT = 600  # seconds a cell may take under the smoke profile


@pytest.fixture(scope="module", autouse=True)
def fresh_smoke_store(tmp_path_factory):
    """The smoke runs of this test session, shared by its notebooks (the kernels inherit the variable)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SCALING_LIB_SMOKE_RUNS", str(tmp_path_factory.mktemp("smoke_runs")))
    yield
    mp.undo()


@pytest.mark.slow
# not a missing prerequisite: a notebook left out of the book, or a page with no code, has nothing to run
@pytest.mark.allowed_skip(match="is not in _toc.yml|is a hand-written page")
@pytest.mark.parametrize("stem", TOC + NOT_IN_TOC)
def test_notebook_smoke(stem: str, tmp_path: Path) -> None:
    source = ROOT / "notebooks" / f"{stem}.md"
    if stem not in TOC:
        pytest.skip(f"notebooks/{stem}.md is not in _toc.yml: add it to the toc to have it tested")
    if is_plain_page(stem, ROOT):
        pytest.skip(f"book/{stem}.md is a hand-written page, not a notebook")
    assert source.is_file(), f"_toc.yml lists book/{stem} but its notebook notebooks/{stem}.md is missing"

    out = execute_notebook(stem, "smoke", out_dir=tmp_path, timeout=SMOKE_TIMEOUT, root=ROOT)

    nb = nbformat.read(out, as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{stem}: error outputs: {errors}"
    # a figure shown through `pages.figure` is glued (its image/png key carries glue's prefix) and
    # pasted by the page's glue:figure directive
    assert any(key.endswith("image/png") for o in outputs for key in o.get("data", {})), (
        f"{stem}: executed without error but produced no figure (no image/png output)")
