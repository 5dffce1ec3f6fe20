"""Execute the chapter notebooks and build the Jupyter Book (1.x) from them.

Each chapter is a jupytext MyST notebook ``notebooks/<stem>.md``; papermill runs it with
``profile`` as its parameter, with the kernel's working directory in ``notebooks/``, and the
executed notebook lands in ``book/<stem>.ipynb``, which is what the book renders.
``jupyter-book build . -W -n --keep-going`` then turns ``_toc.yml`` into ``_build/html``.
Formulas render offline: MathJax 3 is fetched once from npm into ``book/_static/mathjax/``.

    python -m scaling_lib.book --profile book                     # execute every chapter, build
    python -m scaling_lib.book --no-execute                       # build from the committed notebooks
    python -m scaling_lib.book --profile cpu --chapter 02_learning_curves
    python -m scaling_lib.book --mathjax-only                     # fetch MathJax and stop
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

# The repository root when the package is installed editable (pip install -e .) from a checkout.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

MATHJAX_PACKAGE = "mathjax@3"
# Relative to the book's static folder, as `mathjax_path` in _config.yml names it.
MATHJAX_ENTRY = "tex-mml-svg.js"
# What to keep of the npm package's es5/ folder: the combined TeX+SVG component (SVG output needs
# no web fonts) and the pieces it may load on demand (autoloaded TeX extensions, the menu).
_MATHJAX_KEEP = (MATHJAX_ENTRY, "input", "output", "ui", "a11y", "adaptors")

DEFAULT_TIMEOUT = 3600  # seconds a single cell may run before papermill gives up on it

# The kernel's matplotlib backend. Plain "Agg" would leave a notebook without any image output
# (measured: a returned Figure shows as text only); the inline backend renders with Agg, needs no
# display, and emits image/png. Set explicitly so that a parent's MPLBACKEND=Agg (the tests') does
# not leak into the kernel, where ipykernel would otherwise keep it.
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"


# Pages that read what the chapters stored (`scaling_lib.results`): executed after every chapter,
# wherever the toc lists them, and again whenever any chapter is executed.
EXECUTE_LAST = ("00_results",)
# Chapters that read what other chapters stored (`results.load`; `planner.get_law("book")` reads the
# model-size chapter's fit): executed after them, and again whenever one of them is.
READS: dict[str, tuple[str, ...]] = {"11_budget": ("04_model_size",), "14_overfitting": ("15_batch_size",)}
# Where a chapter's `results.record` calls write, relative to the folder of the executed notebooks.
RESULTS_SUBDIR = "_results"


class BookError(RuntimeError):
    """A chapter failed to execute, MathJax could not be fetched, or the book did not build."""


def _root(root: Path | str | None) -> Path:
    """The book root: given, else the checkout this package lives in, else the working directory."""
    if root is not None:
        return Path(root).resolve()
    if (_PACKAGE_ROOT / "_toc.yml").is_file():
        return _PACKAGE_ROOT
    return Path.cwd().resolve()


def toc_chapters(root: Path | str | None = None) -> list[str]:
    """The chapter stems in `_toc.yml` order (every file entry but the root, sections included)."""
    import yaml

    toc_path = _root(root) / "_toc.yml"
    if not toc_path.is_file():
        raise BookError(f"no table of contents at {toc_path}")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}

    stems: list[str] = []

    def walk(entries: list | None) -> None:
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            if "file" in entry:
                name = Path(str(entry["file"])).name
                suffix = Path(name).suffix
                stems.append(name[: -len(suffix)] if suffix in (".md", ".ipynb") else name)
            walk(entry.get("sections"))

    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return stems


def is_plain_page(stem: str, root: Path | str | None = None) -> bool:
    """Whether a toc entry is a hand-written page (`book/<stem>.md`) rather than a notebook."""
    base = _root(root)
    return (base / "book" / f"{stem}.md").is_file() and not (base / "notebooks" / f"{stem}.md").is_file()


def execution_order(stems: Sequence[str]) -> list[str]:
    """The order to execute pages in: the toc's, with each chapter of `READS` that comes before a chapter
    it reads moved to just after the last of them (a reader none of whose sources is run stays where it
    is), and the pages of `EXECUTE_LAST` at the end."""
    order = [s for s in stems if s not in EXECUTE_LAST]
    for reader, sources in READS.items():
        if reader not in order:
            continue
        last = max((order.index(s) for s in sources if s in order), default=-1)
        if last > order.index(reader):
            order.remove(reader)
            order.insert(last, reader)  # the last source moved up one when the reader left
    return order + [s for s in stems if s in EXECUTE_LAST]


def with_readers(chapters: Sequence[str]) -> set[str]:
    """`chapters` and every chapter of `READS` that reads one of them (a reader is re-made with them)."""
    chosen = set(chapters)
    return chosen | {r for r, sources in READS.items() if chosen & set(sources)}


def chapter_titles(root: Path | str | None = None) -> dict[str, str]:
    """Each notebook's title (its first `# ` heading), by stem."""
    titles = {}
    for path in sorted((_root(root) / "notebooks").glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                titles[path.stem] = line[2:].strip()
                break
    return titles


@contextlib.contextmanager
def _kernel_env(root: Path, results: Path | None = None) -> Iterator[None]:
    """Environment the kernel inherits: headless matplotlib (Agg-based inline), the library importable,
    and where `scaling_lib.results.record` writes (`results`)."""
    from .results import RESULTS_ENV

    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", "PYTHONPATH", RESULTS_ENV)}
    os.environ["MPLBACKEND"] = KERNEL_MPLBACKEND
    if results is not None:
        os.environ[RESULTS_ENV] = str(results)
    # Notebooks import scaling_lib; an editable install provides it, PYTHONPATH covers a bare checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), saved["PYTHONPATH"]) if p)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _describe_cell_error(stem: str, err: Exception) -> str:
    """A readable account of a papermill cell failure: which notebook, which cell, which error."""
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    lines = [f"notebook notebooks/{stem}.md failed: {ename}: {evalue}"]
    exec_count = getattr(err, "exec_count", None)
    source = getattr(err, "source", None)
    if source is not None:
        head = "\n".join(f"    {line}" for line in str(source).splitlines()[:12])
        lines.append(f"in cell In [{exec_count}] (cell index {getattr(err, 'cell_index', '?')}):\n{head}")
    traceback = getattr(err, "traceback", None)
    if traceback:
        tail = _ANSI.sub("", "\n".join(traceback)).strip().splitlines()[-15:]
        lines.append("traceback (last lines):\n" + "\n".join(f"    {line}" for line in tail))
    return "\n".join(lines)


# What of papermill's notebook metadata to keep: what ran, with which parameters; not when, nor how long.
_PAPERMILL_KEPT = ("input_path", "output_path", "parameters")
# Cell metadata written by the executors: timestamps and durations of every cell.
_CELL_VOLATILE = ("execution", "papermill", "ExecuteTime")
# An object's default repr, <module.Class at 0x7f...>: the address differs at every run.
_OBJECT_REPR = re.compile(r"^<[^<>\n]* at 0x[0-9a-fA-F]+>$")
_ADDRESS = re.compile(r"(?<= at )0x[0-9a-fA-F]{6,}")
# A pandas Styler's table id, T_ and five random hex digits, repeated in every cell id and CSS rule.
_STYLER_TABLE = re.compile(r'<table id="T_([0-9a-zA-Z]+)"')


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def _digest(*parts: str, n: int = 8) -> str:
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:n]


def normalise_notebook(nb):
    """Strip from an executed notebook what changes at every execution, in place; return it.

    So that re-executing a chapter whose results did not change rewrites the same file: papermill's
    timestamps and durations (notebook and cells), widget state, random cell ids (made from the cell's
    position and source instead), object addresses in text reprs (`<... Styler at 0x7f...>`, dropped
    where a richer representation exists), and the random table ids of pandas Stylers (made from
    the table's content). Execution counts are kept: papermill runs every cell once, in order.
    """
    meta = nb.metadata
    if "papermill" in meta:
        meta["papermill"] = {k: meta["papermill"][k] for k in _PAPERMILL_KEPT if k in meta["papermill"]}
    meta.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        for key in _CELL_VOLATILE:
            cell.metadata.pop(key, None)
        if "id" in cell:
            cell["id"] = _digest(str(i), cell.cell_type, _text(cell.source))
        for j, out in enumerate(cell.get("outputs", [])):
            data = out.get("data")
            if not data:
                continue
            plain = data.get("text/plain")
            if plain is not None:
                plain = _text(plain)
                if _OBJECT_REPR.match(plain.strip()) and len(data) > 1:
                    del data["text/plain"]
                else:
                    data["text/plain"] = _ADDRESS.sub("0x0", plain)
            if "text/html" in data:
                html = _text(data["text/html"])
                for uuid in dict.fromkeys(_STYLER_TABLE.findall(html)):
                    stable = _digest(str(i), str(j), html.replace(f"T_{uuid}", "T_"), n=5)
                    html = html.replace(f"T_{uuid}", f"T_{stable}")
                data["text/html"] = html
    return nb


def execute_notebook(
    stem: str,
    profile: str,
    out_dir: Path | str = Path("book"),
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    root: Path | str | None = None,
) -> Path:
    """Run `notebooks/<stem>.md` with papermill (`-p profile <profile>`) into `<out_dir>/<stem>.ipynb`.

    The kernel runs in `notebooks/` with the Agg-based inline matplotlib backend (headless, and
    figures become image/png outputs); `timeout` bounds each cell (seconds,
    None for no bound). What changes at every execution (timestamps, random ids, object addresses)
    is stripped by `normalise_notebook`. The chapter's `results.record` calls write to
    `<out_dir>/_results/<stem>.json` (`$SCALING_LIB_RESULTS` in the kernel). The notebook is written to a temporary file and renamed,
    so a failed or interrupted run leaves any previous output untouched. A failing cell raises `BookError`
    naming the notebook, the cell and its error.
    """
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    base = _root(root)
    notebooks_dir = base / "notebooks"
    source = notebooks_dir / f"{stem}.md"
    if not source.is_file():
        raise BookError(f"notebook for chapter {stem!r} not found: {source}")
    out_dir = Path(out_dir)
    if not out_dir.is_absolute():
        out_dir = base / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}.ipynb"

    # Explicit format: without `extension` in its header jupytext would read the file as plain
    # Markdown, and the notebook would run with no code cell at all.
    nb = jupytext.read(source, fmt="md:myst")
    if not nb.metadata.get("kernelspec"):
        raise BookError(f"{source} has no kernelspec in its jupytext header (papermill needs one)")
    if not any(cell.cell_type == "code" for cell in nb.cells):
        raise BookError(f"{source} has no code cell: is it a MyST notebook (```{{code-cell}} blocks)?")

    with _kernel_env(base, out_dir / RESULTS_SUBDIR):
        try:
            executed = papermill.execute_notebook(
                nb,
                None,  # nothing written by papermill: the result is written below, atomically
                parameters={"profile": profile},
                cwd=str(notebooks_dir),
                kernel_name="python3",
                progress_bar=sys.stdout.isatty(),
                execution_timeout=timeout,
            )
        except PapermillExecutionError as err:
            raise BookError(_describe_cell_error(stem, err)) from None
        except Exception as err:  # kernel died, timeout, bad header: still say which notebook
            raise BookError(f"notebook notebooks/{stem}.md failed: {type(err).__name__}: {err}") from err

    # The page shows the chapter's own parameters cell; the one papermill injects stays in the file only.
    for cell in executed.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]

    # Record where it came from in repository terms, not as a temporary or absolute path.
    meta = executed.metadata.setdefault("papermill", {})
    meta["input_path"] = f"notebooks/{stem}.md"
    meta["output_path"] = f"{os.path.relpath(out_dir, base)}/{stem}.ipynb" if out_dir.is_relative_to(base) else str(target)
    normalise_notebook(executed)  # a re-execution with the same results writes the same file

    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".partial.ipynb", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(executed, fh)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; this is a committed, shared file
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise BookError(
            "npm is not installed, and MathJax (for offline formulas) comes from the npm registry: "
            "install it (apt-get install -y npm) or put MathJax 3's es5/ files into book/_static/mathjax/"
        )
    return npm


def ensure_mathjax(root: Path | str | None = None) -> Path:
    """Fetch MathJax 3 once with `npm pack` into `book/_static/mathjax/`; return its entry script."""
    dest = _root(root) / "book" / "_static" / "mathjax"
    entry = dest / MATHJAX_ENTRY
    if entry.is_file() and entry.stat().st_size > 0:
        return entry
    npm = _npm()
    with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
        try:
            proc = subprocess.run(
                [npm, "pack", MATHJAX_PACKAGE, "--silent", "--pack-destination", tmp],
                cwd=tmp, capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            raise BookError(f"`npm pack {MATHJAX_PACKAGE}` timed out: is the npm registry reachable?") from None
        tarballs = sorted(Path(tmp).glob("mathjax-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise BookError(
                f"`npm pack {MATHJAX_PACKAGE}` failed (is the npm registry reachable?):\n"
                + (proc.stderr or proc.stdout).strip()[-2000:]
            )
        staging = Path(tmp) / "staging"
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith("package/es5/") and (m.isfile() or m.isdir())]
            try:
                tar.extractall(staging, members=members, filter="data")
            except TypeError:  # a Python without extraction filters; members are checked above
                tar.extractall(staging, members=[m for m in members if ".." not in Path(m.name).parts])
        es5 = staging / "package" / "es5"
        if not (es5 / MATHJAX_ENTRY).is_file():
            raise BookError(f"{tarballs[0].name} has no es5/{MATHJAX_ENTRY}")
        # Assemble beside the destination, then rename: a half-copied MathJax never looks complete.
        dest.parent.mkdir(parents=True, exist_ok=True)
        assembled = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=dest.parent))
        os.chmod(assembled, 0o755)
        try:
            for name in _MATHJAX_KEEP:
                src = es5 / name
                if src.is_dir():
                    shutil.copytree(src, assembled / name)
                elif src.is_file():
                    shutil.copy2(src, assembled / name)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(assembled, dest)
        except BaseException:
            shutil.rmtree(assembled, ignore_errors=True)
            raise
    return entry


def _jupyter_book_command() -> list[str]:
    """The `jupyter-book` of this interpreter's environment (the package has no __main__)."""
    script = Path(sys.executable).with_name("jupyter-book")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c",
            "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; sys.exit(main())"]


def _run_jupyter_book(base: Path) -> None:
    """`jupyter-book build . -W -n --keep-going --all`, streamed; raise with the warnings on failure."""
    # --all: an incremental build re-reads only changed pages and so would not repeat their warnings.
    cmd = [*_jupyter_book_command(), "build", str(base), "-W", "-n", "--keep-going", "--all"]
    proc = subprocess.Popen(cmd, cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    problems: list[str] = []
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        tail = (tail + [line.rstrip()])[-40:]
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception", line):
            problems.append(line.rstrip())
    if proc.wait() != 0:
        shown = "\n".join(problems[:40]) or "\n".join(tail)
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); warnings fail the build (-W):\n{shown}")


def build(
    profile: str = "book",
    *,
    execute: bool = True,
    chapters: Sequence[str] | None = None,
    root: Path | str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Path:
    """Execute the toc's notebooks with `profile` (only `chapters` if given), then build the book.

    With `execute=False` the committed `book/<stem>.ipynb` are rendered as they are. Returns the
    path of `_build/html`; raises `BookError` if a notebook or the build fails.
    """
    base = _root(root)
    toc = toc_chapters(base)
    if chapters:
        unknown = [c for c in chapters if c not in toc]
        if unknown:
            raise BookError(f"not in _toc.yml: {', '.join(unknown)} (the toc has: {', '.join(toc)})")
        # the results page reads every chapter's stored results: it is re-made whenever one changes
        # and a chapter that reads another's is re-made with it
        to_run = [c for c in toc if c in with_readers(chapters) or c in EXECUTE_LAST]
    else:
        to_run = list(toc)
    notebook_chapters = execution_order([c for c in to_run if not is_plain_page(c, base)])

    t_start = time.perf_counter()
    if execute:
        for i, stem in enumerate(notebook_chapters, 1):
            print(f"[{i}/{len(notebook_chapters)}] executing notebooks/{stem}.md (profile {profile}) ...",
                  flush=True)
            t0 = time.perf_counter()
            out = execute_notebook(stem, profile, base / "book", timeout, root=base)
            print(f"[{i}/{len(notebook_chapters)}] {stem}: {time.perf_counter() - t0:.1f} s "
                  f"-> {out.relative_to(base)}", flush=True)
    missing = [f"book/{c}.ipynb" for c in toc
               if not is_plain_page(c, base) and not (base / "book" / f"{c}.ipynb").is_file()]
    if missing:
        raise BookError(
            f"executed notebooks missing: {', '.join(missing)}; "
            f"run `python -m scaling_lib book --profile book` to execute them"
        )

    ensure_mathjax(base)
    print("building the book: jupyter-book build . -W -n --keep-going --all", flush=True)
    t0 = time.perf_counter()
    _run_jupyter_book(base)
    html = base / "_build" / "html"
    print(f"book built in {time.perf_counter() - t0:.1f} s (total {time.perf_counter() - t_start:.1f} s): "
          f"{html / 'index.html'}", flush=True)
    return html


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m scaling_lib.book [--profile P] [--no-execute] [--chapter STEM]...`."""
    parser = argparse.ArgumentParser(prog="python -m scaling_lib.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="book", help="papermill parameter `profile` (default: book)")
    parser.add_argument("--no-execute", action="store_true",
                        help="render the committed book/*.ipynb without executing them")
    parser.add_argument("--chapter", action="append", metavar="STEM",
                        help="execute only this chapter (repeatable); the whole book is still built")
    parser.add_argument("--mathjax-only", action="store_true", help="fetch MathJax into book/_static and stop")
    parser.add_argument("--root", type=Path, default=None, help="book root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        if args.mathjax_only:
            print(ensure_mathjax(args.root))
            return 0
        build(args.profile, execute=not args.no_execute, chapters=args.chapter, root=args.root)
    except BookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
