"""The book's headline results: what each chapter measured, beside the paper's value, with a verdict.

A chapter calls `record(...)` for each law it measures; the records of one execution are written
to `<results dir>/<chapter>.json` (deterministic content, committed beside the executed notebook),
and the results page (`notebooks/00_results.md`), executed after the chapters, reads them all back
(`load`) and shows them as one table (`glance_table`). Paper values are never typed in a chapter:
they come from `PAPER`, which names the equation, table or figure each comes from.

The results directory is `$SCALING_LIB_RESULTS`, which `scaling_lib.book.execute_notebook` sets to
`<out_dir>/_results` (so `book/_results/` for the book, a temporary folder for the smoke tests);
without it, `record` keeps its records in memory only, so a chapter run by hand writes nothing into
the repository.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .fit import interval_text
from .laws import ALLOCATION_A, CHINCHILLA, KAPLAN

RESULTS_ENV = "SCALING_LIB_RESULTS"
SIGNIFICANT = 6  # digits kept in the JSON: enough to quote, few enough to be stable across reruns


@dataclass(frozen=True)
class PaperValue:
    """One published number: its symbol, the law it belongs to, the value, and where it is printed."""

    symbol: str
    law: str
    value: float
    source: str
    scale: bool = False  # a law's scale (B_*, S_c), not an exponent: in the table, not in the ratio figure


# Kaplan et al. 2020 (arXiv 2001.08361) §1.2 and Tables 2-3; Hoffmann et al. 2022, Approach 3.
# The values are those of `laws.KAPLAN` / `laws.CHINCHILLA` (shared/reference/equations.md).
PAPER: dict[str, PaperValue] = {
    "alpha_N": PaperValue("α_N", "L(N)", KAPLAN["L(N)"]["alpha_N"], "Kaplan et al. 2020, Eq. 1.1, Fig. 1 (right)"),
    "alpha_D": PaperValue("α_D", "L(D)", KAPLAN["L(D)"]["alpha_D"], "Kaplan et al. 2020, Eq. 1.2, Fig. 1 (centre)"),
    "alpha_C": PaperValue("α_C", "L(C), fixed batch", KAPLAN["L(C)"]["alpha_C"],
                          "Kaplan et al. 2020, §1.2 (fixed-batch trend of Fig. 1)"),
    "alpha_C_min": PaperValue("α_C^min", "L(C_min)", KAPLAN["L(C_min)"]["alpha_C"],
                              "Kaplan et al. 2020, Eq. 1.3, Fig. 1 (left)"),
    "nd_alpha_N": PaperValue("α_N", "L(N, D)", KAPLAN["L(N,D)"]["alpha_N"], "Kaplan et al. 2020, Eq. 1.5, Table 2"),
    "nd_alpha_D": PaperValue("α_D", "L(N, D)", KAPLAN["L(N,D)"]["alpha_D"], "Kaplan et al. 2020, Eq. 1.5, Table 2"),
    "ns_alpha_N": PaperValue("α_N", "L(N, S)", KAPLAN["L(N,S)"]["alpha_N"], "Kaplan et al. 2020, Eq. 1.6, Table 3"),
    "ns_alpha_S": PaperValue("α_S", "L(N, S)", KAPLAN["L(N,S)"]["alpha_S"], "Kaplan et al. 2020, Eq. 1.6, Table 3"),
    "chinchilla_alpha": PaperValue("α", "E + A/N^α + B/D^β", CHINCHILLA["alpha"],
                                   "Hoffmann et al. 2022, Approach 3 (Eq. 10)"),
    "chinchilla_beta": PaperValue("β", "E + A/N^α + B/D^β", CHINCHILLA["beta"],
                                  "Hoffmann et al. 2022, Approach 3 (Eq. 10)"),
    "a_kaplan": PaperValue("a", "N_opt ∝ C^a", ALLOCATION_A["kaplan"], "Kaplan et al. 2020, Eq. 6.1, Table 6"),
    **{f"a_approach{k}": PaperValue("a", f"N_opt ∝ C^a, approach {k}", ALLOCATION_A[k],
                                    f"Hoffmann et al. 2022, Table 2 (approach {k})") for k in (1, 2, 3)},
    "alpha_B": PaperValue("α_B", "B_crit(L)", KAPLAN["B_crit(L)"]["alpha_B"], "Kaplan et al. 2020, Eq. 1.4, Fig. 10"),
    "B_star": PaperValue("B_*", "B_crit(L)", KAPLAN["B_crit(L)"]["B_star"], "Kaplan et al. 2020, Eq. 1.4, Fig. 10",
                         scale=True),
    "ns_S_c": PaperValue("S_c", "L(N, S)", KAPLAN["L(N,S)"]["S_c"], "Kaplan et al. 2020, Eq. 1.6, Table 3",
                         scale=True),
    "transfer_slope": PaperValue("slope", "L_other(L_val)", 1.0,
                                 "Kaplan et al. 2020, §3.2.2, Fig. 8 (a constant offset: slope 1)"),
}

VERDICTS = ("agrees", "differs", "no interval", "no paper value", "other units")


@dataclass(frozen=True)
class Result:
    """One measured quantity of one chapter, ready for the results page."""

    chapter: str
    name: str
    label: str
    value: float
    lo: float | None
    hi: float | None
    ci_missing: str | None
    paper: str | None  # a key of PAPER
    paper_value: float | None
    paper_source: str | None
    unit: str
    fmt: str
    why: str
    verdict: str
    paper_note: str = ""  # what the paper says where it gives no number to compare with

    @property
    def ci_text(self) -> str:
        if self.lo is not None and self.hi is None:  # an upper end the data do not identify
            return f"≥ {self.lo:{self.fmt}} ({self.ci_missing})"
        if self.lo is None or self.hi is None:
            return f"n/a ({self.ci_missing})" if self.ci_missing else "n/a"
        return interval_text(self.lo, self.hi, self.fmt)


_RECORDED: dict[str, dict[str, Result]] = {}  # this process's records, by chapter, in call order


def _round(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(f"{float(v):.{SIGNIFICANT}g}")


def is_scale(res: "Result") -> bool:
    """Whether a result is a law's scale (B_*, S_c), whose ratio to the paper's spans orders of magnitude
    as its exponent moves and whose units (steps, tokens) are this book's: compared in the table only."""
    return res.paper is not None and PAPER[res.paper].scale


def verdict(value: float, lo: float | None, hi: float | None, paper_value: float | None, scale: bool = False) -> str:
    """'agrees' if the paper's value lies in the 95% interval, 'differs' if not; else why no verdict: 'other
    units' for a law's scale (`PaperValue.scale`: steps and tokens of this book's batch and tokenizer)."""
    if paper_value is None:
        return "no paper value"
    if scale:
        return "other units"
    if lo is None or hi is None:
        return "no interval"
    return "agrees" if lo <= paper_value <= hi else "differs"


def results_dir() -> Path | None:
    """Where `record` writes: `$SCALING_LIB_RESULTS`, or None (records stay in memory)."""
    path = os.environ.get(RESULTS_ENV)
    return Path(path) if path else None


def stored_dir() -> Path:
    """Where the results page reads: `$SCALING_LIB_RESULTS`, else the checkout's `book/_results`."""
    return results_dir() or Path(__file__).resolve().parents[1] / "book" / "_results"


def record(chapter: str, name: str, value: float, ci=None, *, paper: str | None = None, label: str | None = None,
           unit: str = "", fmt: str = ".3f", why: str = "", paper_note: str = "", fit=None,
           param: str | None = None, glue: bool = True) -> Result:
    """Record one measured quantity of a chapter, beside the paper's value `PAPER[paper]`.

    `ci` is the 95% interval (lo, hi), or None; with `fit` (a `FitResult`) and `param`, the value and
    interval are read off the fit (a fit without intervals records 'n/a' and why, `FitResult.ci_missing`).
    `why` says in one line why the value may differ from the paper's; `paper_note` what the paper says
    where it prints no number (the verdict is then 'no paper value'). The chapter's records so far are
    rewritten to `<results dir>/<chapter>.json`; in a notebook, the value is glued as `<name>` (a number),
    the paper's as `<name>_paper` (where there is one), and its interval and verdict as `<name>_ci` and
    `<name>_verdict` (Markdown, for `{glue:md}`).
    """
    if paper is not None and paper not in PAPER:
        raise KeyError(f"unknown paper value {paper!r}; known: {', '.join(PAPER)}")
    ci_missing = None
    if fit is not None:
        if param is None:
            raise ValueError("record(fit=...) needs param, the name of the fitted parameter")
        value = fit.params[param]
        ci_missing = fit.ci_missing
        ci = None if ci_missing else fit.interval(param)
    lo, hi = (None, None) if ci is None else (_round(ci[0]), _round(ci[1]))
    if fit is not None and ci is not None and fit.reaches_cap(param):
        hi, ci_missing = None, fit.cap_text(param)  # a lower end only: the top is the optimiser's bound
    elif (lo is None or hi is None) and ci_missing is None:
        ci_missing = "no interval" if ci is None else "interval not finite"
        lo = hi = None
    pv = PAPER[paper] if paper else None
    res = Result(chapter=chapter, name=name, label=label or name, value=_round(value), lo=lo, hi=hi,
                 ci_missing=None if lo is not None and hi is not None else ci_missing, paper=paper,
                 paper_value=pv.value if pv else None, paper_source=pv.source if pv else None,
                 unit=unit, fmt=fmt, why=why,
                 verdict=verdict(value, lo, hi, pv.value if pv else None, scale=bool(pv and pv.scale)),
                 paper_note=paper_note)
    _RECORDED.setdefault(chapter, {})[name] = res
    out = results_dir()
    if out is not None:
        write(chapter, list(_RECORDED[chapter].values()), out)
    if glue:
        _glue(res)
    return res


def _glue(res: Result) -> None:
    """Glue the value and its texts into the running notebook (nothing outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the book
        return
    if get_ipython() is None:
        return
    from IPython.display import Markdown
    from myst_nb import glue

    glue(res.name, res.value, display=False)
    if res.paper_value is not None:
        glue(f"{res.name}_paper", res.paper_value, display=False)
    glue(f"{res.name}_ci", Markdown(res.ci_text), display=False)
    glue(f"{res.name}_verdict", Markdown(res.verdict), display=False)


def write(chapter: str, results: list[Result], out: Path | str) -> Path:
    """Write a chapter's results as deterministic JSON (sorted keys, rounded numbers), atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{chapter}.json"
    text = json.dumps({"chapter": chapter, "results": [asdict(r) for r in results]},
                      indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{chapter}.", suffix=".json", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def load(out: Path | str, chapters: list[str] | None = None) -> list[Result]:
    """Every stored result under `out`, chapter by chapter (in the order of `chapters` if given)."""
    out = Path(out)
    files = {p.stem: p for p in sorted(out.glob("*.json"))} if out.is_dir() else {}
    order = [c for c in (chapters or []) if c in files] + sorted(c for c in files if c not in (chapters or []))
    results = []
    for stem in order:
        data = json.loads(files[stem].read_text(encoding="utf-8"))
        results += [Result(**r) for r in data["results"]]
    return results


def glance_table(results: list[Result], titles: dict[str, str] | None = None) -> pd.DataFrame:
    """The at-a-glance table: one row per result, the chapter as a MyST link to its page."""
    titles = titles or {}
    rows = []
    for r in results:
        paper = (r.paper_note or "—") if r.paper_value is None else f"{r.paper_value:{r.fmt}} ({r.paper_source})"
        verdict_text = r.verdict if r.verdict in ("agrees", "no paper value") or not r.why else f"{r.verdict}: {r.why}"
        rows.append({
            "quantity": r.label,
            "chapter": f"[{titles.get(r.chapter, r.chapter)}]({r.chapter}.ipynb)",
            "book (95% interval)": f"{r.value:{r.fmt}} ({r.ci_text})" + (f" {r.unit}" if r.unit else ""),
            "paper": paper,
            "verdict": verdict_text,
        })
    return pd.DataFrame(rows, columns=["quantity", "chapter", "book (95% interval)", "paper", "verdict"])


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown (MyST) table, no index column; `|` in cells escaped."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def counts(results: list[Result]) -> dict[str, int]:
    """How many results have each verdict (every verdict present, zero if none)."""
    out = {v: 0 for v in VERDICTS}
    for r in results:
        out[r.verdict] += 1
    return out


def reset() -> None:
    """Forget this process's records (tests)."""
    _RECORDED.clear()
