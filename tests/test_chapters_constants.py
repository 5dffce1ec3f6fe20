"""The papers' constants reach the chapters from `scaling_lib.laws`, never typed into a code cell.

A number typed twice drifts: the chapter would go on quoting 0.076 after laws.KAPLAN is corrected,
and the comparison with the paper would no longer be with the value the library fits against.
Markdown may quote the paper (a display of its law); code cells may not.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import jupytext
import pytest

from scaling_lib import laws

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.md"))

# A numeric literal, anywhere in the code (strings included: "0.076 (converged)" is a typed constant).
NUMBER = re.compile(r"(?<![\w.])(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.])")


def _significant_digits(literal: str) -> int:
    mantissa = re.split(r"[eE]", literal)[0].replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) if "." not in literal else len(mantissa)


def _constants() -> dict[float, str]:
    """Every published value in laws, and an exponent's rounding to two digits (0.348 quoted as 0.35)."""
    found: dict[float, str] = {}
    tables = {f"KAPLAN[{k!r}]": v for k, v in laws.KAPLAN.items()}
    tables.update(CHINCHILLA=laws.CHINCHILLA, BESIROGLU=laws.BESIROGLU)
    for table, params in tables.items():
        for name, value in params.items():
            found.setdefault(float(value), f"laws.{table}[{name!r}]")
            if abs(value) < 1:  # the exponents; "1.8" for E = 1.82 would be any number of epochs
                found.setdefault(float(f"{value:.2g}"), f"laws.{table}[{name!r}] rounded")
    return found


CONSTANTS = _constants()


def typed_constants(code: str) -> list[str]:
    """The literals in `code` that equal a published constant (with two or more significant digits)."""
    hits = []
    for m in NUMBER.finditer(code):
        literal = m.group(0)
        if _significant_digits(literal) < 2:
            continue  # 1, 0.3, 1e6: too common to be a quotation of the paper
        value = float(literal)
        for c, where in CONSTANTS.items():
            if math.isclose(value, c, rel_tol=1e-9):
                line = code.count("\n", 0, m.start()) + 1
                hits.append(f"{literal} (= {where}) on line {line} of the cell")
    return hits


def test_the_scan_finds_what_it_is_for():
    assert typed_constants('paper="0.076 (converged)"') == [
        "0.076 (= laws.KAPLAN['L(N)']['alpha_N']) on line 1 of the cell"]
    assert len(typed_constants("x = 8.8e13\ny = 0.35")) == 2  # 0.35: Besiroglu's 0.348, as quoted
    assert typed_constants("0.050 (C_min)")  # trailing zero: still two significant digits
    assert not typed_constants('f"{b / 1e6:.3g}M", np.geomspace(0.5, 2, 50), lw=0.8, "{:.4f}"')
    assert not typed_constants('laws.KAPLAN["L(N)"]["alpha_N"]')


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_types_a_published_constant_in_code(path: Path):
    nb = jupytext.read(path, fmt="md:myst")
    problems = [f"code cell {i}: {hit}" for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                for hit in typed_constants(cell.source)]
    assert not problems, (f"notebooks/{path.name} types the papers' constants; read them from "
                          "scaling_lib.laws instead:\n" + "\n".join(problems))
