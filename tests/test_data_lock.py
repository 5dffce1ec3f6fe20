"""The corpus build runs under a file lock: two workers on one empty cache cannot race."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scaling_lib import data
from scaling_lib.data import CORPORA, DataError, _check_cache, build_lock, build_lock_path

REPO = Path(__file__).resolve().parents[1]

# A worker: load_corpus('tiny') on the cache it is given, noting in builds.log each build it does.
WORKER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from scaling_lib import data

    log = Path(os.environ["SCALING_LIB_CACHE"]) / "builds.log"
    real_build = data._build

    def noted_build(*a, **kw):
        with open(log, "a") as f:
            f.write(f"start {os.getpid()} {time.time()}\\n")
        real_build(*a, **kw)
        with open(log, "a") as f:
            f.write(f"end {os.getpid()} {time.time()}\\n")

    data._build = noted_build
    c = data.load_corpus("tiny", "bpe4096")
    print(json.dumps(dict(root=str(c.root), files=c.manifest["files"])))
''')


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, SCALING_LIB_CACHE=str(cache), OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_two_processes_on_an_empty_cache_build_the_corpus_once(tmp_path, tiny_corpus):
    cache = tmp_path / "cache"
    cache.mkdir()
    # the raw packages only (no network in this test, and a shorter build); no corpus at all
    for src in (*CORPORA["tiny"]["train"], *CORPORA["tiny"]["other"]):
        shutil.copytree(tiny_corpus.root.parents[2] / "raw" / src, cache / "raw" / src, symlinks=True)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=_env(cache), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    loaded = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    # one build, by one of them; the other waited for it and loaded what it built
    log = (cache / "builds.log").read_text().split()
    assert log[0::3] == ["start", "end"], log
    assert loaded[0] == loaded[1]
    root = Path(loaded[0]["root"])
    assert root == cache / "corpora" / "tiny" / "bpe4096"
    assert _check_cache(root, verify=True, spec=CORPORA["tiny"]) is None
    # complete, and the same corpus as the real cache's
    assert {s: f["sha256"] for s, f in loaded[0]["files"].items()} == \
        {s: f["sha256"] for s, f in tiny_corpus.manifest["files"].items()}
    leftovers = [p.name for p in root.parent.iterdir() if p.name not in ("bpe4096", "text")]
    assert leftovers == [], leftovers  # no temporary build directory left beside it


def test_a_build_waits_for_the_lock_and_gives_up_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from scaling_lib.data import build_lock\n"
         "with build_lock():\n    print('held', flush=True); sys.stdin.readline()"],
        cwd=REPO, env=_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert build_lock_path() == tmp_path / "corpora" / ".build.lock"
        t = time.monotonic()
        with pytest.raises(DataError, match="another process building a corpus"):
            with build_lock(timeout=0.5):
                pytest.fail("acquired a lock that another process holds")
        assert time.monotonic() - t >= 0.4
        # load_corpus with build waits on the same lock
        monkeypatch.setattr(data, "BUILD_LOCK_TIMEOUT_S", 0.3)
        monkeypatch.setattr(data, "_build", lambda *a, **kw: pytest.fail("built while another process held the lock"))
        with pytest.raises(DataError, match="another process building"):
            data.load_corpus("tiny", "bpe4096")
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    with build_lock(timeout=5):  # released by the holder: free again
        pass


def test_a_holder_that_dies_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os; from scaling_lib.data import build_lock\n"
         "with build_lock():\n    os.kill(os.getpid(), 9)"], cwd=REPO, env=_env(tmp_path))
    assert holder.wait(timeout=60) == -9
    with build_lock(timeout=5):
        pass
