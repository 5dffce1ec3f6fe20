"""What a chapter shows besides its analysis: tables, numbered figures, the "Reproduce this chapter" box.

Display helpers for the notebooks (pandas and IPython only; no torch): `table` (no index column,
rounded), `budget_name` (a token budget as the profiles name it: 1M, not 0.999M), `figure` (a
numbered, captioned, referable figure through myst-nb glue), `reproduce` (the commands that re-make
a chapter, the CPU hours its stored runs took, and downloads of its source and executed notebook).
"""
from __future__ import annotations

import math

import pandas as pd

# The sweeps each chapter loads, with the profile overrides it loads them under (see the chapters'
# `load_by_machine` calls). The reproduce box sums the wall time of these records.
CHAPTER_SWEEPS: dict[str, tuple[tuple[str, dict | None], ...]] = {
    "01_counting": (),
    "02_learning_curves": (("ladder", None), ("ladder", {"long_max_N": 0})),
    "03_tuning_lr": (("lr", None), ("tune", {"tune_long_sizes": ()})),
    "04_model_size": (("ladder", None), ("tune", {"tune_long_sizes": ()}), ("warmup", None)),
    "05_data_compute": (("ladder", None), ("data", None)),
    "06_transfer": (("ladder", None),),
    "07_power_or_log": (("ladder", None),),
    "08_shape": (("shape", None), ("ladder", None)),
    "09_lstm": (("lstm", None), ("ladder", {"long_max_N": 0}), ("lr", None), ("tune", {"tune_long_sizes": ()})),
    "10_kaplan_chinchilla": (("tune", None), ("ladder", None), ("warmup", None)),
    "11_budget": (),
    "12_context_recurrence": (("ladder", None), ("ladder", {"long_max_N": 0}), ("context", None), ("recur", None)),
    "13_depth": (("depth", None),),
    "14_overfitting": (("overfit", None),),
    # {"tune_long_sizes": ()} is plans.TUNE_GRID: the tuned grids and their seeds, not the long runs, which only
    # the Kaplan-or-Chinchilla chapter reads
    "15_batch_size": (("batch", None), ("tune", {"tune_long_sizes": ()})),
    "16_allocation": (("batch", None), ("tune", {"tune_long_sizes": ()}), ("overfit", None)),
    "17_schedules": (("schedule", None), ("tune", {"tune_long_sizes": ()})),
}


def budget_name(tokens: float) -> str:
    """A token budget named as the profiles plan it: in millions, to the fewest significant digits (one
    to three) that come within 1% of the count. A run trains whole steps, so its count falls short of
    the planned budget by less than a step: 999,424 tokens (244 steps of 4,096) is the 1M budget and
    reads "1M", 249,856 reads "0.25M", 15,998,976 "16M". A count under 100,000 (the smoke profile's)
    is given in full ("20,480"); NaN reads "n/a"."""
    if tokens is None or not math.isfinite(tokens):
        return "n/a"
    if tokens < 1e5:
        return f"{tokens:,.0f}"
    for digits in (1, 2, 3):
        named = float(f"{tokens:.{digits}g}")
        if abs(named - tokens) <= 0.01 * tokens:
            break
    return f"{named / 1e6:g}M"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """A count with its noun in the right number: counted(1, "run") is "1 run", counted(3, "run") "3 runs",
    counted(2, "level", "levels") likewise; an irregular plural is given: counted(2, "branch", "branches")."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def glue_each(prefix: str, key: str, values: dict, names) -> None:
    """Glue `<prefix>_<name>_<key>` for each of `names` the prose names (a ladder, a distribution), its
    value from `values`, or "n/a" where `values` has none (a ladder not stored); a '-' in a name reads
    '_' in the glue's name (python-doc: python_doc)."""
    from myst_nb import glue

    for name in names:
        glue(f"{prefix}_{name.replace('-', '_')}_{key}", values.get(name, "n/a"), display=False)


def table(df: pd.DataFrame, formats: dict | str | None = None, *, caption: str | None = None, precision: int = 4):
    """A table for the page: no index column, floats rounded (`formats` per column, `precision` digits
    for the floats it leaves out)."""
    if not _plain_index(df):
        df = df.reset_index()
    styler = df.style.hide(axis="index")
    if isinstance(formats, str):
        styler = styler.format(formats, na_rep="n/a")
    else:  # the given formats, and `precision` digits for the other floats
        floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
        styler = styler.format({**{c: f"{{:.{precision}g}}" for c in floats}, **(formats or {})}, na_rep="n/a")
    if caption:
        styler = styler.set_caption(caption)
    return styler


def figure(fig, name: str, caption: str) -> None:
    """Show `fig` as a numbered figure with `caption`, referable as {numref}`name` (myst-nb glue).

    `name` must be unique in the book (prefix it with the chapter); the caption should say which of
    the paper's figures it reproduces ("cf. Kaplan et al. Fig. 6").
    """
    from IPython.display import Markdown, display
    from myst_nb import glue

    glue(name, fig, display=False)
    display(Markdown(figure_markdown(name, caption)))


def figure_markdown(name: str, caption: str) -> str:
    """The MyST `glue:figure` directive that pastes a glued figure with a name and a caption."""
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"a figure name is one word: {name!r}")
    caption = " ".join(caption.split())
    return f"```{{glue:figure}} {name}\n:name: {name}\n\n{caption}\n```"


def on_gpu(record: dict) -> bool:
    """Whether a run record was trained on a GPU (its provenance names a cuda device)."""
    return str((record.get("provenance") or {}).get("device", "cpu")).startswith("cuda")


def worker_seconds(record: dict) -> float | None:
    """A CPU run's worker-seconds, wall time x threads; a GPU run's wall time; None without a wall time."""
    prov = record.get("provenance") or {}
    wall = prov.get("wall_time_s")
    if wall is None:
        return None
    return float(wall) if on_gpu(record) else float(wall) * int(prov.get("threads") or 1)


def run_hours(records: list[dict]) -> dict[str, float]:
    """CPU core-hours (wall time x threads) and GPU hours summed over run records, with the run counts.

    Every record carries `provenance.wall_time_s`; a record without one counts as zero and is
    counted in `no_wall_time`.
    """
    out = {"cpu_hours": 0.0, "cpu_runs": 0, "gpu_hours": 0.0, "gpu_runs": 0, "no_wall_time": 0}
    for rec in {r["key"]: r for r in records}.values():
        seconds = worker_seconds(rec)
        if seconds is None:
            out["no_wall_time"] += 1
            seconds = 0.0
        kind = "gpu" if on_gpu(rec) else "cpu"
        out[f"{kind}_hours"] += seconds / 3600
        out[f"{kind}_runs"] += 1
    return out


def chapter_records(stem: str, profile: str) -> list[dict]:
    """The stored records a chapter loads under `profile` (never training), CPU and, outside smoke, GPU.
    A sweep that waits for the fitted learning-rate rule has none yet."""
    from .plans import MissingRule
    from .sweep import load_sweep

    if stem not in CHAPTER_SWEEPS:
        raise KeyError(f"no sweeps listed for chapter {stem!r} in pages.CHAPTER_SWEEPS")
    records = []
    for sweep, overrides in CHAPTER_SWEEPS[stem]:
        for prof in (profile,) if profile == "smoke" else (profile, "gpu"):
            try:
                records += load_sweep(sweep, prof, train=False, overrides=overrides)[0]
            except MissingRule:
                pass
    return records


def reproduce_markdown(stem: str, sweeps: list[str], hours: dict[str, float]) -> str:
    """The "Reproduce this chapter" box as a MyST admonition (commands, hours, downloads)."""
    lines = ["````{admonition} Reproduce this chapter", ":class: note", ""]
    if sweeps:
        lines.append("Train what `runs/` lacks (resumable), then execute this chapter from the stored runs and "
                     "build the book:")
    else:
        lines.append("This chapter trains nothing; execute it and build the book:")
    lines += ["", "```bash"]
    lines += [f"python -m scaling_lib sweep {name} --profile cpu --workers 2" for name in sweeps]
    lines += [f"python -m scaling_lib book --profile book --chapter {stem}", "```", ""]
    if hours["cpu_runs"] or hours["gpu_runs"]:
        text = (f"The {hours['cpu_runs']} CPU runs it reads took {hours['cpu_hours']:.1f} CPU hours "
                "(wall time × threads, from their records)")
        if hours["gpu_runs"]:
            text += (f"; the {hours['gpu_runs']} GPU runs took {hours['gpu_hours']:.2f} GPU hours "
                     "(`scripts/gpu_sweep.sh` trains those)")
        if hours["no_wall_time"]:
            text += f"; {hours['no_wall_time']} record(s) give no wall time"
        lines += [text + ".", ""]
    elif sweeps:
        lines += ["No run of its sweeps is stored yet for this profile.", ""]
    lines.append(f"Download {{download}}`the chapter's source <../notebooks/{stem}.md>` (a jupytext MyST "
                 f"notebook) or {{download}}`the executed notebook <{stem}.ipynb>`.")
    lines.append("````")
    return "\n".join(lines)


def reproduce(stem: str, profile: str = "book"):
    """The "Reproduce this chapter" box for chapter `stem`, as Markdown to display."""
    from IPython.display import Markdown

    sweeps = list(dict.fromkeys(name for name, _ in CHAPTER_SWEEPS.get(stem, ())))
    hours = run_hours(chapter_records(stem, profile)) if stem in CHAPTER_SWEEPS else run_hours([])
    return Markdown(reproduce_markdown(stem, sweeps, hours))


def _plain_index(df: pd.DataFrame) -> bool:
    """Whether the index is pandas' 0, 1, 2, ... (nothing to show) rather than labels of the rows."""
    return isinstance(df.index, pd.RangeIndex) and df.index.name is None



def table_html(df: pd.DataFrame, precision: int = 4) -> str:
    """A DataFrame as the page shows it: no 0, 1, 2 index column (a labelled index becomes a column),
    floats to `precision` significant digits."""
    if not _plain_index(df):
        df = df.reset_index()
    return df.to_html(index=False, float_format=lambda v: f"{v:.{precision}g}", na_rep="n/a", border=0)


def styler_html(styler) -> str:
    """A Styler as the page shows it: its own formats, without a 0, 1, 2 index column."""
    if _plain_index(styler.data):
        styler = styler.hide(axis="index")
    return styler.to_html()


def show_tables_without_index() -> None:
    """In the running notebook, show every DataFrame and Styler without its index column (and round floats).

    Registered as IPython's HTML formatters, so a chapter's bare `df` and `df.style.format(...)` need
    no change; a Styler keeps its own formats. Nothing happens outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    ip = get_ipython()
    if ip is None:
        return
    from pandas.io.formats.style import Styler

    html = ip.display_formatter.formatters["text/html"]
    html.for_type(pd.DataFrame, table_html)
    html.for_type(Styler, styler_html)


def start_chapter(stem: str, profile: str = "book"):
    """Set up a chapter's page (tables without index, `show_tables_without_index`) and return its
    "Reproduce this chapter" box (`reproduce`)."""
    show_tables_without_index()
    return reproduce(stem, profile)
