"""The built book, opened in a real (headless) browser, as a reader meets it.

Builds `_build/html` from the committed executed notebooks (`build(execute=False)`), then loads
every page of the toc in Chromium and checks, after its scripts have run, that each <img> has
loaded, that MathJax turned every formula into an `mjx-container` (none left as raw TeX, none in
error), that no page shows error output (tracebacks, stderr, docutils' error messages, an
unresolved glue or reference), that code is collapsed except in the cells meant to show it
(`parameters` and `show-input` cells), and that every internal link leads to a page and anchor
that exist; it saves a screenshot of each page to `_build/screenshots/<stem>.png`.
"""
from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image
import nbformat
import pytest

from scaling_lib.book import build, normalise_notebook, toc_chapters

ROOT = Path(os.environ.get("BOOK_ROOT", Path(__file__).resolve().parents[1])).resolve()
CHROMIUM = "/usr/bin/chromium"
PAGES = ["intro", *toc_chapters(ROOT)]

# The flags measured to work headless on these machines (shared/reference/toolchain.md).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=10000",
]
BROWSER_TIMEOUT = 90  # seconds; the browser is always run under a timeout

# Runs once the page and MathJax's first typesetting are done; writes its findings into the DOM,
# which --dump-dom then prints.
CHECK_SCRIPT = r"""
<script>
(function () {
  function report(error) {
    var imgs = Array.prototype.map.call(document.images, function (img) {
      return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth};
    });
    var article = document.querySelector("article") || document.querySelector("main") || document.body;
    var mathCount = article.querySelectorAll(".math").length;
    // Rendered prose only: code, code output, scripts and typeset formulas are not prose.
    var prose = article.cloneNode(true);
    prose.querySelectorAll("pre, code, .highlight, .cell_input, .cell_output, script, style, " +
                           "mjx-container, .MathJax").forEach(function (el) { el.remove(); });
    var visibleCode = Array.prototype.filter.call(article.querySelectorAll(".cell_input"), function (el) {
      // inside a closed <details> (hide-input) the code is not shown, whatever its boxes say
      return !el.closest("details:not([open])") && el.getClientRects().length > 0 &&
             window.getComputedStyle(el).display !== "none";
    }).length;
    var errors = Array.prototype.map.call(
      article.querySelectorAll(".output.traceback, .output.error, .output.stderr, .system-message, " +
                               ".problematic"),
      function (el) { return el.textContent.slice(0, 300); });
    var result = {
      error: error ? String(error) : null,
      visibleCode: visibleCode,
      codeCells: article.querySelectorAll(".cell_input").length,
      errors: errors,
      mathjax: typeof window.MathJax === "object" && !!window.MathJax.startup,
      images: imgs,
      math: mathCount,
      mjx: document.querySelectorAll("mjx-container").length,
      merror: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
      text: prose.textContent
    };
    var out = document.createElement("div");  // not <pre>: the theme decorates those
    out.id = "__book_check__";
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    var mj = window.MathJax;
    var ready = (mj && mj.startup && mj.startup.promise) ? mj.startup.promise : Promise.resolve();
    ready.then(function () { report(null); }, function (e) { report(e); });
  });
})();
</script>
"""

# Delimiters and commands that MathJax would have consumed, and $...$ spans with TeX inside.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{|\\frac|\\alpha|\\mathrm"
                     r"|\$[^$\s][^$\n]{0,80}?[\\^_{}][^$\n]{0,80}?\$")


# The cell tags under which a code cell's input is collapsed or removed on the page, and those under
# which it is meant to be read (the chapter's parameters; the code that is the lesson).
HIDDEN_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
SHOWN_TAGS = {"parameters", "show-input"}


def _code_cells(stem: str) -> list:
    path = ROOT / "book" / f"{stem}.ipynb"
    if not path.is_file():
        return []
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _internal_links(page: Path, html: str) -> list[str]:
    """The page's links to files of the build (or anchors) that do not exist."""
    broken = []
    for href in dict.fromkeys(re.findall(r'<a\b[^>]*\bhref="([^"]*)"', html)):
        href = html_lib.unescape(href)
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I):  # http:, mailto:, javascript:, data:
            continue
        path, _, fragment = href.partition("#")
        target = (page.parent / path.split("?")[0]).resolve() if path else page
        if target.is_dir():
            target = target / "index.html"
        if path and not target.is_file():
            broken.append(href)
            continue
        if fragment and target.suffix == ".html":
            text = target.read_text(encoding="utf-8") if target != page else html
            if not re.search(r'\bid="%s"' % re.escape(fragment), text):
                broken.append(href)
    return broken


def _check_in_browser(page: Path, html: str, profile_dir: Path) -> dict:
    """Run CHECK_SCRIPT on the page in Chromium; return what it reported."""
    # The same page with the check appended, beside it so that relative paths still resolve.
    probe = page.with_name(f".check-{page.stem}.html")
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
    try:
        dom = _run_browser(["--dump-dom", probe.as_uri()], profile_dir)
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<div id="__book_check__"[^>]*>(.*?)</div>', dom.stdout, re.S)
    assert match, (f"{page.stem}: the in-page check did not report (chromium exit {dom.returncode}):\n"
                   f"{dom.stderr[-2000:]}")
    return json.loads(html_lib.unescape(match.group(1)))


def _run_browser(args: list[str], profile_dir: Path) -> subprocess.CompletedProcess:
    """Chromium with the measured flags, killed with its whole process group on timeout."""
    cmd = ["timeout", "-k", "5", str(BROWSER_TIMEOUT), CHROMIUM, *CHROMIUM_FLAGS,
           f"--user-data-dir={profile_dir}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT + 15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {' '.join(args)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG header; fails the test if the file is not a PNG."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs it (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def html_dir() -> Path:
    return build(execute=False, root=ROOT)


@pytest.fixture()
def profile_dir():
    path = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("stem", PAGES)
def test_page_renders(stem: str, chromium: str, html_dir: Path, profile_dir: Path) -> None:
    page = html_dir / "book" / f"{stem}.html"
    assert page.is_file(), f"{page} was not built"
    html = page.read_text(encoding="utf-8")

    # Every local image the page refers to exists and is a PNG (or at least a non-empty file).
    for src in re.findall(r'<img[^>]*\bsrc="([^"]+)"', html):
        if "://" in src or src.startswith("data:"):
            continue
        file = (page.parent / src.split("?")[0]).resolve()
        assert file.is_file() and file.stat().st_size > 0, f"{stem}: image {src} missing from the build"
        if file.suffix.lower() == ".png":
            width, height = _png_size(file)
            assert width > 0 and height > 0, f"{stem}: image {src} is empty"

    broken_links = _internal_links(page, html)
    assert not broken_links, f"{stem}: internal links to nothing: {broken_links}"

    result = _check_in_browser(page, html, profile_dir)
    assert result["error"] is None, f"{stem}: MathJax failed to start: {result['error']}"

    broken = [img["src"] for img in result["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"{stem}: images that did not load in the browser: {broken}"

    if result["math"]:
        assert result["mathjax"], f"{stem}: the page has {result['math']} formulas but MathJax did not load"
        assert result["mjx"] >= result["math"], (
            f"{stem}: {result['math']} formulas but only {result['mjx']} typeset by MathJax")
    assert result["merror"] == 0, f"{stem}: {result['merror']} formulas rendered as MathJax errors"
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(result["text"])})
    assert not raw, f"{stem}: raw TeX visible in the rendered text: {raw}"

    assert not result["errors"], f"{stem}: error output on the page: {result['errors']}"
    cells = _code_cells(stem)
    meant = [c for c in cells if not HIDDEN_TAGS & set(c.metadata.get("tags", []))]
    assert result["visibleCode"] == len(meant), (
        f"{stem}: {result['visibleCode']} code cells show their code, {len(meant)} are meant to "
        f"(of {result['codeCells']} on the page)")

    # A screenshot, for people to look at and as a last check that the page paints.
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"{stem}.png"
    shot.unlink(missing_ok=True)
    run = _run_browser([f"--screenshot={shot}", "--window-size=1280,1900", page.as_uri()], profile_dir)
    assert shot.is_file(), f"{stem}: no screenshot (chromium exit {run.returncode}):\n{run.stderr[-2000:]}"
    assert _png_size(shot) == (1280, 1900), f"{stem}: screenshot has size {_png_size(shot)}"
    assert shot.stat().st_size > 20_000, f"{stem}: screenshot is only {shot.stat().st_size} bytes: a blank page?"

    pixels = matplotlib.image.imread(shot)
    assert pixels[..., :3].std() > 0.02, f"{stem}: the screenshot is (nearly) uniform: a blank page?"


@pytest.mark.parametrize("stem", [s for s in PAGES if (ROOT / "book" / f"{s}.ipynb").is_file()])
def test_code_is_collapsed_unless_it_is_the_lesson(stem: str) -> None:
    """Every code cell is hidden (or removed), or tagged as meant to be read: `parameters`, `show-input`."""
    for cell in _code_cells(stem):
        tags = set(cell.metadata.get("tags", []))
        assert tags & (HIDDEN_TAGS | SHOWN_TAGS), (
            f"{stem}: a code cell neither hidden nor marked to show: {cell.source.splitlines()[:2]}")
    shown = [c for c in _code_cells(stem) if "show-input" in c.metadata.get("tags", [])]
    assert len(shown) <= 2, f"{stem}: {len(shown)} cells show their code: the page reads like a lab notebook"


@pytest.mark.slow
def test_in_page_check_sees_error_output_and_visible_code(chromium: str, tmp_path: Path, profile_dir: Path) -> None:
    page = tmp_path / "page.html"
    html = ("<html><body><article>"
            '<div class="cell"><div class="cell_input">shown = 1</div></div>'
            '<div class="cell"><details><summary>Show code</summary><div class="cell_input">hidden = 1</div>'
            "</details></div>"
            '<div class="output traceback">ZeroDivisionError: division by zero</div>'
            "<p>$\\alpha$ left raw</p></article></body></html>")
    page.write_text(html, encoding="utf-8")
    result = _check_in_browser(page, html, profile_dir)
    assert result["codeCells"] == 2 and result["visibleCode"] == 1
    assert result["errors"] == ["ZeroDivisionError: division by zero"]
    assert RAW_TEX.search(result["text"])


def test_internal_link_check_finds_missing_pages_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "b.html").write_text('<h1 id="top">B</h1>', encoding="utf-8")
    page = tmp_path / "a.html"
    html = ('<a href="b.html">ok</a><a href="b.html#top">ok</a><a href="#here">ok</a><p id="here"></p>'
            '<a href="c.html">missing</a><a href="b.html#nowhere">no anchor</a><a href="https://x.org/">ext</a>')
    assert _internal_links(page, html) == ["c.html", "b.html#nowhere"]


def _executed(stamp: str, address: str, uuid: str) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it, with this run's timestamps, object address and Styler id."""
    v4 = nbformat.v4
    timing = {"papermill": {"duration": 0.01, "start_time": stamp, "end_time": stamp, "status": "completed",
                            "exception": False},
              "execution": {"iopub.execute_input": stamp, "shell.execute_reply": stamp}}
    styler_html = (f'<style type="text/css">\n#T_{uuid}_row0_col0 {{ color: red; }}\n</style>\n'
                   f'<table id="T_{uuid}">\n<tr><td id="T_{uuid}_row0_col0" class="data row0 col0">5.2350</td></tr>\n</table>\n')
    nb = v4.new_notebook(cells=[
        v4.new_markdown_cell("# A chapter", metadata=dict(timing)),
        v4.new_code_cell('profile = "book"', execution_count=1, metadata={**timing, "tags": ["parameters"]}),
        v4.new_code_cell("table.style", execution_count=2, metadata=dict(timing), outputs=[
            v4.new_output("execute_result", execution_count=2, data={
                "text/html": styler_html, "text/plain": f"<pandas.io.formats.style.Styler at {address}>"}),
        ]),
        v4.new_code_cell("print(object())", execution_count=3, metadata=dict(timing), outputs=[
            v4.new_output("execute_result", execution_count=3, data={"text/plain": f"<object object at {address}>"}),
            v4.new_output("stream", name="stdout", text="done\n"),
        ]),
    ])
    nb.metadata["papermill"] = {"duration": 11.7, "start_time": stamp, "end_time": stamp, "version": "2.6.0",
                                "parameters": {"profile": "book"}, "input_path": "notebooks/x.md",
                                "output_path": "book/x.ipynb", "environment_variables": {}, "exception": None}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_normalise_notebook_makes_two_executions_write_the_same_file():
    a = normalise_notebook(_executed("2026-11-26T08:52:28.484047", "0x7f7b6b00a510", "2f5cd"))
    b = normalise_notebook(_executed("2026-12-02T10:00:00.000001", "0x7ff0622eb490", "404c3"))
    assert nbformat.writes(a) == nbformat.writes(b)
    nbformat.validate(a)

    text = nbformat.writes(a)
    for volatile in ("2026-", "0x7f", "2f5cd", "duration", "widgets", "iopub"):
        assert volatile not in text, f"{volatile!r} survived normalisation"
    # What the book shows and what says how the chapter ran are kept.
    assert a.metadata["papermill"] == {"parameters": {"profile": "book"}, "input_path": "notebooks/x.md",
                                       "output_path": "book/x.ipynb"}
    assert a.cells[1].metadata == {"tags": ["parameters"]}
    styler = a.cells[2].outputs[0]["data"]
    assert set(styler) == {"text/html"}  # the repr with the address goes where HTML stands in for it
    table_id = re.search(r'<table id="T_(\w+)"', styler["text/html"]).group(1)
    assert styler["text/html"].count(f"T_{table_id}") == 3  # the CSS rule still names its cell
    assert a.cells[3].outputs[0]["data"]["text/plain"] == "<object object at 0x0>"  # no other representation
    assert a.cells[3].outputs[1]["text"] == "done\n" and [c.execution_count for c in a.cells[1:]] == [1, 2, 3]
    assert len({c.id for c in a.cells}) == len(a.cells)


def test_normalise_notebook_gives_different_tables_different_ids():
    nb = _executed("2026-11-26T08:52:28", "0x7f7b6b00a510", "2f5cd")
    other = nbformat.v4.new_code_cell("t.style", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": '<table id="T_aaaaa">\n<td id="T_aaaaa_row0_col0">1.0</td></table>'})])
    nb.cells.append(other)
    normalise_notebook(nb)
    ids = [re.search(r'<table id="T_(\w+)"', c.outputs[0]["data"]["text/html"]).group(1)
           for c in (nb.cells[2], nb.cells[4])]
    assert ids[0] != ids[1]
